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

The address is the peer's, unless the peer is a proxy listed in ISSUER_TRUSTED_PROXIES: then
it is read from X-Forwarded-For, right to left, skipping every listed proxy (`client_address`).
A hop is trusted for what it is, its address, never for the header it sends; so with no proxy
listed (the default) the header is ignored, and a client that reaches a replica directly cannot
choose its own limit key.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Response, g, request
from flask_limiter import Limiter
from werkzeug.exceptions import HTTPException

from issuer import extensions
from issuer.settings import Network
from shared import audit, metrics

# X-Forwarded-For entries looked at, from the right: more hops than any real deployment has.
MAX_HOPS = 16


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
    return f"account:{account}|{client_address()}"


def _known_account() -> str | None:
    """Return the account name the request typed if it names a user (the trail never repeats other names)."""
    return extensions.current().users.known(request.form.get("username", "").strip().lower()[:64])


def _account_limit() -> str:
    return str(extensions.current().settings.login_rate_limit)


def _address_limit() -> str:
    return str(extensions.current().settings.address_rate_limit)


def _count_breach(limit: str) -> Callable[[Any], None]:
    def breached(_limit: Any) -> None:
        metrics.RATE_LIMITED.labels(limit).inc()
        audit.emit("rate_limit.hit", limit=limit, subject=_known_account() if limit == "password-account" else None)

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


def password_limits(exempt_when: Callable[[], bool] | None = None) -> Callable[[Any], Any]:
    """Decorate a view that checks passwords with both limits (POST only)."""
    extra = exempt_when

    def exempt() -> bool:
        return _unreadable_body() or (extra is not None and extra())

    def decorate(view: Any) -> Any:
        view = limiter.shared_limit(
            _address_limit,
            "password-address",
            methods=["POST"],
            deduct_when=_failed,
            exempt_when=exempt,
            on_breach=_count_breach("password-address"),
        )(view)
        return limiter.shared_limit(
            _account_limit,
            "password-account",
            key_func=_account_and_address,
            methods=["POST"],
            deduct_when=_failed,
            exempt_when=exempt,
            on_breach=_count_breach("password-account"),
        )(view)

    return decorate
