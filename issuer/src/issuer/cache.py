"""A short-lived cache of registrations (clients, APIs): no database read per token request for them.

A worker answers from what it read less than `ttl` seconds ago; a change made in the same
process (the app's own stores) clears it at once, and a change made elsewhere (the CLI, another
worker or replica) is seen within `ttl` (ISSUER_REGISTRY_CACHE_TTL, docs/configuration.md).

What a grant read is checked when it writes: within a request a registration is read once
(`pinned`), and the grant's status-list row is written only if that registration is still at
the revision read (issuer.statuslist). A token is never made from a copy older than the
registration its grant commits under; the grant that finds it changed answers 503, retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

from flask import g, has_request_context

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_ENTRIES = 1024  # bounded: unknown names asked for cost a read each once it is full


class TtlCache(Generic[K, V]):
    """Values read within the last `ttl` seconds (none kept when `ttl` is 0), at most MAX_ENTRIES."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._generation = 0  # counts `clear`: a read that overlapped one is not kept
        self._lock = threading.Lock()

    def get(self, key: K, read: Callable[[K], V]) -> V:
        """Return the value of `key`, from the cache while it is fresh, else from `read` (then kept)."""
        if self.ttl <= 0:
            return read(key)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        generation = self._generation
        value = read(key)
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (now + self.ttl, value)
        return value

    def clear(self) -> None:
        """Forget every value (a registration changed in this process)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()


def pinned(key: Hashable, read: Callable[[], V]) -> V:
    """Return what this request first read of `key` (reading it now if it has not): one version of a registration per request.

    A grant's checks and its write then speak of the same registration, whose revision the
    write checks is still current. Outside a request (the CLI), `read()`.
    """
    if not has_request_context():
        return read()
    seen: dict[Hashable, Any] = g.setdefault("registrations", {})
    if key not in seen:
        seen[key] = read()
    return cast(V, seen[key])
