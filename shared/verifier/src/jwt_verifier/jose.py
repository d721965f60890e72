"""JOSE helpers: base64url (RFC 7515 section 2), RSA JWKs (RFC 7517/7518) and thumbprints (RFC 7638)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TypedDict

from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.errors import JwkError

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
