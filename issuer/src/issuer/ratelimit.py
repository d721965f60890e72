"""Rate limits on password guessing: per account and per client address (Flask-Limiter).

Counters live in memory by default (per worker process); set ISSUER_RATE_LIMIT_STORAGE to a
Redis URL (redis://host:6379) to share them between workers and replicas.
"""

from __future__ import annotations

import math
import time

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address)


def retry_after() -> int:
    """Return the seconds until the limit that was just hit resets."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, math.ceil(current.reset_at - time.time()))


def account_key() -> str:
    """Key a limit by the account named in the form, whoever sends it."""
    return "account:" + request.form.get("username", "").strip().lower()[:64]


def account_limit() -> str:
    """Return the configured per-account limit."""
    return str(current_app.extensions["issuer.settings"].login_rate_limit)


def address_limit() -> str:
    """Return the configured per-address limit."""
    return str(current_app.extensions["issuer.settings"].address_rate_limit)
