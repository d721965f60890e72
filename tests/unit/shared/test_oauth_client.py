"""Unit tests for shared.oauth_client: a service's own tokens from a real issuer on loopback, and its key file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from issuer import create_app, extensions
from issuer.clients import Client
from issuer.settings import IssuerSettings
from jwt_verifier.jose import public_jwk
from shared.oauth_client import (
    IssuerError,
    IssuerUnavailable,
    KeyFileError,
    ServiceTokens,
    load_or_create_key,
    new_key_pem,
    post_token,
    read_answer,
)
from tests.support.fakes import CountingApp, FakeClock, JwksServer, WsgiServer, finishes_within
from tests.support.tokens import jwks_json

API = "jwt-split-api"
CLIENT_ID = "billing-job"

TokensFactory = Callable[..., ServiceTokens]


@dataclass
class CountedIssuer:
    """A real issuer app on loopback, counting the requests it gets."""

    url: str
    app: Flask
    counter: CountingApp
    server: WsgiServer

    @property
    def token_requests(self) -> int:
        """Return how many requests the token endpoint got."""
        return self.counter.count("/token")

    def register(self, client_id: str, key: rsa.RSAPrivateKey, *, scope: str = "profile") -> None:
        """Register a private_key_jwt client for the default API, its public key in a JWKS."""
        extensions.of(self.app).clients.add(
            Client(
                client_id,
                frozenset({"client_credentials"}),
                scopes=frozenset(scope.split()),
                audiences=frozenset({API}),
                auth_method="private_key_jwt",
                jwks=jwks_json(key),
            )
        )

    def public_key(self) -> rsa.RSAPublicKey:
        """Return the public half of the issuer's signing key."""
        return extensions.of(self.app).keys.signing_key().private_key.public_key()


@pytest.fixture
def issuer(issuer_settings: IssuerSettings, other_rsa_key: rsa.RSAPrivateKey) -> Iterator[CountedIssuer]:
    """A real issuer (90-second access tokens) on loopback, with the client `billing-job` registered."""
    server = WsgiServer()
    app = create_app(dataclasses.replace(issuer_settings, url=server.base_url, access_token_ttl=90))
    counter = CountingApp(app)
    server.mount(counter)
    live = CountedIssuer(server.base_url, app, counter, server)
    live.register(CLIENT_ID, other_rsa_key)
    yield live
    server.stop()


@pytest.fixture
def make_tokens(other_rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> Iterator[TokensFactory]:
    """Build the service tokens of `billing-job` on the fake clock; their HTTP sessions are closed afterwards."""
    made: list[ServiceTokens] = []

    def make(issuer_url: str, **options: Any) -> ServiceTokens:
        arguments: dict[str, Any] = {
            "client_id": CLIENT_ID,
            "key": other_rsa_key,
            "token_url": f"{issuer_url}/token",
            "issuer": issuer_url,
            "resource": API,
            "scope": "profile",
            "timeout": 2.0,
            "clock": clock,
            **options,
        }
        tokens = ServiceTokens(**arguments)
        made.append(tokens)
        return tokens

    yield make
    for tokens in made:
        tokens.session.close()


@pytest.fixture
def tokens(make_tokens: TokensFactory, issuer: CountedIssuer) -> ServiceTokens:
    """The service tokens of `billing-job` from the real issuer."""
    return make_tokens(issuer.url)


def _token_answer(**overrides: Any) -> bytes:
    answer = {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 300, **overrides}
    return json.dumps({name: value for name, value in answer.items() if value is not None}).encode()


def _claims(token: str, issuer: CountedIssuer) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, issuer.public_key(), algorithms=["RS256"], audience=API)
    return claims


# -- fetching and caching ----------------------------------------------------------------


def test_token_is_a_client_credentials_token_of_the_service_for_the_api(
    tokens: ServiceTokens, issuer: CountedIssuer
) -> None:
    claims = _claims(tokens.token(), issuer)
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        CLIENT_ID,
        CLIENT_ID,
        API,
        "profile",
    )
    assert claims["iss"] == issuer.url


def test_token_is_fetched_once_for_many_calls(tokens: ServiceTokens, issuer: CountedIssuer) -> None:
    first = tokens.token()
    assert all(tokens.token() == first for _ in range(20))
    assert issuer.token_requests == 1


@pytest.mark.parametrize(("ttl", "renew_after"), [(90, 60), (600, 540)], ids=["a-third-left", "renew-before-left"])
def test_token_is_renewed_once_a_third_of_its_life_or_renew_before_remains(
    make_tokens: TokensFactory,
    issuer_settings: IssuerSettings,
    other_rsa_key: rsa.RSAPrivateKey,
    clock: FakeClock,
    ttl: int,
    renew_after: int,
) -> None:
    server = WsgiServer()
    app = create_app(dataclasses.replace(issuer_settings, url=server.base_url, access_token_ttl=ttl))
    counter = CountingApp(app)
    server.mount(counter)
    try:
        live = CountedIssuer(server.base_url, app, counter, server)
        live.register(CLIENT_ID, other_rsa_key)
        tokens = make_tokens(live.url, renew_before=60.0)
        first = tokens.token()
        clock.advance(renew_after - 1)
        assert tokens.token() == first
        assert live.token_requests == 1
        clock.advance(1)
        second = tokens.token()
        assert second != first
        assert _claims(second, live)["sub"] == CLIENT_ID
        assert live.token_requests == 2
    finally:
        server.stop()


def test_concurrent_callers_share_one_fetch(tokens: ServiceTokens, issuer: CountedIssuer) -> None:
    callers = 8
    barrier = threading.Barrier(callers)

    def call() -> str:
        barrier.wait(timeout=10)
        return tokens.token()

    with ThreadPoolExecutor(callers) as pool:
        results = [future.result(timeout=30) for future in [pool.submit(call) for _ in range(callers)]]
    assert len(set(results)) == 1
    assert issuer.token_requests == 1


def test_forget_makes_the_next_call_fetch_a_new_token(tokens: ServiceTokens, issuer: CountedIssuer) -> None:
    first = tokens.token()
    tokens.forget(first)
    second = tokens.token()
    assert second != first
    assert issuer.token_requests == 2


def test_forgetting_an_older_token_keeps_the_newer_one(tokens: ServiceTokens, issuer: CountedIssuer) -> None:
    # Two requests refused with the same old token: the second refusal must not drop the new token.
    first = tokens.token()
    tokens.forget(first)
    second = tokens.token()
    tokens.forget(first)
    assert tokens.token() == second
    assert issuer.token_requests == 2


def test_an_api_refusing_every_token_costs_the_issuer_one_more_fetch_per_retry_interval(
    tokens: ServiceTokens, issuer: CountedIssuer, clock: FakeClock
) -> None:
    # Each caller of the API would otherwise make the service ask the issuer again.
    token = tokens.token()
    for _ in range(5):
        tokens.forget(token)
        token = tokens.token()
    assert issuer.token_requests == 2
    clock.advance(tokens.retry_interval)
    tokens.forget(token)
    assert tokens.token() != token
    assert issuer.token_requests == 3


# -- the issuer down, slow or refusing ---------------------------------------------------


def test_unreachable_issuer_while_a_valid_token_is_held_uses_that_token_until_it_expires(
    tokens: ServiceTokens, issuer: CountedIssuer, clock: FakeClock
) -> None:
    first = tokens.token()
    issuer.server.stop()
    clock.advance(60)  # a third of its life left: time to renew, but the issuer is gone
    assert tokens.token() == first
    clock.advance(29.9)
    assert tokens.token() == first
    clock.advance(0.1)
    with pytest.raises(IssuerUnavailable, match="could not be reached"):
        tokens.token()


def test_a_client_deleted_at_the_issuer_keeps_its_valid_token_until_it_expires(
    tokens: ServiceTokens, issuer: CountedIssuer, clock: FakeClock
) -> None:
    # The API is the judge of a token it holds; the refusal shows once that token has expired.
    first = tokens.token()
    assert extensions.of(issuer.app).clients.delete(CLIENT_ID)
    clock.advance(60)
    assert tokens.token() == first
    assert issuer.token_requests == 2
    clock.advance(30)
    with pytest.raises(IssuerError, match="client authentication failed") as caught:
        tokens.token()
    assert caught.value.status == 502


def test_unreachable_issuer_without_a_token_is_unavailable(make_tokens: TokensFactory, dead_url: str) -> None:
    with pytest.raises(IssuerUnavailable, match="could not be reached") as caught:
        make_tokens(dead_url.removesuffix("/.well-known/jwks.json")).token()
    assert caught.value.status == 503


def test_refusal_of_an_unregistered_client_is_a_502_saying_only_what_the_issuer_said(
    make_tokens: TokensFactory, issuer: CountedIssuer
) -> None:
    with pytest.raises(IssuerError) as caught:
        make_tokens(issuer.url, client_id="nobody-registered-me").token()
    assert not isinstance(caught.value, IssuerUnavailable)
    with Flask(__name__).app_context():
        response = caught.value.to_response()
    assert response.status_code == 502
    assert response.get_json() == {
        "error": "bad_gateway",
        "error_description": "the issuer refused: client authentication failed",
    }


def test_a_failed_fetch_leaves_the_issuer_alone_for_the_retry_interval(
    make_tokens: TokensFactory, jwks_server: JwksServer, clock: FakeClock
) -> None:
    jwks_server.answer(503, b'{"error": "temporarily_unavailable"}')
    tokens = make_tokens(jwks_server.base_url, retry_interval=5.0)
    for _ in range(3):
        with pytest.raises(IssuerUnavailable):
            tokens.token()
    assert jwks_server.request_count == 1
    clock.advance(5)
    jwks_server.answer(200, _token_answer())
    assert tokens.token() == "a.b.c"
    assert jwks_server.request_count == 2


def test_callers_waiting_on_a_failing_fetch_share_its_failure(
    make_tokens: TokensFactory, jwks_server: JwksServer
) -> None:
    # A black hole: each request waits out the timeout. Callers must not queue up for one each.
    jwks_server.hold()
    tokens = make_tokens(jwks_server.base_url, timeout=1.0)
    callers = 4
    barrier = threading.Barrier(callers)

    def call() -> None:
        barrier.wait(timeout=10)
        tokens.token()

    started = time.monotonic()
    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(call) for _ in range(callers)]
        for future in futures:
            with pytest.raises(IssuerUnavailable):
                future.result(timeout=30)
    jwks_server.release()
    assert jwks_server.request_count == 1
    assert time.monotonic() - started < 3


def test_a_renewal_in_flight_does_not_hold_up_callers_while_the_token_is_valid(
    make_tokens: TokensFactory, jwks_server: JwksServer, clock: FakeClock
) -> None:
    jwks_server.answer(200, _token_answer(access_token="first", expires_in=90))
    tokens = make_tokens(jwks_server.base_url, timeout=5.0)
    assert tokens.token() == "first"
    clock.advance(61)
    jwks_server.answer(200, _token_answer(access_token="second", expires_in=90))
    jwks_server.hold()
    with ThreadPoolExecutor(2) as pool:
        renewing = pool.submit(tokens.token)
        jwks_server.wait_for_requests(2)
        # The renewal waits on the issuer; another caller gets the token in hand at once.
        assert pool.submit(tokens.token).result(timeout=1) == "first"
        jwks_server.release()
        assert renewing.result(timeout=10) == "second"
    assert tokens.token() == "second"


def test_an_answer_trickling_in_past_the_deadline_is_unavailable(
    make_tokens: TokensFactory, jwks_server: JwksServer
) -> None:
    # Each byte comes well within the read timeout, so only an overall deadline stops it.
    jwks_server.answer(200, _token_answer())
    jwks_server.trickle = True
    jwks_server.trickle_interval = 0.1
    tokens = make_tokens(jwks_server.base_url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(IssuerUnavailable):
        tokens.token()
    assert time.monotonic() - started < 3


class _TrickleHeaders(socketserver.BaseRequestHandler):
    """Answer with a status line, then one header byte every 50 ms until the server stops."""

    server: _TricklingServer

    def handle(self) -> None:
        self.server.arrived.set()
        self.request.sendall(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(OSError):
            while not self.server.stopped.wait(0.05):
                self.request.sendall(b"X")


class _TricklingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TrickleHeaders)
        self.stopped = threading.Event()
        self.arrived = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def trickling_issuer() -> Iterator[_TricklingServer]:
    """A token endpoint whose headers never end: no read ever times out."""
    server = _TricklingServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stopped.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_fetch_whose_headers_never_end_gives_up_and_so_do_its_waiters(
    make_tokens: TokensFactory, trickling_issuer: _TricklingServer
) -> None:
    tokens = make_tokens(trickling_issuer.url, timeout=0.3)
    pool = ThreadPoolExecutor(1)
    try:
        stuck = pool.submit(tokens.token)
        assert trickling_issuer.arrived.wait(timeout=5)
        started = time.monotonic()
        with pytest.raises(IssuerUnavailable):
            tokens.token()
        assert time.monotonic() - started < 3
        with pytest.raises(IssuerUnavailable):
            stuck.result(timeout=3)  # on its own: the server still sends a byte every 50 ms
    finally:
        trickling_issuer.stopped.set()
        pool.shutdown(wait=True)


def test_an_oversized_answer_is_unavailable(make_tokens: TokensFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(200, _token_answer(padding="x" * 2_000_000))
    with pytest.raises(IssuerUnavailable):
        make_tokens(jwks_server.base_url).token()


def test_a_redirect_is_not_followed(make_tokens: TokensFactory, jwks_server: JwksServer) -> None:
    # A 307 would make requests post the client assertion again, wherever the Location says.
    jwks_server.answer(307, b"{}", {"Location": "/elsewhere", "Content-Type": "application/json"})
    with pytest.raises(IssuerError):
        make_tokens(jwks_server.base_url).token()
    assert jwks_server.paths == ["/token"]


NESTED = "[" * 20_000 + "]" * 20_000


@pytest.mark.parametrize(
    "body",
    [
        _token_answer(expires_in=None),
        _token_answer(expires_in=True),
        _token_answer(expires_in=-5),
        _token_answer(expires_in=0),
        _token_answer(expires_in="300"),
        _token_answer(expires_in=300.5),
        _token_answer(expires_in={"seconds": 300}),
        _token_answer(access_token="").replace(b'""', NESTED.encode()),
        _token_answer().replace(b"300", NESTED.encode()),
        _token_answer().replace(b"300", b"1e999"),
        _token_answer(access_token="t\u00f8ken"),
        _token_answer(access_token="a.b.c\r\nX-Injected: 1"),
        _token_answer(access_token="x" * 20_000),
    ],
    ids=[
        "missing",
        "bool",
        "negative",
        "zero",
        "string",
        "fraction",
        "object",
        "nested-token",
        "nested-lifetime",
        "infinite",
        "non-ascii-token",
        "header-breaking-token",
        "huge-token",
    ],
)
def test_garbled_token_answers_are_unavailable(
    make_tokens: TokensFactory, jwks_server: JwksServer, body: bytes
) -> None:
    jwks_server.answer(200, body)
    with pytest.raises(IssuerUnavailable):
        make_tokens(jwks_server.base_url).token()


def test_a_huge_lifetime_is_held_at_most_a_day(
    make_tokens: TokensFactory, jwks_server: JwksServer, clock: FakeClock
) -> None:
    jwks_server.answer(200, _token_answer(expires_in=10**30))
    tokens = make_tokens(jwks_server.base_url)
    assert tokens.token() == "a.b.c"
    clock.advance(86_400)
    tokens.token()
    assert jwks_server.request_count == 2


def test_failures_are_logged_without_the_assertion_or_a_token(
    make_tokens: TokensFactory, issuer: CountedIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(IssuerError):
        make_tokens(issuer.url, client_id="nobody-registered-me").token()
    failures = [record for record in caplog.records if record.name == "shared.oauth_client"]
    assert [record.__dict__["fields"] for record in failures] == [
        {"client_id": "nobody-registered-me", "reason": "the issuer refused: client authentication failed"}
    ]
    # No JWT (an assertion or a token) anywhere in any record.
    assert not any("eyJ" in str(record.__dict__) for record in caplog.records)


# -- the key file ------------------------------------------------------------------------


def test_load_or_create_key_creates_a_private_file_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "service" / "client-key.pem"
    key = load_or_create_key(path)
    assert key.key_size == 2048
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [entry.name for entry in path.parent.iterdir()] == ["client-key.pem"]  # no temporary file left


def test_load_or_create_key_reuses_the_key(tmp_path: Path) -> None:
    path = tmp_path / "client-key.pem"
    first = load_or_create_key(path)
    assert public_jwk(load_or_create_key(path).public_key()) == public_jwk(first.public_key())


def _load_kid(path: str, barrier: Barrier, results: Queue[str]) -> None:
    barrier.wait(timeout=60)
    results.put(public_jwk(load_or_create_key(Path(path)).public_key())["kid"])


def test_processes_creating_the_key_at_once_agree_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = 4
    barrier = context.Barrier(workers)
    results: Queue[str] = context.Queue()
    path = tmp_path / "data" / "client-key.pem"
    processes = [context.Process(target=_load_kid, args=(str(path), barrier, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    kids = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert len(set(kids)) == 1
    assert kids[0] == public_jwk(load_or_create_key(path).public_key())["kid"]
    assert [entry.name for entry in path.parent.iterdir()] == ["client-key.pem"]


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _encrypted_pem() -> bytes:
    key = serialization.load_pem_private_key(new_key_pem(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key at all\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"\xff\xfe"],
    ids=["empty", "text", "bad-pem", "binary"],
)
def test_a_key_file_that_is_not_a_key_is_a_clear_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "client-key.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=f"^{path} ") as caught:
        load_or_create_key(path)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__  # no traceback of the PEM parser under ours


@pytest.mark.parametrize("make_pem", [_ec_pem, _encrypted_pem], ids=["ec-key", "encrypted"])
def test_a_key_file_holding_another_kind_of_key_is_a_clear_error(tmp_path: Path, make_pem: Callable[[], bytes]) -> None:
    path = tmp_path / "client-key.pem"
    path.write_bytes(make_pem())
    with pytest.raises(KeyFileError, match=f"^{path} "):
        load_or_create_key(path)


def test_an_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "client-key.pem"
    path.mkdir()  # a directory where the key should be: unreadable as a file, even by root
    with pytest.raises(KeyFileError, match=f"^{path} "):
        load_or_create_key(path)


def test_a_key_file_others_can_read_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "client-key.pem"
    path.write_bytes(new_key_pem())
    os.chmod(path, 0o644)
    load_or_create_key(path)
    warnings = [record for record in caplog.records if record.name == "shared.oauth_client"]
    assert [(record.levelno, record.__dict__["fields"]) for record in warnings] == [
        (logging.WARNING, {"path": str(path)})
    ]
    assert "0600" in warnings[0].getMessage()


@pytest.mark.parametrize("part", ["headers", "body"])
def test_read_answer_ends_within_its_timeout_when_the_answer_trickles(jwks_server: JwksServer, part: str) -> None:
    # A byte every half second: no read ever times out, so only a deadline on the whole answer ends it.
    jwks_server.answer(200, _token_answer(padding="x" * 200))
    jwks_server.trickle_in(part)
    session = requests.Session()
    with pytest.raises(requests.RequestException):
        finishes_within(3, jwks_server, lambda: read_answer(session, "GET", jwks_server.url, timeout=1.0))


def test_post_token_to_a_trickling_issuer_is_unavailable_within_its_timeout(jwks_server: JwksServer) -> None:
    jwks_server.trickle_in("headers")
    with pytest.raises(IssuerUnavailable):
        finishes_within(3, jwks_server, lambda: post_token(requests.Session(), jwks_server.url, {}, 1.0))
