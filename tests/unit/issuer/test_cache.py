"""Unit tests for issuer.cache and the stores read through it: fresh within the TTL, cleared by the process's own changes."""

from __future__ import annotations

import dataclasses

from issuer.apis import ApiStore
from issuer.cache import MAX_ENTRIES, TtlCache
from issuer.clients import Client, ClientStore
from issuer.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_read_once_within_the_ttl_and_again_after_it() -> None:
    clock, reads = Clock(), []
    cache: TtlCache[str, int] = TtlCache(1.0, clock)

    def read(key: str) -> int:
        reads.append(key)
        return len(reads)

    assert [cache.get("a", read), cache.get("a", read)] == [1, 1]
    clock.now += 0.99
    assert cache.get("a", read) == 1
    clock.now += 0.02
    assert cache.get("a", read) == 2
    assert reads == ["a", "a"]


def test_clear_forgets_and_a_ttl_of_zero_keeps_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(5.0, Clock())
    assert cache.get("a", lambda _: 1) == 1
    cache.clear()
    assert cache.get("a", lambda _: 2) == 2
    off: TtlCache[str, int] = TtlCache(0.0, Clock())
    assert [off.get("a", lambda _: 1), off.get("a", lambda _: 2)] == [1, 2]


def test_a_read_overlapping_a_clear_is_not_kept() -> None:
    cache: TtlCache[str, int] = TtlCache(5.0, Clock())

    def read_while_changed(_key: str) -> int:
        cache.clear()  # a change lands while the old value is being read
        return 1

    assert cache.get("a", read_while_changed) == 1
    assert cache.get("a", lambda _: 2) == 2


def test_the_cache_is_bounded() -> None:
    cache: TtlCache[int, int] = TtlCache(5.0, Clock())
    for key in range(MAX_ENTRIES + 10):
        cache.get(key, lambda k: k)
    assert len(cache._entries) <= MAX_ENTRIES


def test_a_cached_client_store_answers_from_the_cache_until_its_own_change(database: Database) -> None:
    cached, cli = ClientStore(database, cache_ttl=60.0), ClientStore(database)
    cli.add(Client("app", frozenset({"password"})))
    assert cached.get("app") is not None
    cli.delete("app")  # another process: not seen within the TTL (no read)
    assert cached.get("app") is not None
    cached.add(Client("other", frozenset({"password"})))  # a change of its own clears it
    assert cached.get("app") is None
    narrowed = dataclasses.replace(Client("other", frozenset({"password"})), scopes=frozenset({"profile"}))
    cached.replace(narrowed)
    found = cached.get("other")
    assert found is not None
    assert found.scopes == frozenset({"profile"})


def test_a_cached_api_store_answers_by_audience_and_uri_until_its_own_change(database: Database) -> None:
    cached, cli = ApiStore(database, cache_ttl=60.0), ApiStore(database)
    cli.add("orders", "orders:read", ["https://orders.example"])
    assert cached.resolve("https://orders.example") is not None
    assert cached.get("orders") is not None
    cli.delete("orders")
    assert cached.resolve("https://orders.example") is not None
    cached.delete("orders")
    assert cached.get("orders") is None
    assert cached.resolve("https://orders.example") is None
