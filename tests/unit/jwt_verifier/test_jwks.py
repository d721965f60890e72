"""Unit tests for jwt_verifier.jwks against a real HTTP server on 127.0.0.1, with a hand-moved clock."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.config import VerifierConfig
from jwt_verifier.jose import public_jwk
from jwt_verifier.jwks import JwksClient, KeysUnavailable, UnknownKey
from tests.support.fakes import FakeClock, JwksServer
from tests.support.tokens import kid_of

ClientFactory = Callable[..., JwksClient]

COOLDOWN = 10.0


def _join_threads(name: str) -> None:
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join(timeout=10)
            assert not thread.is_alive(), f"{name} thread did not finish"


def _wait_for_background_refresh() -> None:
    _join_threads("jwks-refresh")


@pytest.fixture
def make_client(jwks_server: JwksServer, clock: FakeClock) -> Iterator[ClientFactory]:
    """Build JWKS clients on the test server and clock; their sessions are closed afterwards."""
    sessions: list[requests.Session] = []

    def make(**options: Any) -> JwksClient:
        session = requests.Session()
        sessions.append(session)
        settings: dict[str, Any] = {
            "url": jwks_server.url,
            "timeout": 0.5,
            "max_bytes": 64 * 1024,
            "default_ttl": 300,
            "min_ttl": 30,
            "max_ttl": 3600,
            "cooldown": COOLDOWN,
            **options,
        }
        # The client's own names for its settings, which VerifierConfig prefixes.
        config = VerifierConfig(
            issuer="http://issuer.test",
            audience="api",
            resource="http://api.test",
            **{f"jwks_{name}": value for name, value in settings.items()},
        )
        return JwksClient(config, clock=clock, session=session)

    yield make
    _wait_for_background_refresh()
    for session in sessions:
        session.close()


@pytest.fixture
def loaded(make_client: ClientFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> JwksClient:
    """A client that has fetched the JWKS once and holds `rsa_key` (fresh for 300 s)."""
    jwks_server.serve_keys(rsa_key)
    client = make_client()
    client.get(kid_of(rsa_key))
    assert jwks_server.request_count == 1
    return client


def _same_key(a: rsa.RSAPublicKey, b: rsa.RSAPrivateKey) -> bool:
    return a.public_numbers() == b.public_key().public_numbers()


def _jwks_body(*keys: rsa.RSAPrivateKey, **extra: Any) -> bytes:
    return json.dumps({"keys": [public_jwk(k.public_key()) for k in keys], **extra}).encode()


# -- loading and caching ------------------------------------------------------------------


def test_first_use_fetches_the_jwks_and_returns_the_key(
    make_client: ClientFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_client()
    assert _same_key(client.get(kid_of(rsa_key)), rsa_key)
    assert client.kids == [kid_of(rsa_key)]
    assert jwks_server.paths == [JwksServer.path]


def test_fresh_keys_are_served_from_memory(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    for _ in range(50):
        loaded.get(kid_of(rsa_key))
        clock.advance(5)
    assert jwks_server.request_count == 1


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("public, max-age=120", 120),
        ("max-age=5", 30),  # clamped up to min_ttl
        ("max-age=0", 30),
        ("public, max-age=999999", 3600),  # clamped down to max_ttl
        ("no-store", 30),
        ("no-cache", 30),
        ("no-store, max-age=600", 30),
        ("max-age=1e9", 300),  # not delta-seconds: as if absent
        (None, 300),  # default_ttl
    ],
)
def test_cache_lifetime_follows_cache_control_within_limits(
    make_client: ClientFactory,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    cache_control: str | None,
    ttl: int,
) -> None:
    jwks_server.serve_keys(rsa_key, cache_control=cache_control)
    client = make_client()
    kid = kid_of(rsa_key)
    client.get(kid)

    clock.advance(ttl - 0.5)
    client.get(kid)
    _wait_for_background_refresh()
    assert jwks_server.request_count == 1

    clock.advance(0.5)
    client.get(kid)
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2


def test_stale_keys_keep_serving_while_one_background_fetch_runs(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    old, new = kid_of(rsa_key), kid_of(other_rsa_key)
    jwks_server.serve_keys(other_rsa_key)
    jwks_server.hold()
    clock.advance(300)

    started = time.perf_counter()
    for _ in range(20):
        assert _same_key(loaded.get(old), rsa_key)  # answered while the issuer has not replied
    assert time.perf_counter() - started < 1.0

    jwks_server.release()
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2
    assert loaded.kids == [new]
    assert _same_key(loaded.get(new), other_rsa_key)
    assert jwks_server.request_count == 2


def test_failed_background_refresh_keeps_the_old_keys(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(503, b"down for maintenance")
    clock.advance(301)
    loaded.get(kid_of(rsa_key))
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2
    assert _same_key(loaded.get(kid_of(rsa_key)), rsa_key)


def test_background_refresh_after_failure_waits_for_the_cooldown(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(500, b"")
    clock.advance(301)
    for _ in range(5):
        loaded.get(kid_of(rsa_key))
        _wait_for_background_refresh()
        clock.advance(1)
    assert jwks_server.request_count == 2
    clock.advance(COOLDOWN)
    loaded.get(kid_of(rsa_key))
    _wait_for_background_refresh()
    assert jwks_server.request_count == 3


# -- unknown kids -------------------------------------------------------------------------


def test_unknown_kid_triggers_a_refetch_that_finds_a_new_key(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    clock.advance(COOLDOWN)
    assert _same_key(loaded.get(kid_of(other_rsa_key)), other_rsa_key)
    assert jwks_server.request_count == 2
    assert sorted(loaded.kids) == sorted([kid_of(rsa_key), kid_of(other_rsa_key)])


def test_unknown_kid_burst_refetches_at_most_once_per_cooldown(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock
) -> None:
    def burst() -> None:
        for _ in range(100):
            with pytest.raises(UnknownKey):
                loaded.get(uuid.uuid4().hex)

    clock.advance(COOLDOWN + 1)
    burst()
    assert jwks_server.request_count == 2
    clock.advance(COOLDOWN / 2)
    burst()
    assert jwks_server.request_count == 2
    clock.advance(COOLDOWN / 2)
    burst()
    assert jwks_server.request_count == 3


def test_same_unknown_kid_is_remembered_for_a_cooldown(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock
) -> None:
    clock.advance(COOLDOWN)
    for _ in range(10):
        with pytest.raises(UnknownKey):
            loaded.get("forged-kid")
        clock.advance(COOLDOWN / 20)
    assert jwks_server.request_count == 2


def test_key_published_just_after_a_fetch_is_found_once_the_cooldown_passes(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    other_rsa_key: rsa.RSAPrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    with pytest.raises(UnknownKey):
        loaded.get(kid_of(other_rsa_key))
    assert jwks_server.request_count == 1
    clock.advance(COOLDOWN)
    assert _same_key(loaded.get(kid_of(other_rsa_key)), other_rsa_key)
    assert jwks_server.request_count == 2


@pytest.mark.parametrize("cooldown", [COOLDOWN, 0.0])
def test_concurrent_requests_for_a_new_kid_cause_one_fetch(
    make_client: ClientFactory,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    cooldown: float,
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_client(cooldown=cooldown)
    client.get(kid_of(rsa_key))
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    jwks_server.delay = 0.2  # keep the fetch in flight while the others arrive
    clock.advance(COOLDOWN)
    new = kid_of(other_rsa_key)
    threads = 16
    barrier = threading.Barrier(threads)
    results: list[object] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(client.get(new))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=10)
    assert len(results) == threads
    assert all(isinstance(r, rsa.RSAPublicKey) and _same_key(r, other_rsa_key) for r in results), results
    assert jwks_server.request_count == 2


# -- failures keep the keys held ----------------------------------------------------------


def _fail_http_500(server: JwksServer, body: bytes) -> None:
    server.answer(500, body)


def _fail_garbage(server: JwksServer, body: bytes) -> None:
    server.answer(200, b"\x00\xffnot json at all" + body)


def _fail_html(server: JwksServer, body: bytes) -> None:
    server.answer(200, b"<html><body>Welcome to nginx</body></html>", {"Content-Type": "text/html"})


def _fail_non_object(server: JwksServer, body: bytes) -> None:
    server.answer(200, json.dumps([json.loads(body)]).encode())


def _fail_keys_not_a_list(server: JwksServer, body: bytes) -> None:
    server.answer(200, json.dumps({"keys": json.loads(body)["keys"][1]}).encode())


def _fail_no_usable_key(server: JwksServer, body: bytes) -> None:
    server.answer(200, b'{"keys": [{"kty": "EC", "kid": "ec"}]}')


def _fail_oversized(server: JwksServer, body: bytes) -> None:
    document = json.loads(body)
    document["padding"] = "x" * 70_000
    server.answer(200, json.dumps(document).encode())


def _fail_redirect(server: JwksServer, body: bytes) -> None:
    server.answer(302, body, {"Location": server.base_url + "/elsewhere.json", "Content-Type": "application/json"})


def _fail_slow(server: JwksServer, body: bytes) -> None:
    server.answer(200, body)
    server.delay = 5.0


def _fail_trickle(server: JwksServer, body: bytes) -> None:
    server.answer(200, body)
    server.trickle = True


def _fail_stopped(server: JwksServer, body: bytes) -> None:
    server.stop()


FAILURES = {
    "http-500": (_fail_http_500, "HTTP 500"),
    "garbage": (_fail_garbage, "not JSON"),
    "html": (_fail_html, "not JSON"),
    "non-object": (_fail_non_object, "not an object with a 'keys' list"),
    "keys-not-a-list": (_fail_keys_not_a_list, "not an object with a 'keys' list"),
    "no-usable-key": (_fail_no_usable_key, "no usable RS256 key"),
    "oversized": (_fail_oversized, "larger than 65536 bytes"),
    "redirect": (_fail_redirect, "HTTP 302"),
    "slow": (_fail_slow, "took too long"),
    "trickle": (_fail_trickle, "took too long"),
    "issuer-down": (_fail_stopped, "ConnectionError"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failed_fetch_keeps_serving_the_keys_held(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_fail, reason = FAILURES[failure]
    # Each failing answer would, if accepted, publish the new key.
    make_fail(jwks_server, _jwks_body(rsa_key, other_rsa_key))
    clock.advance(COOLDOWN)
    started = time.perf_counter()
    with pytest.raises(UnknownKey):
        loaded.get(kid_of(other_rsa_key))
    assert time.perf_counter() - started < 3.0
    assert loaded.fetch_count == 2
    assert loaded.kids == [kid_of(rsa_key)]
    assert _same_key(loaded.get(kid_of(rsa_key)), rsa_key)
    reasons = [r.fields["reason"] for r in caplog.records if r.getMessage().startswith("jwks fetch failed")]  # type: ignore[attr-defined]
    assert len(reasons) == 1
    assert reason in reasons[0]


def test_redirect_is_not_followed(loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock) -> None:
    _fail_redirect(jwks_server, b"{}")
    clock.advance(COOLDOWN)
    with pytest.raises(UnknownKey):
        loaded.get("other")
    assert jwks_server.paths == [JwksServer.path, JwksServer.path]


def test_jwks_at_the_size_limit_is_accepted(
    make_client: ClientFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    body = _jwks_body(rsa_key)
    jwks_server.answer(200, body)
    assert _same_key(make_client(max_bytes=len(body)).get(kid_of(rsa_key)), rsa_key)


# -- which keys are trusted ---------------------------------------------------------------


def test_unfit_keys_are_ignored_and_fit_ones_kept(
    make_client: ClientFactory,
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    small_rsa_key: rsa.RSAPrivateKey,
) -> None:
    good = dict(public_jwk(rsa_key.public_key()))
    other = dict(public_jwk(other_rsa_key.public_key()))
    unfit = [
        {**other, "kid": "wrong-kty", "kty": "EC"},
        {**other, "kid": "wrong-use", "use": "enc"},
        {**other, "kid": "wrong-alg", "alg": "RS384"},
        {**other, "kid": "hmac", "alg": "HS256"},
        {**public_jwk(small_rsa_key.public_key()), "kid": "small"},
        {**other, "kid": "private", "d": "AQAB"},
        {**other, "kid": None},
        "not an object",
    ]
    jwks_server.serve_jwks([*unfit, good])
    client = make_client()
    assert _same_key(client.get(kid_of(rsa_key)), rsa_key)
    assert client.kids == [kid_of(rsa_key)]
    for kid in ("wrong-kty", "wrong-use", "wrong-alg", "hmac", "small", "private"):
        with pytest.raises(UnknownKey):
            client.get(kid)


# -- nothing loaded yet -------------------------------------------------------------------


def test_keys_unavailable_when_the_issuer_was_never_reachable(make_client: ClientFactory, dead_url: str) -> None:
    client = make_client(url=dead_url)
    with pytest.raises(KeysUnavailable):
        client.get("any-kid")
    assert client.ensure_loaded() is False
    assert client.kids == []


def test_keys_unavailable_when_the_issuer_only_fails(make_client: ClientFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(500, b"")
    client = make_client()
    with pytest.raises(KeysUnavailable):
        client.get("any-kid")


def test_keys_unavailable_when_the_jwks_holds_no_usable_key(
    make_client: ClientFactory, jwks_server: JwksServer, small_rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve_keys(small_rsa_key)
    with pytest.raises(KeysUnavailable):
        make_client().get(kid_of(small_rsa_key))


def test_retries_while_unloaded_wait_for_their_backoff(
    make_client: ClientFactory, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(500, b"")
    client = make_client()
    for _ in range(20):
        with pytest.raises(KeysUnavailable):
            client.get(kid_of(rsa_key))
        assert client.ensure_loaded() is False
    assert jwks_server.request_count == 1

    jwks_server.serve_keys(rsa_key)
    clock.advance(COOLDOWN)
    assert client.ensure_loaded() is True
    assert _same_key(client.get(kid_of(rsa_key)), rsa_key)
    assert jwks_server.request_count == 2


def test_a_client_without_keys_retries_a_failed_fetch_soon_not_after_the_cooldown(
    make_client: ClientFactory, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.stop()  # the issuer is not up yet
    client = make_client()
    for _ in range(3):  # each failure waits a little longer, never more than the retry bound
        assert client.ensure_loaded() is False
        clock.advance(VerifierConfig.jwks_retry_max)
    assert client.fetch_count == 3

    restarted = JwksServer()
    try:
        restarted.serve_keys(rsa_key)
        client.url = restarted.url
        assert client.ensure_loaded() is True
        assert _same_key(client.get(kid_of(rsa_key)), rsa_key)
    finally:
        restarted.stop()


def test_a_client_without_prefetch_retries_a_failed_fetch_after_the_cooldown(
    make_client: ClientFactory, dead_url: str, clock: FakeClock
) -> None:
    client = make_client(url=dead_url, prefetch=False)  # the issuer's key set of a client's jwks_uri
    assert client.ensure_loaded() is False
    clock.advance(COOLDOWN / 2)
    assert client.ensure_loaded() is False
    assert client.fetch_count == 1
    clock.advance(COOLDOWN / 2)
    assert client.ensure_loaded() is False
    assert client.fetch_count == 2


def test_a_client_holding_keys_retries_a_failed_fetch_after_the_cooldown(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(500, b"")
    clock.advance(COOLDOWN)  # past the first fetch's cooldown
    with pytest.raises(UnknownKey):
        loaded.get("new-kid")
    clock.advance(VerifierConfig.jwks_retry_max)
    with pytest.raises(UnknownKey):
        loaded.get("newer-kid")
    assert jwks_server.request_count == 2


def test_ensure_loaded_does_not_refetch_when_keys_are_held(loaded: JwksClient, jwks_server: JwksServer) -> None:
    assert loaded.ensure_loaded() is True
    assert loaded.ensure_loaded() is True
    assert jwks_server.request_count == 1


def test_prefetch_loads_keys_in_the_background(
    make_client: ClientFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_client(cooldown=0.0)
    client.prefetch()
    _join_threads("jwks-prefetch")
    assert client.kids == [kid_of(rsa_key)]
    assert jwks_server.request_count == 1


# -- change notices and key objects -------------------------------------------------------


def test_subscribers_hear_the_new_kids_when_the_key_set_changes(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    heard: list[frozenset[str]] = []
    loaded.subscribe(heard.append)
    jwks_server.serve_keys(other_rsa_key)
    clock.advance(COOLDOWN)
    loaded.get(kid_of(other_rsa_key))
    assert heard == [frozenset({kid_of(other_rsa_key)})]


def test_subscribers_hear_nothing_when_a_refetch_finds_the_same_keys(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    heard: list[frozenset[str]] = []
    loaded.subscribe(heard.append)
    clock.advance(300)
    loaded.get(kid_of(rsa_key))
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2
    assert heard == []


def test_an_unchanged_jwk_keeps_its_key_object_across_refetches(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    before = loaded.get(kid_of(rsa_key))
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    clock.advance(COOLDOWN)
    loaded.get(kid_of(other_rsa_key))
    assert jwks_server.request_count == 2
    assert loaded.get(kid_of(rsa_key)) is before


def test_key_signing_right_after_a_scheduled_refresh_is_fetched_at_once(
    make_client: ClientFactory,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    """An emergency rotation just after a routine refresh must not wait out a cooldown."""
    jwks_server.serve_keys(rsa_key)
    client = make_client()
    assert client.ensure_loaded()  # the start-up load: no cooldown
    clock.advance(300)
    client.get(kid_of(rsa_key))  # stale: a scheduled refresh runs in the background
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2

    jwks_server.serve_keys(rsa_key, other_rsa_key)  # the emergency key signs at once
    assert _same_key(client.get(kid_of(other_rsa_key)), other_rsa_key)
    assert jwks_server.request_count == 3
    # That fetch was for an unknown kid: the next one waits out the cooldown.
    with pytest.raises(UnknownKey):
        client.get("yet-another-kid")
    assert jwks_server.request_count == 3


# -- hostile answers ------------------------------------------------------------------------

DEEPLY_NESTED = b'{"keys": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
NESTED_KEY = b'{"keys": [{"kty": "RSA", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}]}"


@pytest.mark.parametrize("body", [DEEPLY_NESTED, NESTED_KEY], ids=["nested-keys", "nested-member"])
def test_deeply_nested_jwks_is_a_failed_fetch(make_client: ClientFactory, jwks_server: JwksServer, body: bytes) -> None:
    assert len(body) < 64 * 1024
    jwks_server.answer(200, body)
    client = make_client()
    with pytest.raises(KeysUnavailable):
        client.get("some-kid")
    assert client.ensure_loaded() is False


def test_prefetch_survives_a_hostile_jwks_and_loads_keys_later(
    make_client: ClientFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(200, DEEPLY_NESTED)
    client = make_client(cooldown=0.0)
    client.prefetch()
    jwks_server.wait_for_requests(1)
    jwks_server.serve_keys(rsa_key)
    _join_threads("jwks-prefetch")
    assert client.kids == [kid_of(rsa_key)]


def test_background_refresh_survives_a_hostile_jwks(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(200, DEEPLY_NESTED)
    clock.advance(301)
    assert _same_key(loaded.get(kid_of(rsa_key)), rsa_key)
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2
    assert _same_key(loaded.get(kid_of(rsa_key)), rsa_key)


# -- single flight: a waiter never reuses an answer older than its wait -----------------------


class _SignallingLock:
    """The client's fetch lock, telling the test when (and how many) threads have begun to wait for it."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.waiting = threading.Event()
        self._entered = 0
        self._counted = threading.Condition()

    def __enter__(self) -> None:
        with self._counted:
            self._entered += 1
            self._counted.notify_all()
        self.waiting.set()
        self._lock.acquire()

    def wait_for_entries(self, count: int) -> None:
        """Wait until `count` threads in all have asked for the lock."""
        with self._counted:
            assert self._counted.wait_for(lambda: self._entered >= count, timeout=10), self._entered

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_waiter_does_not_reuse_a_fetch_that_began_before_it_waited(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    # A scheduled refresh is in flight, its answer taken before the new key existed ...
    jwks_server.hold()
    clock.advance(300)
    loaded.get(kid_of(rsa_key))
    jwks_server.wait_for_requests(2)
    # ... then an emergency rotation: the issuer signs with a new key and publishes it.
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    lock = _SignallingLock(loaded._fetch_lock)
    loaded._fetch_lock = lock  # type: ignore[assignment]
    results: list[object] = []

    def request_with_the_new_key() -> None:
        try:
            results.append(loaded.get(kid_of(other_rsa_key)))
        except (UnknownKey, KeysUnavailable) as exc:
            results.append(exc)

    waiter = threading.Thread(target=request_with_the_new_key)
    waiter.start()
    assert lock.waiting.wait(timeout=10)
    jwks_server.release()
    waiter.join(timeout=10)
    _wait_for_background_refresh()
    assert len(results) == 1
    assert isinstance(results[0], rsa.RSAPublicKey), results
    assert _same_key(results[0], other_rsa_key)
    assert jwks_server.request_count == 3


def test_waiters_share_a_fetch_that_began_after_they_waited(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    clock.advance(COOLDOWN)
    jwks_server.hold()
    threads = 8
    barrier = threading.Barrier(threads + 1)
    results: list[object] = []

    def request_with_the_new_key() -> None:
        barrier.wait()
        results.append(loaded.get(kid_of(other_rsa_key)))

    workers = [threading.Thread(target=request_with_the_new_key) for _ in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    jwks_server.wait_for_requests(2)
    jwks_server.release()
    for thread in workers:
        thread.join(timeout=10)
    assert len(results) == threads
    assert jwks_server.request_count == 2


def _get_in_threads(client: JwksClient, kids: list[str]) -> tuple[list[threading.Thread], list[object]]:
    """Start one thread per kid asking the client for it; each records the key or the error."""
    results: list[object] = []

    def ask(kid: str) -> None:
        try:
            results.append(client.get(kid))
        except (UnknownKey, KeysUnavailable) as exc:
            results.append(exc)

    threads = [threading.Thread(target=ask, args=(kid,)) for kid in kids]
    for thread in threads:
        thread.start()
    return threads, results


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_waiter_on_a_junk_kid_fetch_that_began_before_the_new_key_gets_the_new_key(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    lock = _SignallingLock(loaded._fetch_lock)
    loaded._fetch_lock = lock  # type: ignore[assignment]
    clock.advance(COOLDOWN)
    # A junk kid starts a fetch (and the cooldown); its answer is taken before the rotation ...
    jwks_server.hold()
    junk, junk_results = _get_in_threads(loaded, ["junk-kid"])
    jwks_server.wait_for_requests(2)
    # ... then the issuer publishes and signs with a new key, and a request for it waits.
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    waiter, results = _get_in_threads(loaded, [kid_of(other_rsa_key)])
    lock.wait_for_entries(2)
    jwks_server.release()
    _join(junk + waiter)
    assert isinstance(junk_results[0], UnknownKey)
    assert len(results) == 1
    assert isinstance(results[0], rsa.RSAPublicKey), results
    assert _same_key(results[0], other_rsa_key)
    assert jwks_server.request_count == 3


def test_a_kid_is_not_remembered_unknown_from_a_fetch_older_than_its_request(
    loaded: JwksClient,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    clock.advance(COOLDOWN)
    with pytest.raises(UnknownKey):
        loaded.get("junk-kid")  # a fetch, and the cooldown starts
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    clock.advance(COOLDOWN / 2)
    with pytest.raises(UnknownKey):
        loaded.get(kid_of(other_rsa_key))  # inside the cooldown: no fetch, the answer is old
    assert jwks_server.request_count == 2
    clock.advance(COOLDOWN / 2)
    assert _same_key(loaded.get(kid_of(other_rsa_key)), other_rsa_key)
    assert jwks_server.request_count == 3


def test_a_flood_of_junk_kids_costs_at_most_two_fetches_per_cooldown(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock
) -> None:
    lock = _SignallingLock(loaded._fetch_lock)
    loaded._fetch_lock = lock  # type: ignore[assignment]
    flood = 16
    clock.advance(COOLDOWN)
    entered = 0  # threads that have asked for the fetch lock, over all windows
    for _ in range(2):
        before = jwks_server.request_count
        # The first junk kid starts a fetch; a flood of others waits for it ...
        jwks_server.hold()
        first, results = _get_in_threads(loaded, [uuid.uuid4().hex])
        jwks_server.wait_for_requests(before + 1)
        waiting, more = _get_in_threads(loaded, [uuid.uuid4().hex for _ in range(flood)])
        entered += 1 + flood
        lock.wait_for_entries(entered)
        # ... and shares one follow-up fetch, itself held while a second flood arrives.
        jwks_server.release()
        jwks_server.hold()
        jwks_server.wait_for_requests(before + 2)
        late, latest = _get_in_threads(loaded, [uuid.uuid4().hex for _ in range(flood)])
        entered += flood
        lock.wait_for_entries(entered)
        jwks_server.release()
        _join(first + waiting + late)
        assert all(isinstance(r, UnknownKey) for r in results + more + latest)
        assert len(results + more + latest) == 1 + 2 * flood
        assert jwks_server.request_count == before + 2
        # The rest of the window: the flood goes on, and nothing more reaches the issuer.
        clock.advance(COOLDOWN / 2)
        rest, _ = _get_in_threads(loaded, [uuid.uuid4().hex for _ in range(flood)])
        _join(rest)
        entered += flood
        assert jwks_server.request_count == before + 2
        clock.advance(COOLDOWN / 2)


# -- a fetch bounded in total time ----------------------------------------------------------


class _Trickler:
    """A raw HTTP server on 127.0.0.1: sends `at_once`, then `trickled` a byte every 0.1 s."""

    def __init__(self, at_once: bytes, trickled: bytes) -> None:
        self.at_once = at_once
        self.trickled = trickled
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self._serve, name="trickler", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(self.at_once)
                for byte in self.trickled:
                    time.sleep(0.1)  # the trickle's pace is the point: each read well within the timeout
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up, as it should

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=60)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_jwks_fails_within_the_timeout(
    make_client: ClientFactory, rsa_key: rsa.RSAPrivateKey, where: str
) -> None:
    body = _jwks_body(rsa_key)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    trickler = _Trickler(b"", head + body) if where == "headers" else _Trickler(head, body)
    try:
        client = make_client(url=trickler.url, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(KeysUnavailable):
            client.get(kid_of(rsa_key))
        assert time.monotonic() - started < 1.0 + 0.4  # the whole fetch within its configured time
    finally:
        trickler.close()


def test_held_answers_without_fetching(
    make_client: ClientFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_client()
    assert client.held(kid_of(rsa_key)) is None
    assert jwks_server.request_count == 0
    client.get(kid_of(rsa_key))
    assert client.held(kid_of(rsa_key)) is client.get(kid_of(rsa_key))
    assert client.held(kid_of(other_rsa_key)) is None
    assert jwks_server.request_count == 1


def test_held_refreshes_a_stale_set_in_the_background(
    loaded: JwksClient, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    clock.advance(301)
    assert loaded.held(kid_of(rsa_key)) is not None
    _wait_for_background_refresh()
    assert jwks_server.request_count == 2
