"""The error hierarchy, now part of the verifier library: `jwt_verifier.errors` (kept for the issuer's imports)."""

from __future__ import annotations

from jwt_verifier.errors import (
    REALM,
    RETRY_AFTER_SECONDS,
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
    bearer_challenge,
    error_response,
    init_app,
)

__all__ = [
    "REALM",
    "RETRY_AFTER_SECONDS",
    "ApiError",
    "BearerError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "KeysUnavailable",
    "MissingToken",
    "TokenExpired",
    "UnknownKey",
    "VerificationUnavailable",
    "bearer_challenge",
    "error_response",
    "init_app",
]
