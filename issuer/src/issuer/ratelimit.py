"""Rate limits on password guessing (Flask-Limiter), counting failed attempts only.

Two limits guard every password check, the token endpoint's password grant and the login form:

- per account and address: a few failures for one name from one address;
- per address: more failures from one address across all names.

Only failures count, and no limit is keyed by the account alone: anyone can type a name, so
a limit on the name alone would let anyone lock its owner out. A correct password from an
address that has not been failing always gets through. The other grants spend no budget:
codes and refresh tokens are 256-bit secrets that cannot be guessed, and their requests come
from clients' back channels that many people share.

Counters live in memory by default (per worker process); set ISSUER_RATE_LIMIT_STORAGE to a
Redis URL (redis://host:6379) to share them between workers and replicas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Response, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from issuer import extensions

limiter = Limiter(key_func=get_remote_address)


def retry_after() -> int:
    """Return the seconds until the limit that was just hit resets."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, math.ceil(current.reset_at - time.time()))


def note_failed_password() -> None:
    """Mark this request as a failed password check, which the limits count."""
    g.password_failed = True


def _failed(_response: Response) -> bool:
    return bool(g.get("password_failed", False))


def _account_and_address() -> str:
    account = request.form.get("username", "").strip().lower()[:64]
    return f"account:{account}|{get_remote_address()}"


def _account_limit() -> str:
    return str(extensions.current().settings.login_rate_limit)


def _address_limit() -> str:
    return str(extensions.current().settings.address_rate_limit)


def password_limits(exempt_when: Callable[[], bool] | None = None) -> Callable[[Any], Any]:
    """Decorate a view that checks passwords with both limits (POST only)."""

    def decorate(view: Any) -> Any:
        view = limiter.shared_limit(
            _address_limit, "password-address", methods=["POST"], deduct_when=_failed, exempt_when=exempt_when
        )(view)
        return limiter.shared_limit(
            _account_limit,
            "password-account",
            key_func=_account_and_address,
            methods=["POST"],
            deduct_when=_failed,
            exempt_when=exempt_when,
        )(view)

    return decorate
