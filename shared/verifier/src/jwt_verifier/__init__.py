"""Verify OAuth 2.0 JWT access tokens (RFC 9068) with keys from the issuer's JWKS.

The core imports no web framework:

- `VerifierConfig`: issuer, audience, RFC 9728 resource identifier, JWKS and verification knobs;
  `VerifierConfig.from_env(prefix)` reads them all from environment variables (`jwt_verifier.env`).
- `Verifier` (a `TokenVerifier`), `JwksClient`, `ResourceProtector`: verify a token, hold the
  issuer's keys, check the token and scope a request carries, and (`StepUp`, RFC 9470) how
  strong and how recent the login behind it is.
- The errors (`jwt_verifier.errors`), all under `JwtVerifierError`: `InvalidToken` (and
  `TokenExpired`, `UnknownKey`), `MissingToken`, `InsufficientScope`,
  `InsufficientUserAuthentication`, `InvalidRequest`,
  `VerificationUnavailable` (and `KeysUnavailable`), `JwkError`, `ConfigError`; each carries a stable `reason`
  (`Reason`), its OAuth error code, HTTP status and `WWW-Authenticate` challenge.

The integrations render those errors in their framework: `jwt_verifier.flask` (`BearerAuth`,
`readiness`) and `jwt_verifier.fastapi` (`BearerAuth`, `require_scope`, `readiness`).
"""

from __future__ import annotations

from jwt_verifier.config import VerifierConfig
from jwt_verifier.errors import (
    BearerError,
    ConfigError,
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidRequest,
    InvalidToken,
    JwkError,
    JwtVerifierError,
    KeysUnavailable,
    MissingToken,
    Reason,
    TokenExpired,
    UnknownKey,
    VerificationUnavailable,
)
from jwt_verifier.jwks import JwksClient
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.rfc9728 import metadata_url
from jwt_verifier.stepup import StepUp
from jwt_verifier.verifier import TokenVerifier, Verifier

__version__ = "0.3.3"

__all__ = [
    "BearerError",
    "ConfigError",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidRequest",
    "InvalidToken",
    "JwkError",
    "JwksClient",
    "JwtVerifierError",
    "KeysUnavailable",
    "MissingToken",
    "Reason",
    "ResourceProtector",
    "StepUp",
    "TokenExpired",
    "TokenVerifier",
    "UnknownKey",
    "VerificationUnavailable",
    "Verifier",
    "VerifierConfig",
    "__version__",
    "metadata_url",
]
