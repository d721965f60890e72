"""The `Cache-Control` directives a JWKS client heeds (RFC 9111 section 5.2.2), read strictly.

Only `max-age`, `no-store` and `no-cache` matter to the JWKS client; every other directive is
ignored. A `max-age` that is not a plain run of ASCII digits (section 1.2.2's delta-seconds,
quoted or not) is ignored as if absent, and one beyond 2**31 is capped there (section 1.2.2).
The first `max-age` wins (section 4.2.1: a cache may treat duplicates as stale; we only need one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CacheControl", "parse_cache_control"]

MAX_DELTA_SECONDS = 2**31  # RFC 9111 section 1.2.2: the greatest positive integer a cache must keep


@dataclass(frozen=True)
class CacheControl:
    """The directives of a response that decide how long a JWKS stays fresh."""

    max_age: int | None = None
    no_store: bool = False
    no_cache: bool = False


def _delta_seconds(value: str) -> int | None:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]  # section 5.2: senders should not quote, recipients must accept it
    if not value or not value.isascii() or not value.isdigit():
        return None
    # Long runs of digits are capped before int() sees them: no giant integer from a hostile peer.
    return MAX_DELTA_SECONDS if len(value) > 10 else min(int(value), MAX_DELTA_SECONDS)


def parse_cache_control(header: str | None) -> CacheControl:
    """Return the `max-age`, `no-store` and `no-cache` directives of a `Cache-Control` value."""
    if not header:
        return CacheControl()
    max_age: int | None = None
    no_store = no_cache = False
    for directive in header.split(","):
        name, has_value, value = directive.partition("=")
        name = name.strip().lower()
        if name == "max-age":
            if max_age is None and has_value:
                max_age = _delta_seconds(value.rstrip())
        elif name == "no-store":
            no_store = True
        elif name == "no-cache":
            no_cache = True  # with or without a field-name list (section 5.2.2.4): either way, revalidate
    return CacheControl(max_age=max_age, no_store=no_store, no_cache=no_cache)
