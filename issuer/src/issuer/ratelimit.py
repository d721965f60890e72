"""Rate limits on password guessing (Flask-Limiter), counting failed attempts only.

Two limits guard every password check, the token endpoint's password grant and the login form,
and every one-time code check (the login's second step, the account page), which spends the
same budget as the user's password:

- per account and address: a few failures for one name from one address;
- per address: more failures from one address across all names.

Only failures count, and no limit is keyed by the account alone: anyone can type a name, so
a limit on the name alone would let anyone lock its owner out. A correct password from an
address that has not been failing gets through. The other grants spend no budget: codes and
refresh tokens are 256-bit secrets that cannot be guessed, and their requests come from
clients' back channels that many people share.

Charged before, refunded after. Each password request is charged before its password is
checked (Flask-Limiter's hit: one atomic increment that also tests the limit), and refunded
once it is known that no password failed: a correct password, a request that checked none, a
429. Testing first and charging only failures afterwards would let every request in flight
pass the test together: 32 concurrent guesses made 13-16 checks against a bound of 10. Now
at most the limit's number of checks run per window, however many arrive at once; the price is
that checks in flight hold budget until they end, so a burst of correct logins beyond the
limit, at one instant, can meet a 429. A refund goes only to the window that was charged: it
is skipped once the window charged has ended or ends within a second (Redis tells a window's
end in whole seconds), so a refund never credits the next window. (That end is read just
after the charge: a window that ends in that instant, between two calls, is the one gap.)

Counters live in memory by default (per worker process); set ISSUER_RATE_LIMIT_STORAGE to a
Redis URL (redis://host:6379) to share them between workers and replicas.

The address is the peer's, unless the peer is a proxy listed in ISSUER_TRUSTED_PROXIES: then
it is read from X-Forwarded-For, right to left, skipping every listed proxy (`client_address`).
A hop is trusted for what it is, its address, never for the header it sends; so with no proxy
listed (the default) the header is ignored, and a client that reaches a replica directly cannot
choose its own limit key.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request
from flask_limiter import Limiter, RequestLimit
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import HTTPException

from issuer import extensions
from issuer.opaque import derived_secret
from issuer.settings import Network
from shared import audit, metrics

log = logging.getLogger(__name__)

# The purpose of the account limit's keyed hash (see `_account_and_address`).
ACCOUNT_KEY = "rate-limit-account"
# X-Forwarded-For entries looked at, from the right: more hops than any real deployment has.
MAX_HOPS = 16
# Seconds of doubt about a window's bounds: Redis reports the time left in whole seconds.
REFUND_MARGIN = 1.0


def client_address() -> str:
    """Return the address of the client: the peer, or the first hop behind trusted proxies."""
    return forwarded_client(
        request.remote_addr or "",
        request.headers.getlist("X-Forwarded-For"),
        extensions.current().settings.trusted_proxies,
    )


def forwarded_client(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """Return the client behind `peer`: walk X-Forwarded-For from the right while each hop is a trusted proxy.

    Every proxy appends the address it received the request from, so the entry left of a
    trusted hop was written by that hop and can be believed; the first address that is not
    a trusted proxy is the client. Anything left of it is the client's to write, and ignored.
    """
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    address = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        if not hop:
            break  # an empty entry: the proxy chain says nothing more
        address = hop
        if not _trusted(hop, trusted):
            break
    return address[:64]


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.5 from a dual-stack socket is 10.0.0.5
    return any(ip in network for network in trusted)


limiter = Limiter(key_func=client_address)


def init_app(app: Flask) -> None:
    """Install the limiter on `app`, checking limits only where a view is decorated with one.

    Flask-Limiter also checks every request before its view for application-wide and default
    limits. The issuer sets none (each limit is a decorator, checked by the view it wraps, or
    by the function it wraps inside a view), so that check found nothing to apply, at about
    60 µs a request (a fifth of a `/healthz`): it is taken out. Should such limits ever be
    configured, this refuses to start rather than leave them unchecked.
    """
    limiter.init_app(app)
    manager = limiter.limit_manager
    if manager.application_limits or manager.default_limits:
        raise RuntimeError("the issuer's limits are decorators only; application or default limits would go unchecked")
    app.before_request_funcs[None].remove(limiter._check_request_limit)  # Flask-Limiter's own hook


def quiet_limiter_log() -> None:
    """Keep Flask-Limiter's INFO lines out of the log; its warnings and errors stay.

    Its "ratelimit ... (key) exceeded" line repeats the limit key, and our own `rate_limit.hit`
    audit event and metric tell the same. Its warnings and errors (the storage unreachable, a
    limit that failed) are kept; its INFO "storage recovered" goes with the rest.
    """
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)


def retry_after() -> int:
    """Return the seconds until the limit that was just hit resets."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, math.ceil(current.reset_at - time.time()))


def note_failed_password() -> None:
    """Mark this request as a failed password check, which keeps the charge the limits made."""
    g.password_failed = True


Charge = tuple[FixedWindowRateLimiter, RequestLimit, float]  # where it went, for which limit, when its window ends


def _charges() -> list[Charge]:
    """Return what the limits just charged this request, each with the end of the window charged."""
    strategy = limiter.limiter  # the fallback's, while Redis is down: where the charge went
    if not isinstance(strategy, FixedWindowRateLimiter):
        return []  # the only strategy the issuer configures; a refund is defined for it alone
    charges = []
    for charged in limiter.current_limits:
        if charged.breached:
            continue  # a breached count is over the limit anyway: nothing to give back
        try:
            window = strategy.get_window_stats(charged.limit, *charged.request_args)
        except strategy.storage.base_exceptions as exc:
            log.warning("rate limit window unreadable; no refund", extra={"fields": {"error": type(exc).__name__}})
            continue
        charges.append((strategy, charged, window.reset_time))
    return charges


def _refund(charges: list[Charge]) -> None:
    """Give back each charge whose window is still open, unless a password failed (at most once)."""
    if g.get("password_failed", False) or g.get("password_refunded", False):
        return
    g.password_refunded = True
    for strategy, charged, window_end in charges:
        if time.time() >= window_end - REFUND_MARGIN:
            continue  # that window is over or nearly: its count goes with it, the next one owes nothing
        try:
            strategy.storage.incr(charged.key, charged.limit.get_expiry(), amount=-1)
        except strategy.storage.base_exceptions as exc:
            # The charge stays: a correct password then costs one attempt, never a 500.
            log.warning("rate limit refund failed", extra={"fields": {"error": type(exc).__name__}})


def _refunding(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a view, already charged by the limits, so that it refunds unless a password failed."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        charges = _charges()
        try:
            return view(*args, **kwargs)
        finally:
            _refund(charges)

    return checked


def _typed_account() -> str:
    """Return the account name a login form or password grant typed."""
    return request.form.get("username", "").strip().lower()[:64]


def _account_and_address(account: Callable[[], str] = _typed_account) -> str:
    """Return the account limit's key: a keyed hash of the name typed, never the name itself.

    A user who types a password into the username field and retries would otherwise have it
    stored (in Redis too) and logged. HMAC-SHA-256 under the session secret, which every
    worker and replica shares (their counts must meet) and an attacker does not know (a bare
    hash of a short password is found by guessing).
    """
    key = derived_secret(str(current_app.config["SECRET_KEY"]).encode(), ACCOUNT_KEY, account())
    return f"account:{key}|{client_address()}"


def _known_account(account: Callable[[], str] = _typed_account) -> str | None:
    """Return the account name the request typed if it names a user (the trail never repeats other names)."""
    return extensions.current().users.known(account())


def _account_limit() -> str:
    return str(extensions.current().settings.login_rate_limit)


def _address_limit() -> str:
    return str(extensions.current().settings.address_rate_limit)


def _count_breach(limit: str, account: Callable[[], str] = _typed_account) -> Callable[[Any], None]:
    def breached(_limit: Any) -> None:
        _refund(_charges())  # a 429 checks no password: the limits it was charged by get it back
        metrics.RATE_LIMITED.labels(limit).inc()
        subject = _known_account(account) if limit == "password-account" else None
        audit.emit("rate_limit.hit", limit=limit, subject=subject)

    return breached


def _unreadable_body() -> bool:
    """Return whether the form cannot be read (too large, malformed): the view answers that 4xx itself.

    Such a request checks no password, so it spends no budget; and the limits, which read the
    form to decide, must not meet the error first (Flask-Limiter would log it as its own failure).
    """
    try:
        request.form  # noqa: B018 - parsed here once, cached on the request
    except HTTPException:
        return True
    return False


def password_limits(
    exempt_when: Callable[[], bool] | None = None, account: Callable[[], str] | None = None
) -> Callable[[Any], Any]:
    """Decorate a view that checks passwords (or one-time codes) with both limits (POST only).

    The account limit counts by the name the form typed, or by what `account` returns: the
    second step of a login and the account page charge the user the step is for, and share
    the budget of their password (a wrong code is a failed login).
    """
    extra = exempt_when

    named = account or _typed_account

    def exempt() -> bool:
        return _unreadable_body() or (extra is not None and extra())

    def decorate(view: Any) -> Any:
        # No `deduct_when`: each request is charged before the view runs, and `_refunding` gives it back.
        view = limiter.shared_limit(
            _address_limit,
            "password-address",
            methods=["POST"],
            exempt_when=exempt,
            on_breach=_count_breach("password-address"),
        )(_refunding(view))
        return limiter.shared_limit(
            _account_limit,
            "password-account",
            key_func=lambda: _account_and_address(named),
            methods=["POST"],
            exempt_when=exempt,
            on_breach=_count_breach("password-account", named),
        )(view)

    return decorate


def passkey_limits() -> Callable[[Any], Any]:
    """Decorate the passkey login (POST) with the per-address limit, the budget password failures share.

    A passkey login names no account before it is checked (discoverable credentials), so the
    per-account limit has nothing to key on; a refused assertion keeps its charge
    (`note_failed_password`), a login that passed gets it back, as a correct password does.
    """

    def decorate(view: Any) -> Any:
        return limiter.shared_limit(
            _address_limit,
            "password-address",
            methods=["POST"],
            exempt_when=_unreadable_body,
            on_breach=_count_breach("password-address"),
        )(_refunding(view))

    return decorate
