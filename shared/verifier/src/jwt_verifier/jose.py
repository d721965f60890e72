"""JOSE helpers: base64url (RFC 7515 section 2), RSA JWKs (RFC 7517/7518) and thumbprints (RFC 7638).

`parse_compact` and `verify_rs256` give the verifier's strict JWS compact-serialization parser
and its RS256 check to other readers of JWTs (the issuer's ID tokens, client assertions and
end-session hints), so that a service has one parser, whatever JWT it reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypedDict

from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.errors import InvalidToken, JwkError, Reason
from jwt_verifier.verifier import _MALFORMED, _header, _rs256_valid, _segment, strict_json

ALGORITHM = "RS256"
MIN_RSA_BITS = 2048
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class RsaPublicJwk(TypedDict):
    """The public members of an RSA signing key as published in a JWKS."""

    kty: str
    n: str
    e: str
    kid: str
    alg: str
    use: str


def b64url_encode(data: bytes) -> str:
    """Encode bytes as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, refusing any character outside its alphabet."""
    raw = text.encode("ascii")
    if raw.translate(None, _B64URL_ALPHABET):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def _int_to_b64url(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def _b64url_to_int(text: object, member: str) -> int:
    if not isinstance(text, str) or not text:
        raise JwkError(f"member {member!r} must be a non-empty string")
    try:
        return int.from_bytes(b64url_decode(text), "big")
    except ValueError as exc:
        raise JwkError(f"member {member!r} is not base64url") from exc


def rsa_thumbprint(n: str, e: str) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of an RSA key, base64url encoded."""
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(public_key: rsa.RSAPublicKey) -> RsaPublicJwk:
    """Return the public JWK of an RSA key, its `kid` being the RFC 7638 thumbprint."""
    numbers = public_key.public_numbers()
    n, e = _int_to_b64url(numbers.n), _int_to_b64url(numbers.e)
    return {"kty": "RSA", "n": n, "e": e, "kid": rsa_thumbprint(n, e), "alg": ALGORITHM, "use": "sig"}


def load_verification_key(jwk: object) -> tuple[str, rsa.RSAPublicKey]:
    """Return (kid, key) for a JWK fit to verify RS256 signatures, or raise JwkError.

    Only RSA public keys of at least 2048 bits with a `kid` are accepted; a key that
    declares another `alg` or a `use` other than `sig` is refused rather than guessed at.
    """
    if not isinstance(jwk, dict):
        raise JwkError("a JWK must be a JSON object")
    if jwk.get("kty") != "RSA":
        raise JwkError("only RSA keys are accepted")
    if jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise JwkError(f"key algorithm must be {ALGORITHM}")
    if jwk.get("use", "sig") != "sig":
        raise JwkError("key use must be 'sig'")
    if "d" in jwk or "p" in jwk:
        raise JwkError("a private key was published; refusing it")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwkError("key has no 'kid'")
    n = _b64url_to_int(jwk.get("n"), "n")
    e = _b64url_to_int(jwk.get("e"), "e")
    if n.bit_length() < MIN_RSA_BITS:
        raise JwkError(f"RSA modulus is shorter than {MIN_RSA_BITS} bits")
    try:
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise JwkError("not a valid RSA public key") from exc
    return kid, key


@dataclass(frozen=True)
class CompactJws:
    """A JWS compact serialization, decoded but not verified: nothing in it is trusted yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _split(token: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Return (header, payload, signing input, signature) segments, split as the verifier does."""
    # A compact JWS is base64url and dots only; a surrogate would not even encode.
    if not token.isascii():
        raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
    signing_input, _, signature = token.encode("ascii").rpartition(b".")
    segments = signing_input.split(b".")
    if len(segments) != 2:
        raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
    return segments[0], segments[1], signing_input, signature


def parse_compact(token: str) -> CompactJws:
    """Decode a compact JWS whose payload is a JSON object, by the verifier's rules; raise InvalidToken.

    The rules are the verifier's (`jwt_verifier.verifier`): ASCII, three canonical base64url
    segments without padding, strict JSON objects (no duplicate members, no NaN), and no JWS
    extension (`crit`, `b64`). The header's `alg`, `typ` and `kid` are the caller's to check.
    """
    header_segment, payload_segment, signing_input, signature_segment = _split(token)
    header = _header(header_segment)
    payload, signature = _segment(payload_segment), _segment(signature_segment)
    try:
        claims = strict_json(payload)
    except (ValueError, RecursionError) as exc:
        raise InvalidToken("the token is malformed or its claims are invalid", reason=Reason.MALFORMED) from exc
    if not isinstance(claims, dict):
        raise InvalidToken("the token is malformed or its claims are invalid", reason=Reason.MALFORMED)
    return CompactJws(header, claims, signing_input, signature)


def verify_rs256(jws: CompactJws, key: rsa.RSAPublicKey) -> None:
    """Check an RS256 signature (RSASSA-PKCS1-v1_5 with SHA-256) with `key`, or raise InvalidToken.

    The check is the verifier's (`jwt_verifier.verifier._rs256_valid`, RFC 8017 section 8.2.2).
    """
    if not _rs256_valid(key, jws.signature, jws.signing_input):
        raise InvalidToken("the token's signature is invalid", reason=Reason.BAD_SIGNATURE)
