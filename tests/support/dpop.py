"""Build DPoP proofs (RFC 9449 section 4.2) the way a client does, with keys the tests generate."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from jwt_verifier.dpop import access_token_hash, jwk_thumbprint
from jwt_verifier.jose import b64url_encode
from tests.support.tokens import overridden

ProofKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _uint(value: int, size: int | None = None) -> str:
    return b64url_encode(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


def proof_jwk(key: ProofKey) -> dict[str, str]:
    """Return the public JWK of a proof key."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _uint(numbers.x, 32), "y": _uint(numbers.y, 32)}
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _uint(public.n), "e": _uint(public.e)}
    raw = key.public_key().public_bytes_raw()
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def private_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Return an RSA JWK with its private members: what a careless client might send."""
    numbers = key.private_numbers()
    return {**proof_jwk(key), "d": _uint(numbers.d), "p": _uint(numbers.p), "q": _uint(numbers.q)}


def thumbprint(key: ProofKey) -> str:
    """Return the `jkt` a token bound to `key` carries in `cnf`."""
    return jwk_thumbprint(proof_jwk(key))


def _json(part: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(part, separators=(",", ":")).encode())


def _sign(key: ProofKey, alg: str, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        if alg == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
            return key.sign(data, pss, hashes.SHA256())
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def make_proof(
    key: ProofKey,
    method: str,
    url: str,
    access_token: str | None = None,
    *,
    alg: str | None = None,
    header: dict[str, Any] | None = None,
    signer: ProofKey | None = None,
    **overrides: Any,
) -> str:
    """Return a proof of `method url` signed by `key` (or `signer`); an override of None removes that claim."""
    if alg is None:
        alg = (
            "ES256"
            if isinstance(key, ec.EllipticCurvePrivateKey)
            else "RS256"
            if isinstance(key, rsa.RSAPrivateKey)
            else "EdDSA"
        )
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg, "jwk": proof_jwk(key)}
    head = overridden(head, header or {})
    claims: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    claims = overridden(claims, overrides)
    signing_input = f"{_json(head)}.{_json(claims)}"
    if alg == "none":
        return f"{signing_input}."
    if alg == "HS256":
        mac = hmac.new(b"a shared secret", signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url_encode(mac)}"
    return f"{signing_input}.{b64url_encode(_sign(signer or key, alg, signing_input.encode()))}"
