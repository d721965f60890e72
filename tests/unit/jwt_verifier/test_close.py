"""close(): the verifier's background threads (`jwks-prefetch`, `jwks-refresh`, `status-refresh`) stop.

Lists and keys are served over real HTTP on 127.0.0.1 (tests/support/statuslists.py); the
threads are found by name among those alive, before and after `close()`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from flask import Flask

from jwt_verifier.config import VerifierConfig
from jwt_verifier.fastapi import BearerAuth as FastApiAuth
from jwt_verifier.flask import BearerAuth as FlaskAuth
from jwt_verifier.flask import protection as flask_protection
from jwt_verifier.jwks import JwksClient
from jwt_verifier.protection import build
from jwt_verifier.status import StatusChecked, StatusLists
from tests.support.statuslists import JWKS_PATH, StatusServer
from tests.support.threads import on_a_loop

NAMES = frozenset({"jwks-prefetch", "jwks-refresh", "status-refresh"})


@pytest.fixture
def server(rsa_key: rsa.RSAPrivateKey) -> Iterator[StatusServer]:
    """The issuer stand-in, publishing `rsa_key`."""
    served = StatusServer(rsa_key)
    yield served
    served.close()


def _config(server: StatusServer, **options: Any) -> VerifierConfig:
    return VerifierConfig(
        issuer=server.base_url,
        audience="api",
        resource="http://api.test",
        jwks_url=server.base_url + JWKS_PATH,
        status_timeout=1.0,
        **options,
    )


def _verifier_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name in NAMES}


def _until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def test_closing_a_protection_stops_every_thread_it_started(server: StatusServer) -> None:
    before = _verifier_threads()
    server.down = True  # no keys: the prefetch thread keeps retrying until closed
    found = build(_config(server))
    found.jwks.prefetch()
    _until(lambda: len(_verifier_threads() - before) == 2)  # jwks-prefetch and status-refresh
    assert {thread.name for thread in _verifier_threads() - before} == {"jwks-prefetch", "status-refresh"}
    started = _verifier_threads() - before
    found.close()
    assert not any(thread.is_alive() for thread in started)
    found.close()  # idempotent
    found.jwks.prefetch()  # a closed client starts no thread
    assert isinstance(found.verifier, StatusChecked)
    found.verifier.lists.prefetch()
    assert not _verifier_threads() - before


def test_a_closed_jwks_client_still_fetches_in_the_callers_thread_but_never_in_the_background(
    server: StatusServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    before = _verifier_threads()
    with JwksClient(_config(server, jwks_min_ttl=0.0, jwks_default_ttl=0.0, jwks_max_ttl=0.0)) as jwks:
        assert jwks.ensure_loaded()
    kid = jwks.kids[0]
    fetched = jwks.fetch_count
    time.sleep(0.01)
    assert jwks.held(kid) is not None  # stale: a refresh would start here, were the client open
    assert not _verifier_threads() - before
    assert jwks.fetch_count == fetched


def test_status_lists_as_a_context_manager_stop_their_refresher(server: StatusServer) -> None:
    before = _verifier_threads()
    config = _config(server)
    jwks = JwksClient(config)
    with StatusLists(config, jwks) as lists:
        lists.prefetch()
        refresher = _verifier_threads() - before
        assert {thread.name for thread in refresher} == {"status-refresh"}
    assert not any(thread.is_alive() for thread in refresher)
    lists.close()  # idempotent
    jwks.close()


def test_a_fastapi_apps_shutdown_closes_its_verifier(server: StatusServer) -> None:
    before = _verifier_threads()
    server.down = True
    app = FastAPI()
    FastApiAuth(_config(server)).init_app(app)
    started: set[threading.Thread] = set()

    async def serve() -> None:  # the app's lifespan as a server runs it: its end is the app's shutdown
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(_until, lambda: len(_verifier_threads() - before) == 2)
            started.update(_verifier_threads() - before)

    on_a_loop(serve)
    assert {thread.name for thread in started} == {"jwks-prefetch", "status-refresh"}
    assert not any(thread.is_alive() for thread in started)


def test_a_flask_apps_protection_closes(server: StatusServer) -> None:
    before = _verifier_threads()
    server.down = True
    app = Flask(__name__)
    FlaskAuth(_config(server)).init_app(app)
    _until(lambda: len(_verifier_threads() - before) == 2)
    started = _verifier_threads() - before
    flask_protection(app).close()
    assert not any(thread.is_alive() for thread in started)
