"""The token verifier, now part of the verifier library: `jwt_verifier.verifier` (kept for the issuer's imports)."""

from __future__ import annotations

from jwt_verifier.verifier import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_LEEWAY,
    DEFAULT_MAX_TOKEN_BYTES,
    InvalidToken,
    KeySource,
    KeysUnavailable,
    TokenExpired,
    TokenVerifier,
    UnknownKey,
    VerificationUnavailable,
    Verifier,
    strict_json,
)

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_TOKEN_BYTES",
    "InvalidToken",
    "KeySource",
    "KeysUnavailable",
    "TokenExpired",
    "TokenVerifier",
    "UnknownKey",
    "VerificationUnavailable",
    "Verifier",
    "strict_json",
]
