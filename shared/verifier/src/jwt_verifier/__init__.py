"""Verify OAuth 2.0 JWT access tokens (RFC 9068) with keys from the issuer's JWKS, and protect Flask APIs with them.

The public API:

- `VerifierConfig`: issuer, audience, RFC 9728 resource identifier, JWKS and verification knobs.
- `BearerAuth`: the Flask extension (`init_app(app)`, `require(scope=...)` putting the claims
  on `flask.g.claims`, RFC 9728 metadata at `/.well-known/oauth-protected-resource`), and
  `readiness`, a view for a readiness probe (503 with `Retry-After` until keys are held).
- `Verifier`, `JwksClient`, `ResourceProtector`, `TokenVerifier`: the parts, for use without Flask.
- The errors (`jwt_verifier.errors`): `InvalidToken` (and `TokenExpired`, `UnknownKey`),
  `MissingToken`, `InsufficientScope`, `InvalidRequest`, `VerificationUnavailable`
  (and `KeysUnavailable`); each carries its HTTP status and challenge.
"""

from __future__ import annotations

from jwt_verifier.config import VerifierConfig
from jwt_verifier.errors import (
    ApiError,
    BearerError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    KeysUnavailable,
    MissingToken,
    TokenExpired,
    UnknownKey,
    VerificationUnavailable,
)
from jwt_verifier.extension import BearerAuth, Protection, protection, readiness
from jwt_verifier.jwks import JwksClient
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.rfc9728 import metadata_url
from jwt_verifier.verifier import TokenVerifier, Verifier

__all__ = [
    "ApiError",
    "BearerAuth",
    "BearerError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "JwksClient",
    "KeysUnavailable",
    "MissingToken",
    "Protection",
    "ResourceProtector",
    "TokenExpired",
    "TokenVerifier",
    "UnknownKey",
    "VerificationUnavailable",
    "Verifier",
    "VerifierConfig",
    "metadata_url",
    "protection",
    "readiness",
]
