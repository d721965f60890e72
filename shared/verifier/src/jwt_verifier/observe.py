"""Hooks an application installs to count what the verifier does (metrics); they do nothing by default.

The library stays free of any metrics dependency: `install()` an `Observer` (shared.metrics
installs a Prometheus one) and the verifier reports each verification, cache lookup and JWKS
fetch to it. Every value it passes comes from a fixed, small set: never a token, kid or claim;
a refusal is counted under its error's `reason`, never a word read from its message.
"""

from __future__ import annotations

from typing import Protocol

from jwt_verifier.errors import Reason

# The reasons a verification is counted under: the `reason` of the token's refusal (a request
# without a token, or one refused for its scope, is not a verification).
_NOT_VERIFICATIONS = {
    Reason.MISSING_TOKEN,
    Reason.INVALID_REQUEST,
    Reason.INSUFFICIENT_SCOPE,
    Reason.JWKS_FETCH_FAILED,
    Reason.UNUSABLE_KEY,
}
REASONS = tuple(reason.value for reason in Reason if reason not in _NOT_VERIFICATIONS)


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
