"""DPoP proofs (RFC 9449): checking the proof a client sends with a DPoP-bound access token.

`verify_proof` applies every check of section 4.3, in its order, and the two of section 7.1
that tie the proof to the access token (`cnf.jkt` against the proof key's RFC 7638 thumbprint
first of all, as it is cheap and spares a stranger's key its signature check; `ath` after the
claims), then remembers the proof in a replay store (section 11.1) so that no worker of the
API accepts it twice. `Nonces` are the server nonces of section 9. The DPoP scheme at a
protected resource (which token goes with which proof, bearer use) is `jwt_verifier.dpop_scheme`.

Framework-free; the only cryptography is `cryptography`'s. Every refusal is an
`InvalidDPoPProof` (or `UseDPoPNonce`, `DPoPInvalidToken`) with a fixed message and a reason.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from jwt_verifier.errors import InvalidDPoPProof, JwtVerifierError, Reason, UseDPoPNonce
from jwt_verifier.jose import MIN_RSA_BITS, b64url_decode, b64url_encode
from jwt_verifier.replay import ReplayStore, replay_key

__all__ = [
    "DPOP_TYP",
    "SUPPORTED_ALGORITHMS",
    "Nonces",
    "Proof",
    "access_token_hash",
    "jwk_thumbprint",
    "normalize_htu",
    "verify_proof",
]

DPOP_TYP = "dpop+jwt"
SUPPORTED_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
MAX_PROOF_BYTES = 8192
MAX_JTI_CHARS = 256
# Members of a private JWK (RFC 7518 section 6): a proof carrying any of them is refused.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# A proof key's RSA bounds, the issuer's for client keys: a larger exponent or modulus makes each
# signature check many times dearer (a 3070-bit e about 60 times) for whoever sends the proof.
RSA_EXPONENT = b"\x01\x00\x01"  # 65537
MAX_RSA_BITS = 4096

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class Proof:
    """A proof that passed every check: its `jti`, normalized `htu` and key thumbprint (`jkt`)."""

    jti: str
    htu: str
    jkt: str
    claims: dict[str, Any]


def access_token_hash(access_token: str) -> str:
    """Return the `ath` of an access token: base64url(SHA-256(ASCII token)) (section 4.2)."""
    return b64url_encode(hashlib.sha256(access_token.encode()).digest())


# The members of each key type RFC 7638 section 3.2 hashes, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a public JWK, base64url encoded (RFC 9449 section 6.1)."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError("unsupported key type")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), ensure_ascii=True)
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def _default_port(scheme: str) -> str:
    return {"http": "80", "https": "443"}.get(scheme, "")


def _normalize_path(path: str) -> str:
    # RFC 3986 section 6.2.2.2: uppercase percent-encodings, unreserved characters decoded.
    out: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char == "%" and i + 2 < len(path) and all(c in "0123456789abcdefABCDEF" for c in path[i + 1 : i + 3]):
            decoded = unquote(path[i : i + 3])
            unreserved = decoded.isascii() and (decoded.isalnum() or decoded in "-._~")
            out.append(decoded if unreserved else path[i : i + 3].upper())
            i += 3
        else:
            out.append(char)
            i += 1
    # Section 6.2.2.3: remove dot-segments (section 5.2.4).
    segments: list[str] = []
    for segment in "".join(out).split("/"):
        if segment == "..":
            if len(segments) > 1:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    normalized = "/".join(segments)
    if path.endswith(("/.", "/..")):
        normalized += "/"
    return normalized or "/"


@functools.lru_cache(maxsize=256)
def normalize_htu(url: str) -> str:
    """Return `url` without query and fragment, normalized (RFC 9449 section 4.3; RFC 3986 sections 6.2.2, 6.2.3).

    Scheme and host are lowercased, a default port dropped, an empty path made "/", percent-
    encodings uppercased (unreserved ones decoded) and dot-segments removed. Recent answers are
    kept: an API sees the same few URLs again and again.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # raises ValueError for a port out of range
    netloc = host if port is None or str(port) == _default_port(scheme) else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        raise ValueError("a URL with user information")
    return urlunsplit((scheme, netloc, _normalize_path(parts.path), "", ""))


class Nonces:
    """Server nonces (RFC 9449 section 9) every worker of an API can check: a time and its HMAC.

    A nonce names the period it was made in; it is accepted in that period and the next, so a
    client's nonce stays good for at least `lifetime` seconds. The secret is shared by the
    API's workers (configuration), never sent.
    """

    def __init__(self, secret: str, lifetime: int, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a nonce secret is needed")
        self._key = hashlib.sha256(b"jwt-verifier dpop nonce\x00" + secret.encode()).digest()
        self.lifetime = max(1, lifetime)
        self.clock = clock

    def _mac(self, period: int) -> str:
        return b64url_encode(hmac.new(self._key, str(period).encode(), hashlib.sha256).digest()[:18])

    def current(self) -> str:
        """Return the nonce of the current period."""
        period = int(self.clock()) // self.lifetime
        return f"{period}.{self._mac(period)}"

    def valid(self, nonce: object) -> bool:
        """Say whether `nonce` is one of ours, of this period or the last."""
        if not isinstance(nonce, str) or len(nonce) > 64 or not nonce.isascii():
            return False
        text, _, mac = nonce.partition(".")
        if not text.isdigit() or len(text) > 15:
            return False
        period = int(text)
        now_period = int(self.clock()) // self.lifetime
        return now_period - 1 <= period <= now_period and hmac.compare_digest(mac, self._mac(period))


def _int_member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"member {name} missing")
    raw = b64url_decode(value)
    if b64url_encode(raw) != value:
        raise ValueError(f"member {name} is not canonical base64url")
    return raw


def _load_key(alg: str, jwk: Mapping[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if alg == "ES256":
        x, y = _int_member(jwk, "x"), _int_member(jwk, "y")
        if kty != "EC" or jwk.get("crv") != "P-256" or len(x) != 32 or len(y) != 32:
            raise ValueError("ES256 needs a P-256 key")
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    if alg in ("RS256", "PS256"):
        n, e = _int_member(jwk, "n"), _int_member(jwk, "e")
        if kty != "RSA" or n[0] == 0 or e != RSA_EXPONENT or not MIN_RSA_BITS <= len(n) * 8 <= MAX_RSA_BITS:
            raise ValueError(f"{alg} needs an RSA key of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits with e = 65537")
        return rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    if alg == "EdDSA":
        x = _int_member(jwk, "x")
        if kty != "OKP" or jwk.get("crv") != "Ed25519" or len(x) != 32:
            raise ValueError("EdDSA needs an Ed25519 key")
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    raise ValueError("unsupported algorithm")


_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(_SHA256)
_PADDINGS: dict[str, padding.AsymmetricPadding] = {
    "RS256": padding.PKCS1v15(),
    "PS256": padding.PSS(mgf=padding.MGF1(_SHA256), salt_length=padding.PSS.DIGEST_LENGTH),
}


def _verify_signature(alg: str, key: PublicKey, signature: bytes, signing_input: bytes) -> None:
    if alg == "ES256":
        if len(signature) != 64:
            raise InvalidSignature
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        cast(ec.EllipticCurvePublicKey, key).verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
    elif alg in _PADDINGS:
        cast(rsa.RSAPublicKey, key).verify(signature, signing_input, _PADDINGS[alg], _SHA256)
    else:
        cast(ed25519.Ed25519PublicKey, key).verify(signature, signing_input)


class _HeaderError(JwtVerifierError):
    """A proof's header is refused; the message is one of our fixed texts. Never leaves this module."""


_NOT_ACCEPTED = "the DPoP proof's algorithm is not accepted"


def _header_key(segment: str) -> tuple[str, PublicKey, str]:
    """Return (alg, key, thumbprint) of a proof's header segment, or raise why it is refused (items 2, 4-6)."""
    try:
        header = _json_object(segment)
    except ValueError as exc:  # also json.JSONDecodeError and UnicodeDecodeError
        raise _HeaderError("the DPoP proof is not a well-formed JWT") from exc
    if header.get("typ") != DPOP_TYP:
        raise _HeaderError("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise _HeaderError(_NOT_ACCEPTED)
    if "crit" in header:
        raise _HeaderError("the DPoP proof names critical extensions this API does not understand")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise _HeaderError("the DPoP proof carries no jwk")
    if PRIVATE_MEMBERS & jwk.keys():
        raise _HeaderError("the DPoP proof's jwk holds private key material")
    try:
        return alg, _load_key(alg, jwk), jwk_thumbprint(jwk)
    except ValueError as exc:
        raise _HeaderError("the DPoP proof's jwk is not a usable key for its algorithm") from exc


class _HeaderCache:
    """The checked headers of recent proofs: a client sends the same header (its key) with every proof.

    Parsing it and building its key (which validates a point or a modulus) is most of a proof's
    cost beside its signature; only headers that passed every check are kept.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._headers: OrderedDict[str, tuple[str, PublicKey, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, segment: str) -> tuple[str, PublicKey, str]:
        with self._lock:
            found = self._headers.get(segment)
            if found is not None:
                self._headers.move_to_end(segment)
                return found
        found = _header_key(segment)
        with self._lock:
            self._headers[segment] = found
            if len(self._headers) > self.size:
                self._headers.popitem(last=False)
        return found


_headers = _HeaderCache()


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment).decode("utf-8"))
    except RecursionError as exc:  # JSON nested deeper than the parser goes: refused like any bad JSON
        raise ValueError("JSON nested too deep") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - a parse failure, caught as ValueError
    return value


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None,
    jkt: str | None,
    now: float,
    algs: Sequence[str],
    max_age: int,
    leeway: int,
    replay: ReplayStore,
    nonces: Nonces | None = None,
) -> Proof:
    """Return the checked proof of a request `method url`, or raise why it must be refused.

    `access_token` and `jkt` (the token's `cnf.jkt`) tie the proof to the token it comes with
    (None at a token endpoint, where there is no token yet); `nonces` makes a current server
    nonce required; `replay` remembers the proof until it would be stale anyway.
    """

    def refuse(description: str, reason: Reason = Reason.DPOP_INVALID) -> InvalidDPoPProof:
        return InvalidDPoPProof(description, algs=tuple(algs), reason=reason)

    # Section 4.3 item 2: a well-formed JWT (compact JWS, three segments of base64url JSON).
    if len(proof) > MAX_PROOF_BYTES or not proof.isascii():
        raise refuse("the DPoP proof is not a well-formed JWT")
    segments = proof.split(".")
    if len(segments) != 3:
        raise refuse("the DPoP proof is not a well-formed JWT")
    # Items 4-6: typ, an asymmetric algorithm this API accepts, a public key only.
    try:
        alg, key, thumbprint = _headers.get(segments[0])
    except _HeaderError as exc:
        raise refuse(str(exc)) from exc
    if alg not in algs:
        raise refuse(_NOT_ACCEPTED)
    # Section 7.1, first as it is cheap: a bound token's proof is signed by the key it is bound to.
    if jkt is not None and not _same(jkt, thumbprint):
        raise refuse("the DPoP proof was not signed by the key the access token is bound to", Reason.DPOP_BINDING)
    try:
        claims = _json_object(segments[1])
        signature = b64url_decode(segments[2])
    except ValueError as exc:  # also json.JSONDecodeError and UnicodeDecodeError
        raise refuse("the DPoP proof is not a well-formed JWT") from exc
    # Item 7: the signature, by that key.
    try:
        _verify_signature(alg, key, signature, proof[: proof.rindex(".")].encode("ascii"))
    except InvalidSignature as exc:
        raise refuse("the DPoP proof's signature does not verify") from exc
    # Items 8-11: the claims, the request they were made for, and when.
    jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise refuse("the DPoP proof has no valid jti")
    if not isinstance(htm, str) or not isinstance(htu, str):
        raise refuse("the DPoP proof has no htm or htu")
    if (
        isinstance(iat, bool)
        or not isinstance(iat, (int, float))
        or (isinstance(iat, float) and not math.isfinite(iat))
    ):
        raise refuse("the DPoP proof has no valid iat")
    if htm != method:
        raise refuse("the DPoP proof was made for another HTTP method")
    try:
        proof_htu = normalize_htu(htu)
    except ValueError as exc:
        raise refuse("the DPoP proof's htu is not an http(s) URL") from exc
    try:
        expected_htu = normalize_htu(url)
    except ValueError:
        expected_htu = None  # the API's own URL is unusable: no proof can match it
    if proof_htu != expected_htu:
        raise refuse("the DPoP proof was made for another URL")
    if nonces is not None and not nonces.valid(claims.get("nonce")):
        raise UseDPoPNonce(nonces.current(), algs=tuple(algs))
    if not now - max_age - leeway <= iat <= now + leeway:
        raise refuse("the DPoP proof is too old or from the future")
    # Item 12 (and section 7.1): the proof comes with this token, signed by the key it is bound to.
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not _same(ath, access_token_hash(access_token)):
            raise refuse("the DPoP proof was made for another access token", Reason.DPOP_BINDING)
    # Section 11.1: never accepted twice, by any worker, while it would otherwise pass.
    if not replay.add(replay_key(jti, proof_htu), iat + max_age + leeway, now):
        raise refuse("the DPoP proof was already used", Reason.DPOP_REPLAY)
    return Proof(jti=jti, htu=proof_htu, jkt=thumbprint, claims=claims)
