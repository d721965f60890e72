"""Unit tests for jwt_verifier.status: lists signed by the tests and served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from flask import Flask, g

from jwt_verifier.config import VerifierConfig
from jwt_verifier.errors import Reason, StatusListInvalid, StatusUnavailable, TokenRevoked
from jwt_verifier.fastapi import BearerAuth as FastApiAuth
from jwt_verifier.fastapi import Claims, require_scope
from jwt_verifier.fastapi import protection as fastapi_protection
from jwt_verifier.flask import BearerAuth as FlaskAuth
from jwt_verifier.flask import protection as flask_protection
from jwt_verifier.jwks import JwksClient
from jwt_verifier.status import StatusChecked, StatusFetchNeeded, StatusLists, loop_thread
from jwt_verifier.verifier import Verifier
from tests.support.asgi import serve_asgi
from tests.support.fakes import FakeClock, WsgiServer
from tests.support.statuslists import INDEX_PATH, JWKS_PATH, StatusServer, list_claims, sign_list
from tests.support.threads import on_a_loop
from tests.support.tokens import make_claims, sign

AUDIENCE = "api"
Lists = Callable[..., StatusLists]


@pytest.fixture
def server(rsa_key: rsa.RSAPrivateKey) -> Iterator[StatusServer]:
    """The issuer stand-in, publishing `rsa_key`."""
    served = StatusServer(rsa_key)
    yield served
    served.close()


@pytest.fixture
def now() -> FakeClock:
    """A hand-moved clock starting at the real time (list tokens are signed with real times)."""
    return FakeClock(time.time())


def _config(server: StatusServer, **options: Any) -> VerifierConfig:
    settings: dict[str, Any] = {
        "jwks_url": server.base_url + JWKS_PATH,
        "jwks_prefetch": False,
        "status_timeout": 1.0,
        "status_stale_seconds": 30.0,
        **options,
    }
    return VerifierConfig(issuer=server.base_url, audience=AUDIENCE, resource="http://api.test", **settings)


@pytest.fixture
def make_lists(server: StatusServer, now: FakeClock) -> Iterator[Lists]:
    """Build status list caches on the test server; by default on the hand-moved clock, with no thread."""
    made: list[StatusLists] = []

    def make(*, clock: Callable[[], float] | None = None, background: bool = False, **options: Any) -> StatusLists:
        config = _config(server, **options)
        lists = StatusLists(config, JwksClient(config), clock=clock or now, background=background)
        made.append(lists)
        return lists

    yield make
    for lists in made:
        lists.stop()
        lists.session.close()


def _put(server: StatusServer, key: rsa.RSAPrivateKey, name: str, values: list[int], **overrides: Any) -> str:
    uri = server.uri(name)
    server.put(name, sign_list(list_claims(uri, server.base_url, values, **overrides), key))
    return uri


def _ref(uri: str, idx: int) -> dict[str, Any]:
    return {"status": {"status_list": {"idx": idx, "uri": uri}}}


# -- refusing what the list says ------------------------------------------------------------


def test_a_valid_entry_passes_and_revoked_or_suspended_ones_are_refused(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0, 1, 2, 3], bits=2)
    lists = make_lists()
    lists.check(_ref(uri, 0))
    with pytest.raises(TokenRevoked) as revoked:
        lists.check(_ref(uri, 1))
    assert (revoked.value.reason, revoked.value.error, revoked.value.status) == (Reason.REVOKED, "invalid_token", 401)
    for idx in (2, 3):
        with pytest.raises(TokenRevoked) as suspended:
            lists.check(_ref(uri, idx))
        assert suspended.value.reason == Reason.SUSPENDED
    assert server.count("/statuslists/1") == 1


def test_a_token_without_status_fetches_nothing(make_lists: Lists, server: StatusServer) -> None:
    make_lists().check(make_claims())
    assert server.requests == []


def test_an_index_beyond_the_list_refuses_the_token(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0] * 8)
    with pytest.raises(StatusListInvalid) as caught:
        make_lists().check(_ref(uri, 8))
    assert caught.value.reason == Reason.STATUS_INVALID


@pytest.mark.parametrize(
    "path",
    [
        "/elsewhere/1",
        "/statuslists",
        "/statuslistsX/1",
        "/.well-known/jwks.json",
        "/statuslists/1#x",
        "/statuslists/../.well-known/jwks.json",
        "/statuslists/./1",
        "/statuslists/\\1",
        "/statuslists/\u00e9",
    ],
)
def test_a_list_outside_the_issuers_lists_is_never_fetched(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, path: str
) -> None:
    _put(server, rsa_key, "1", [0])
    with pytest.raises(StatusListInvalid):
        make_lists().check(_ref(server.base_url + path, 0))
    with pytest.raises(StatusListInvalid):
        make_lists().check(_ref("http://169.254.169.254/statuslists/1", 0))
    assert server.requests == []


def test_a_prefix_without_a_path_still_pins_the_origin(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0])
    lists = make_lists(status_uri_prefixes=(server.base_url,))
    for elsewhere in (f"{server.base_url}.evil.test/statuslists/1", f"{server.base_url}0/statuslists/1"):
        with pytest.raises(StatusListInvalid):
            lists.check(_ref(elsewhere, 0))
    lists.check(_ref(uri, 0))
    assert server.count("/statuslists/1") == 1


def test_an_allow_list_of_prefixes_replaces_the_issuers_own(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0])
    lists = make_lists(status_uri_prefixes=(server.base_url + "/status/",))
    with pytest.raises(StatusListInvalid):
        lists.check(_ref(uri, 0))
    assert server.requests == []
    make_lists(status_uri_prefixes=(server.base_url + "/statuslists/1",)).check(_ref(uri, 0))
    assert server.count("/statuslists/1") == 1


def test_an_issuers_list_is_fetched_from_the_address_the_api_reaches_it_by(
    server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    public = "http://issuer.public.test"
    uri = f"{public}/statuslists/1"
    server.put("1", sign_list(list_claims(uri, public, [0, 1]), rsa_key))
    config = VerifierConfig(
        issuer=public, audience=AUDIENCE, resource="http://api.test", jwks_url=server.base_url + JWKS_PATH
    )
    assert config.status_base_url == server.base_url
    assert config.status_index_url == server.base_url + INDEX_PATH
    lists = StatusLists(config, JwksClient(config), clock=now, background=False)
    lists.check(_ref(uri, 0))
    with pytest.raises(TokenRevoked):
        lists.check(_ref(uri, 1))
    assert server.count("/statuslists/1") == 1
    lists.session.close()


def test_a_forged_list_refuses_the_token_and_is_fetched_again_at_most_each_second(
    make_lists: Lists, server: StatusServer, other_rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, other_rsa_key, "1", [0])
    lists = make_lists()
    for _ in range(20):
        with pytest.raises(StatusListInvalid):
            lists.check(_ref(uri, 0))
    assert server.count("/statuslists/1") == 1
    now.advance(1.1)
    with pytest.raises(StatusListInvalid):
        lists.check(_ref(uri, 0))
    assert server.count("/statuslists/1") == 2


@pytest.mark.parametrize("body", [b"\xff\xfe not ascii", b"<html>not a list</html>", b"", b"a.b.c"])
def test_a_garbage_answer_refuses_the_token(make_lists: Lists, server: StatusServer, body: bytes) -> None:
    server.put("1", body, content_type="text/html")
    with pytest.raises(StatusListInvalid):
        make_lists().check(_ref(server.uri("1"), 0))


def test_an_oversized_list_refuses_the_token(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0] * 80_000)
    with pytest.raises(StatusListInvalid) as caught:
        make_lists(status_max_bytes=500).check(_ref(uri, 0))
    assert "larger than" in caught.value.detail


def test_a_list_too_long_once_inflated_refuses_the_token(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0] * 80_000)
    with pytest.raises(StatusListInvalid):
        make_lists(status_max_list_bytes=1000).check(_ref(uri, 0))


# -- refreshing -----------------------------------------------------------------------------


def test_a_refresh_is_conditional_and_a_304_keeps_the_list(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, rsa_key, "1", [0, 0])
    lists = make_lists()
    lists.check(_ref(uri, 1))
    now.advance(1)
    lists.refresh_due()
    assert server.requests[-1] == ("/statuslists/1", '"v1"')
    lists.check(_ref(uri, 1))
    _put(server, rsa_key, "1", [0, 1])
    now.advance(1)
    lists.refresh_due()
    lists.check(_ref(uri, 0))
    with pytest.raises(TokenRevoked):
        lists.check(_ref(uri, 1))
    assert [inm for path, inm in server.requests if path == "/statuslists/1"] == [None, '"v1"', '"v1"']


@pytest.mark.parametrize(("ttl", "max_age"), [(0, 0), (1, 0), (0, 1)])
def test_a_list_is_never_fetched_more_than_once_a_second(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock, ttl: int, max_age: int
) -> None:
    server.max_age = max_age
    uri = _put(server, rsa_key, "1", [0], ttl=ttl)
    lists = make_lists()
    for _ in range(30):
        lists.check(_ref(uri, 0))
        lists.refresh_due()
        now.advance(0.1)
    assert server.count("/statuslists/1") in (3, 4)  # 3 s: the first sight and one a second


def test_a_longer_ttl_is_honoured_up_to_the_refresh_interval(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    server.max_age = 60
    uri = _put(server, rsa_key, "1", [0], ttl=60)
    lists = make_lists(status_refresh_seconds=5)
    lists.check(_ref(uri, 0))
    for _ in range(105):
        now.advance(0.1)
        lists.refresh_due()
    assert server.count("/statuslists/1") == 3  # at 0, 5 and 10 s


def test_a_list_past_its_exp_is_fetched_unconditionally(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, rsa_key, "1", [0], exp=int(time.time()) + 2)
    lists = make_lists()
    lists.check(_ref(uri, 0))
    now.advance(3)
    lists.refresh_due()
    assert server.requests[-1] == ("/statuslists/1", None)


# -- outages ----------------------------------------------------------------------------------


def test_a_held_list_serves_through_the_stale_window_then_503(
    make_lists: Lists,
    server: StatusServer,
    rsa_key: rsa.RSAPrivateKey,
    now: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri = _put(server, rsa_key, "1", [0, 1])
    lists = make_lists(status_stale_seconds=30)
    lists.check(_ref(uri, 0))
    server.down = True
    caplog.set_level(logging.INFO, logger="jwt_verifier.status")
    for _ in range(25):
        now.advance(1)
        lists.refresh_due()
        lists.check(_ref(uri, 0))
        with pytest.raises(TokenRevoked):  # a revoked token stays refused throughout
            lists.check(_ref(uri, 1))
    failures = [r for r in caplog.records if r.getMessage().startswith("status list fetch failed")]
    assert len(failures) == 1  # once per outage, not per fetch or request
    now.advance(6)
    lists.refresh_due()
    with pytest.raises(StatusUnavailable) as caught:
        lists.check(_ref(uri, 0))
    assert (caught.value.status, caught.value.reason) == (503, Reason.STATUS_UNAVAILABLE)
    assert caught.value.response_headers()["Retry-After"]
    server.down = False
    now.advance(1)
    lists.refresh_due()
    lists.check(_ref(uri, 0))
    assert any(r.getMessage() == "status list fetched again" for r in caplog.records)


def test_a_list_is_not_used_past_its_exp_and_the_stale_window(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    # The issuer stays up but keeps serving a list whose `exp` passes: no fail-open forever.
    exp = now() + 5
    uri = _put(server, rsa_key, "1", [0], exp=exp)
    lists = make_lists(status_stale_seconds=10)
    lists.check(_ref(uri, 0))
    while now() < exp + 9.5:
        now.advance(0.5)
        lists.refresh_due()
        lists.check(_ref(uri, 0))
    now.advance(1)
    with pytest.raises(StatusUnavailable):
        lists.check(_ref(uri, 0))


def test_a_forged_refresh_keeps_the_list_held_before(
    make_lists: Lists,
    server: StatusServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    now: FakeClock,
) -> None:
    uri = _put(server, rsa_key, "1", [0, 1])
    lists = make_lists(status_stale_seconds=5)
    lists.check(_ref(uri, 0))
    _put(server, other_rsa_key, "1", [0, 0])  # an attacker would un-revoke entry 1
    now.advance(1)
    lists.refresh_due()
    with pytest.raises(TokenRevoked):
        lists.check(_ref(uri, 1))
    now.advance(5)
    with pytest.raises(StatusUnavailable):
        lists.check(_ref(uri, 0))


def test_a_list_never_fetched_while_the_issuer_is_down_is_503(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0])
    server.down = True
    lists = make_lists()
    for _ in range(5):
        with pytest.raises(StatusUnavailable):
            lists.check(_ref(uri, 0))
    assert server.count("/statuslists/1") == 1


@contextlib.contextmanager
def socketless() -> Iterator[int]:
    """Yield a loopback port that accepts nothing: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_issuer_is_503_within_the_timeout(make_lists: Lists) -> None:
    with socketless() as port:
        lists = make_lists(status_uri_prefixes=(f"http://127.0.0.1:{port}/",), status_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StatusUnavailable):
            lists.check(_ref(f"http://127.0.0.1:{port}/statuslists/1", 0))
    assert time.monotonic() - started < 2


def test_the_issuers_index_is_held_before_any_token_names_it(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uris = [_put(server, rsa_key, name, [0, 1]) for name in ("a", "b")]
    server.index = [*uris, "http://169.254.169.254/statuslists/x"]
    lists = make_lists()
    lists.refresh_due()
    assert server.count("/statuslists/a") == server.count("/statuslists/b") == 1
    server.down = True
    fetched = len(server.requests)
    for uri in uris:
        lists.check(_ref(uri, 0))
        with pytest.raises(TokenRevoked):
            lists.check(_ref(uri, 1))
    assert len(server.requests) == fetched


def test_a_list_the_index_no_longer_names_is_no_longer_kept_first(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    a, b, c = (_put(server, rsa_key, name, [0]) for name in ("a", "b", "c"))
    server.index = [a, b]
    lists = make_lists(status_max_lists=2, status_index_seconds=1)
    lists.refresh_due()
    server.index = [a]
    for _ in range(3):  # one re-read a second: list a, list b, then the index (the most overdue first)
        now.advance(1)
        lists.refresh_due()
    lists.check(_ref(c, 0))  # a third list: the one the index dropped makes room
    assert set(lists._lists) == {a, c}


def test_the_refresher_makes_at_most_one_request_a_second_in_all(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uris = [_put(server, rsa_key, name, [0]) for name in ("a", "b")]
    server.index = uris
    lists = make_lists(clock=time.time, background=True, status_index_seconds=1)  # all due every second
    lists.prefetch()
    until = time.monotonic() + 5
    while not lists.settled() and time.monotonic() < until:
        time.sleep(0.02)
    assert lists.settled()
    with server.lock:
        before = len(server.requests)
    started = time.monotonic()
    time.sleep(4.5)
    with server.lock:
        made = [path for path, _ in server.requests[before:] if path.startswith(INDEX_PATH)]
    elapsed = time.monotonic() - started
    assert len(made) <= math.floor(elapsed) + 1  # one a second: the index and both lists share it
    assert len(made) >= 3  # the budget is used, not starved
    assert set(made) == {INDEX_PATH, "/statuslists/a", "/statuslists/b"}  # each gets its turn


def test_settled_once_the_index_answered_and_its_lists_were_fetched(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, rsa_key, "a", [0])
    server.index = [uri, server.uri("missing")]
    lists = make_lists()
    assert lists.settled()  # not prefetching: nothing to wait for
    lists.prefetching = True  # what prefetch() sets, without its thread
    assert not lists.settled()
    server.down = True
    lists.refresh_due()
    assert not lists.settled()  # an issuer that answers 503 has not offered its lists yet
    server.down = False
    now.advance(0.2)  # starting up, the index is asked again after 0.1 s (then 0.2, 0.4, ... 1)
    lists.refresh_due()
    assert lists.settled()  # one list held, the other refused (404): both were tried
    lists.check(_ref(uri, 0))


def test_until_the_issuer_first_answers_its_index_is_asked_again_soon(
    make_lists: Lists, server: StatusServer, now: FakeClock
) -> None:
    server.down = True
    lists = make_lists(status_index_seconds=30)
    asked = []
    for _ in range(40):
        lists.refresh_due()
        asked.append(server.count(INDEX_PATH))
        now.advance(0.1)
    assert asked[-1] in (6, 7)  # at 0, 0.1, 0.3, 0.7, 1.5, 2.5, 3.5 s: doubling to 1 s
    server.down = False
    for _ in range(50):
        now.advance(0.1)
        lists.refresh_due()
    assert server.count(INDEX_PATH) == asked[-1] + 1  # answered: every status_index_seconds now


def test_the_index_is_asked_at_once_when_the_jwks_client_first_loads_keys(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "a", [0])
    server.index = [uri]
    server.down = True
    config = _config(server, jwks_prefetch=True)
    lists = make_lists(clock=time.time, background=True)
    lists.prefetch()
    time.sleep(2.5)  # the index has failed a few times: its retries are a second apart by now
    server.down = False
    jwks = JwksClient(config)
    jwks.subscribe(lists.keys_changed)
    asked = server.count(INDEX_PATH)
    started = time.monotonic()
    jwks.ensure_loaded()  # the issuer answers the JWKS: the index is asked at once, not a second later
    deadline = started + 0.4  # the retries alone would leave 0.6 s of every second unsettled
    while not lists.settled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lists.settled(), "the index was not asked at once"
    assert server.count(INDEX_PATH) > asked
    jwks.session.close()


def test_an_issuer_without_an_index_is_asked_again_only_each_minute(
    make_lists: Lists, server: StatusServer, now: FakeClock
) -> None:
    lists = make_lists()
    for _ in range(59):
        lists.refresh_due()
        now.advance(1)
    assert server.count(INDEX_PATH) == 1
    now.advance(1)
    lists.refresh_due()
    assert server.count(INDEX_PATH) == 2


def test_at_most_max_lists_are_held(make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey) -> None:
    uris = [_put(server, rsa_key, str(n), [0]) for n in range(4)]
    lists = make_lists(status_max_lists=2)
    for uri in uris:
        lists.check(_ref(uri, 0))
    assert len(lists._lists) == 2
    assert set(lists._lists) == set(uris[2:])


def test_the_first_sight_on_an_event_loop_asks_for_a_worker_thread(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0])
    lists = make_lists()

    async def on_the_loop() -> None:
        with loop_thread():  # what the FastAPI integration says around its call on the loop
            lists.check(_ref(uri, 0))

    with pytest.raises(StatusFetchNeeded):
        on_a_loop(on_the_loop)
    assert server.requests == []
    lists.check(_ref(uri, 0))
    on_a_loop(on_the_loop)  # held now: checked on the loop


def test_a_caller_that_did_not_say_it_is_on_a_loop_fetches_in_its_thread(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # A WSGI app called in a thread where some loop runs (Playwright's sync API leaves one in the
    # main thread): the Flask integration cannot hand the fetch to a worker thread, so it fetches.
    uri = _put(server, rsa_key, "1", [0])
    lists = make_lists()

    async def in_a_thread_with_a_loop() -> None:
        lists.check(_ref(uri, 0))

    on_a_loop(in_a_thread_with_a_loop)
    assert server.count("/statuslists/1") == 1


def test_concurrent_first_sights_share_one_fetch(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0])
    lists = make_lists()
    barrier = threading.Barrier(8)

    def check() -> None:
        barrier.wait()
        lists.check(_ref(uri, 0))

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(check) for _ in range(8)]:
            future.result(timeout=10)  # re-raises what the check raised
    assert server.count("/statuslists/1") == 1


def test_the_background_refresher_sees_a_revocation_within_two_seconds_at_one_fetch_a_second(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0, 0])
    lists = make_lists(clock=time.time, background=True)
    started = time.monotonic()
    lists.check(_ref(uri, 1))
    time.sleep(1.5)
    _put(server, rsa_key, "1", [0, 1])
    revoked_at = time.monotonic()
    while True:
        try:
            for _ in range(100):
                lists.check(_ref(uri, 1))
        except TokenRevoked:
            break
        assert time.monotonic() - revoked_at < 2.0, "the revocation was not seen within 2 s"
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    fetches = server.count("/statuslists/1")
    assert fetches <= elapsed + 1.5  # the first sight and at most one a second


# -- on every use of a token, through the verifier and the integrations -----------------------


def test_a_cached_token_is_refused_once_its_entry_is_revoked(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, rsa_key, "1", [0, 0, 0])
    lists = make_lists()
    verifier = Verifier(lists.keys, issuer=server.base_url, audience=AUDIENCE)
    checked = StatusChecked(verifier, lists)
    token = sign(make_claims(issuer=server.base_url, audience=AUDIENCE, **_ref(uri, 2)), rsa_key)
    assert checked.verify(token)["sub"] == "alice"
    assert checked.verify(token)["sub"] == "alice"
    assert token in verifier.cache  # stored on its second sight
    _put(server, rsa_key, "1", [0, 0, 1])
    now.advance(1)
    lists.refresh_due()
    for _ in range(3):
        with pytest.raises(TokenRevoked):
            checked.verify(token)
    assert token in verifier.cache  # the signature stays verified; the status is checked on each use


def _token(
    server: StatusServer, key: rsa.RSAPrivateKey, uri: str, idx: int, *, scope: str = "profile", **claims: Any
) -> str:
    return sign(make_claims(issuer=server.base_url, audience=AUDIENCE, scope=scope, **_ref(uri, idx), **claims), key)


# Minted an hour ago: its own `iat` vouches for nothing within the default stale window.
def _hour_old() -> dict[str, Any]:
    """Claims of a token minted an hour ago and still unexpired (computed when the test runs)."""
    now = int(time.time())
    return {"iat": now - 3600, "exp": now + 300}


def test_the_flask_integration_answers_401_revoked_and_503_never_500(
    server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0, 1])
    app = Flask(__name__)
    flask_auth = FlaskAuth(_config(server))
    flask_auth.init_app(app)
    auth = flask_protection(app)

    @app.get("/me")
    @flask_auth.require()
    def me() -> dict[str, str]:
        return {"sub": g.claims["sub"]}

    web = WsgiServer()
    web.mount(app)
    try:
        ok = requests.get(
            f"{web.base_url}/me", headers={"Authorization": f"Bearer {_token(server, rsa_key, uri, 0)}"}, timeout=10
        )
        assert ok.status_code == 200
        refused = requests.get(
            f"{web.base_url}/me", headers={"Authorization": f"Bearer {_token(server, rsa_key, uri, 1)}"}, timeout=10
        )
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
        server.down = True
        other = _put(server, rsa_key, "2", [0])
        unavailable = requests.get(
            f"{web.base_url}/me",
            headers={"Authorization": f"Bearer {_token(server, rsa_key, other, 0, **_hour_old())}"},
            timeout=10,
        )
        assert unavailable.status_code == 503
        assert unavailable.headers["Retry-After"]
        assert unavailable.json()["error"] == "temporarily_unavailable"
    finally:
        web.stop()
        assert isinstance(auth.verifier, StatusChecked)
        auth.verifier.lists.stop()


def test_the_fastapi_integration_fetches_off_the_loop_and_refuses_revoked_tokens(
    server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    uri = _put(server, rsa_key, "1", [0, 1])
    app = FastAPI()
    FastApiAuth(dataclasses.replace(_config(server), scopes_supported=("profile",))).init_app(app)

    @app.get("/me")
    def me(claims: Annotated[Claims, Depends(require_scope("profile"))]) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    with serve_asgi(app) as base_url:
        for _ in range(2):  # the first sight in a worker thread, then on the loop
            ok = requests.get(
                f"{base_url}/me", headers={"Authorization": f"Bearer {_token(server, rsa_key, uri, 0)}"}, timeout=10
            )
            assert ok.status_code == 200
        refused = requests.get(
            f"{base_url}/me", headers={"Authorization": f"Bearer {_token(server, rsa_key, uri, 1)}"}, timeout=10
        )
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        server.down = True
        other = _put(server, rsa_key, "2", [0])
        unavailable = requests.get(
            f"{base_url}/me",
            headers={"Authorization": f"Bearer {_token(server, rsa_key, other, 0, **_hour_old())}"},
            timeout=10,
        )
        assert unavailable.status_code == 503
        assert unavailable.headers["Retry-After"]
    verifier = fastapi_protection(app).verifier
    assert isinstance(verifier, StatusChecked)
    verifier.lists.stop()
    assert server.count("/statuslists/1") >= 1


# -- a token's own iat: the issuer vouched for it then -----------------------------------------


def test_a_token_issued_within_the_stale_window_is_accepted_while_its_list_cannot_be_had(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    # The issuer stopped right after minting it: the list was never fetched, but the token was
    # valid at its iat, as fresh a status as a list fetched then would give.
    uri = _put(server, rsa_key, "1", [0])
    server.down = True
    lists = make_lists(status_stale_seconds=30)
    lists.check({**_ref(uri, 0), "iat": int(now()) - 5})
    with pytest.raises(StatusUnavailable):
        lists.check({**_ref(uri, 0), "iat": int(now()) - 31})
    with pytest.raises(StatusUnavailable):  # no iat, or not a number: nothing vouches for it
        lists.check({**_ref(uri, 0), "iat": "recent"})


def test_a_stale_list_still_refuses_what_it_revoked_and_accepts_only_recent_tokens(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, rsa_key, "1", [0, 1])
    lists = make_lists(status_stale_seconds=10)
    lists.check(_ref(uri, 0))
    server.down = True
    now.advance(15)
    lists.refresh_due()
    with pytest.raises(TokenRevoked):
        lists.check({**_ref(uri, 1), "iat": int(now())})
    lists.check({**_ref(uri, 0), "iat": int(now()) - 2})
    with pytest.raises(StatusUnavailable):
        lists.check({**_ref(uri, 0), "iat": int(now()) - 60})


def test_a_list_the_issuer_says_it_does_not_serve_refuses_its_tokens_however_recent(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    # A 404 is the issuer answering, not an outage: status lists turned off (ISSUER_STATUS_LISTS)
    # or a list pruned. A token naming it has no status anyone can establish, so its own `iat` vouches
    # for nothing: a token revoked before the switch would otherwise come back for the stale window.
    _put(server, rsa_key, "1", [0])
    lists = make_lists(status_stale_seconds=30)
    with pytest.raises(StatusListInvalid):
        lists.check({**_ref(server.uri("missing"), 0), "iat": int(now()) - 1})


def test_a_held_list_the_issuer_stops_serving_refuses_its_tokens_at_the_next_read(
    make_lists: Lists, server: StatusServer, rsa_key: rsa.RSAPrivateKey, now: FakeClock
) -> None:
    uri = _put(server, rsa_key, "1", [0])
    lists = make_lists(status_stale_seconds=300)
    lists.check(_ref(uri, 0))
    with server.lock:
        del server.lists["/statuslists/1"]  # ISSUER_STATUS_LISTS=false from now on: 404
    now.advance(2)
    lists.refresh_due()
    with pytest.raises(StatusListInvalid):  # not served stale for 300 s, then 503: refused now
        lists.check({**_ref(uri, 0), "iat": int(now())})
