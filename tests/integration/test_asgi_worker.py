"""shared.asgi_worker under gunicorn: the reports API's uvicorn workers and their connection limits.

Each test runs the reports API under gunicorn with its worker class (no issuer: /healthz answers
without one), with the limits small enough to reach: gunicorn's `--keep-alive` and
`--worker-connections` through GUNICORN_CMD_ARGS, as an operator would set them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.processes import REPORTS_WORKER, GunicornService, answers, free_port, wait_until

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: reports.test\r\n\r\n"


def _reports(tmp_path: Path, gunicorn_args: str) -> GunicornService:
    """The reports API under gunicorn, one worker, its issuer and profile API a closed port."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "REPORTS_ISSUER": nowhere,
        "REPORTS_PROFILE_API_URL": nowhere,
        "REPORTS_DATA_DIR": str(tmp_path / "reports-data"),
        "REPORTS_TOKEN_PREFETCH": "false",
        "GUNICORN_CMD_ARGS": gunicorn_args,
    }
    service = GunicornService(
        "reports", "reports_api:create_app()", env, tmp_path / "reports.log", workers=1, worker_class=REPORTS_WORKER
    )
    service.start().wait_answering("/healthz")
    return service


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[GunicornService]:
    """At most three connections at once, a generous 30 s for a request head."""
    service = _reports(tmp_path, "--worker-connections 3 --keep-alive 30")
    yield service
    service.stop()


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[GunicornService]:
    """One second to send a request head, from the connection's opening or the previous answer."""
    service = _reports(tmp_path, "--keep-alive 1")
    yield service
    service.stop()


def _connect(service: GunicornService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=10)


def _closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to the socket's timeout) for the server to close: EOF, or a reset."""
    try:
        while sock.recv(65536):
            pass  # an answer, then the close
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_past_worker_connections_a_request_is_refused_503_at_once(limited: GunicornService) -> None:
    idle = [_connect(limited) for _ in range(2)]
    try:
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\n")  # a head under way, and one connection silent
        refused = requests.get(f"{limited.url}/healthz", timeout=10)
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()

    # The closed connections leave the worker's count as it notices them.
    wait_until(lambda: answers(f"{limited.url}/healthz"), timeout=10, what="an answer once the others closed")


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive(impatient: GunicornService) -> None:
    with _connect(impatient) as sock:
        sock.sendall(HEALTHZ)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert _closed_by_server(sock)


def test_a_connection_that_never_sends_a_request_is_closed(impatient: GunicornService) -> None:
    with _connect(impatient) as sock:
        assert _closed_by_server(sock)


def test_a_client_trickling_its_request_head_is_closed(impatient: GunicornService) -> None:
    """A slowloris: one header byte every 100 ms, never a complete head; the server closes it all the same."""
    with _connect(impatient) as sock:
        sock.settimeout(0.1)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: reports.test\r\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"X")
                if sock.recv(65536) == b"":
                    return
            except TimeoutError:
                continue  # nothing from the server yet: one more byte
            except (BrokenPipeError, ConnectionResetError):
                return
        pytest.fail("the server still held a connection trickling its request head after 10 s")
