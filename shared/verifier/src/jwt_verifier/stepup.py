"""Step-up authentication (RFC 9470): what a protected resource demands of the login behind a token.

A route may demand that the user logged in at one of some authentication context classes
(`acr_values`, matched exactly against the token's `acr`) and/or at most `max_age` seconds
ago (the token's `auth_time`). A token that fails either, or lacks the claim it is judged by,
is refused 401 `insufficient_user_authentication` (section 3), the challenge naming every
demand of the route so that the client asks the authorization server for a login meeting
them all (section 4: `acr_values`, `max_age` at its authorization request).

Framework-free: `ResourceProtector.authenticate(..., step_up=StepUp(...))` applies it after
the scope checks (a token without the scope gets 403 `insufficient_scope`: a stronger login
would not help), and both integrations take `acr_values=`/`max_age=` on their route helpers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from jwt_verifier.errors import InsufficientUserAuthentication

__all__ = ["StepUp", "step_up"]


@dataclass(frozen=True)
class StepUp:
    """What a route demands of the login behind a token: one of `acr_values`, and/or an `auth_time` within `max_age`."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    def __post_init__(self) -> None:
        for value in self.acr_values:
            # They go into a quoted-string of the challenge: no quote, backslash, space or control character.
            if not value or not value.isascii() or not value.isprintable() or any(c in value for c in ' "\\'):
                raise ValueError(f"an acr value must be printable ASCII without spaces or quotes: {value!r}")
        if self.max_age is not None and (isinstance(self.max_age, bool) or self.max_age < 0):
            raise ValueError("max_age must be a non-negative number of seconds")

    def check(self, claims: Mapping[str, Any], now: float | None = None) -> None:
        """Raise InsufficientUserAuthentication unless the verified `claims` meet every demand."""
        if self.acr_values:
            acr = claims.get("acr")
            if not isinstance(acr, str):
                self._refuse("the token does not say how the user logged in (no acr)")
            if acr not in self.acr_values:
                # Matched exactly (RFC 9470 section 3): a higher acr the route did not list is refused too,
                # so the message names the acceptable values rather than calling the login weaker.
                self._refuse(f"a login with acr one of {' '.join(self.acr_values)} is required")
        if self.max_age is not None:
            auth_time = claims.get("auth_time")
            if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
                self._refuse("the token does not say when the user logged in (no auth_time)")
            current = time.time() if now is None else now
            if current - auth_time > self.max_age:
                self._refuse(f"a more recent login is required: within the last {self.max_age} seconds")

    def _refuse(self, description: str) -> NoReturn:
        raise InsufficientUserAuthentication(description, acr_values=self.acr_values, max_age=self.max_age)


def step_up(acr_values: str | Iterable[str] | None = None, max_age: int | None = None) -> StepUp | None:
    """Return the demand a route helper was given (`acr_values` as a list or space-separated), None for none."""
    values = tuple(acr_values.split() if isinstance(acr_values, str) else (acr_values or ()))
    if not values and max_age is None:
        return None
    return StepUp(values, max_age)
