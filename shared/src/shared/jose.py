"""The JOSE helpers, now part of the verifier library: `jwt_verifier.jose` (kept for the issuer's imports)."""

from __future__ import annotations

from jwt_verifier.jose import (
    ALGORITHM,
    MIN_RSA_BITS,
    JwkError,
    RsaPublicJwk,
    b64url_decode,
    b64url_encode,
    load_verification_key,
    public_jwk,
    rsa_thumbprint,
)

__all__ = [
    "ALGORITHM",
    "MIN_RSA_BITS",
    "JwkError",
    "RsaPublicJwk",
    "b64url_decode",
    "b64url_encode",
    "load_verification_key",
    "public_jwk",
    "rsa_thumbprint",
]
