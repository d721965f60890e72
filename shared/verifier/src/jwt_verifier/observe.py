"""Hooks an application installs to count what the verifier does (metrics); they do nothing by default.

The library stays free of any metrics dependency: `install()` an `Observer` (shared.metrics
installs a Prometheus one) and the verifier reports each verification, cache lookup and JWKS
fetch to it. Every value it passes comes from a fixed, small set: never a token, kid or claim.
"""

from __future__ import annotations

from typing import Protocol

from jwt_verifier.errors import ApiError, InvalidToken, TokenExpired, UnknownKey, VerificationUnavailable

# The reasons a token is refused, as `reason_of` names them.
REASONS = (
    "expired",
    "not_yet_valid",
    "bad_signature",
    "wrong_audience",
    "wrong_issuer",
    "unknown_key",
    "bad_header",
    "bad_claims",
    "too_large",
    "malformed",
    "inactive",
    "keys_unavailable",
    "invalid",
)

# Description fragments of InvalidToken -> reason, first match wins (see verifier.py's messages).
_FRAGMENTS = (
    ("signature", "bad_signature"),
    ("not meant for this API", "wrong_audience"),
    ("trusted issuer", "wrong_issuer"),
    ("not valid yet", "not_yet_valid"),
    ("larger than", "too_large"),
    ("malformed", "malformed"),
    ("well-formed", "malformed"),
    ("empty", "malformed"),
    ("algorithm", "bad_header"),
    ("token type", "bad_header"),
    ("'kid' header", "bad_header"),
    ("JWS extension", "bad_header"),
    ("claim", "bad_claims"),
    ("lifetime", "bad_claims"),
    ("not active", "inactive"),
)


class Observer(Protocol):
    """What the verifier reports; every argument is one of a few fixed words."""

    def verification(self, result: str, reason: str) -> None:
        """Count one request's token: result `valid`, `invalid` or `unavailable`, and why."""

    def cache(self, result: str) -> None:
        """Count one verified-token cache lookup: `hit` or `miss`."""

    def jwks_fetch(self, result: str, cause: str, keys: int) -> None:
        """Count one JWKS fetch (`ok`/`error`; cause `initial`, `refresh` or `unknown_kid`) and the keys held after it."""

    def jwks_age(self, seconds: float) -> None:
        """Report the age of the key set held (seconds since it was fetched)."""


class NullObserver:
    """The default: counts nothing."""

    def verification(self, result: str, reason: str) -> None:
        """Do nothing."""

    def cache(self, result: str) -> None:
        """Do nothing."""

    def jwks_fetch(self, result: str, cause: str, keys: int) -> None:
        """Do nothing."""

    def jwks_age(self, seconds: float) -> None:
        """Do nothing."""


_observer: Observer = NullObserver()


def install(observer: Observer) -> None:
    """Report to `observer` from now on (one per process; the last installed wins)."""
    global _observer
    _observer = observer


def current() -> Observer:
    """Return the observer in use."""
    return _observer


def reason_of(exc: ApiError) -> str:
    """Return the fixed word for why a token was refused (never the token or its claims)."""
    if isinstance(exc, TokenExpired):
        return "expired"
    if isinstance(exc, UnknownKey):
        return "unknown_key"
    if isinstance(exc, VerificationUnavailable):
        return "keys_unavailable"
    if isinstance(exc, InvalidToken):
        for fragment, reason in _FRAGMENTS:
            if fragment in exc.description:
                return reason
    return "invalid"
