"""shared.asgi_worker under gunicorn: the reports API's uvicorn workers and their connection limits.

Each test runs the reports API under gunicorn with its worker class (no issuer: /healthz answers
without one), with the limits small enough to reach: gunicorn's `--keep-alive` and
`--worker-connections` through GUNICORN_CMD_ARGS, as an operator would set them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.asgi import SWAGGER_VERSION
from tests.support.processes import REPORTS_WORKER, GunicornService, answers, free_port, wait_until

BUNDLE = f"/docs/{SWAGGER_VERSION}/swagger-ui-bundle.js"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: reports.test\r\n\r\n"


def _reports(tmp_path: Path, gunicorn_args: str, workers: int = 1, issuer: str | None = None) -> GunicornService:
    """The reports API under gunicorn (one worker unless told), its issuer (unless given) and profile API a closed port."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "REPORTS_ISSUER": issuer or nowhere,
        "REPORTS_PROFILE_API_URL": nowhere,
        "REPORTS_DATA_DIR": str(tmp_path / "reports-data"),
        "REPORTS_TOKEN_PREFETCH": "false",
        "GUNICORN_CMD_ARGS": gunicorn_args,
    }
    service = GunicornService(
        "reports",
        "reports_api:create_app()",
        env,
        tmp_path / "reports.log",
        workers=workers,
        worker_class=REPORTS_WORKER,
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
def limited_issuer_hangs(tmp_path: Path) -> Iterator[GunicornService]:
    """At most three requests at once; the issuer accepts connections and never answers (a readiness check waits)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as hanging:
        service = _reports(tmp_path, "--worker-connections 3", issuer=f"http://127.0.0.1:{hanging.getsockname()[1]}")
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


def _unread_bundle(service: GunicornService) -> socket.socket:
    """A connection whose request (the 1 MB Swagger UI bundle) stays in progress while its answer is not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", service.port))
    sock.sendall(f"GET {BUNDLE} HTTP/1.1\r\nHost: reports.test\r\n\r\n".encode())
    assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")  # served, and the rest of it waits for us
    return sock


def _read_to_close(sock: socket.socket) -> bytes:
    """Read until the server closes (or resets) the connection; return what came."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while data := sock.recv(65536):
            received += data
    return received


def test_past_worker_connections_requests_in_progress_a_request_is_refused_503_at_once(
    limited_issuer_hangs: GunicornService,
) -> None:
    service = limited_issuer_hangs

    def check_readiness() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{service.url}/readyz", timeout=15)

    waiting = [threading.Thread(target=check_readiness) for _ in range(3)]
    for thread in waiting:
        thread.start()  # each readiness check waits for the hanging issuer: three requests in progress
    time.sleep(1)
    refused = requests.get(f"{service.url}/healthz", timeout=10)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "temporarily_unavailable"
    for thread in waiting:
        thread.join()
    wait_until(lambda: answers(f"{service.url}/healthz"), timeout=10, what="an answer once the others ended")
    exported = requests.get(service.metrics_url, timeout=10).text
    assert "jwt_split_connections_refused_total 1.0" in exported


def test_connections_waiting_for_a_request_make_room_for_a_request_at_the_limit(limited: GunicornService) -> None:
    """Connections opened and left idle (a flood of them) cost nobody else a 503: the silent go first."""
    silent = [_connect(limited) for _ in range(2)]
    begun = _connect(limited)
    begun.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head under way
    time.sleep(0.5)  # all three taken by the worker: its limit
    try:
        served = requests.get(f"{limited.url}/healthz", timeout=10)
        assert served.status_code == 200, served.text
        closed = []
        for sock in silent:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                closed.append(_read_to_close(sock))
        assert closed == [b""]  # one of them closed, with nothing to answer
        begun.sendall(b"Host: reports.test\r\n\r\n")
        assert begun.recv(65536).startswith(b"HTTP/1.1 200 ")  # kept: a silent one made the room
    finally:
        for sock in [*silent, begun]:
            sock.close()
    time.sleep(0.5)  # the worker sees them go

    # With only heads under way to close, one of them is answered 503 and closed.
    heads = [_connect(limited) for _ in range(3)]
    for sock in heads:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    time.sleep(0.5)
    assert requests.get(f"{limited.url}/healthz", timeout=10).status_code == 200
    answered = []
    for sock in heads:
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            answered.append(_read_to_close(sock))
        sock.close()
    assert len(answered) == 1, answered
    assert answered[0].startswith(b"HTTP/1.1 503 "), answered
    assert b"Retry-After: 1" in answered[0]
    exported = requests.get(limited.metrics_url, timeout=10).text
    closed_for_room = re.search(r"^jwt_split_connections_closed_for_room_total ([0-9.]+)$", exported, re.MULTILINE)
    assert closed_for_room is not None, exported
    assert float(closed_for_room.group(1)) >= 2
    assert "jwt_split_connections_refused_total 0.0" in exported


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


def _refused(service: GunicornService, request: bytes, status: int) -> dict[str, str]:
    """Send `request` and read the whole answer (the server closes): a JSON `status` with `Connection: close`."""
    with _connect(service) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert b"\r\nconnection: close" in head.lower()
    answer: dict[str, str] = json.loads(body)
    return answer


POST = b"POST /healthz HTTP/1.1\r\nHost: reports.test\r\n"


def test_a_body_over_64_kib_is_refused_413_without_reading_it(limited: GunicornService) -> None:
    answer = _refused(limited, POST + b"Content-Length: 100000\r\n\r\n" + b"a" * 100, 413)
    assert answer["error"] == "invalid_request"


@pytest.mark.parametrize("coding", [b"chunked", b"gzip, chunked"])
def test_a_body_of_any_transfer_coding_is_refused_411(limited: GunicornService, coding: bytes) -> None:
    _refused(limited, POST + b"Transfer-Encoding: " + coding + b"\r\n\r\n5\r\nhello\r\n", 411)


@pytest.mark.parametrize(
    "fields",
    [
        b"".join(b"X-Field-%d: a\r\n" % n for n in range(51)),  # more than 50 fields
        b"X-Big: " + b"a" * (8 * 1024) + b"\r\n",  # one field over 8 KiB
        b"".join(b"X-Field-%d: %s\r\n" % (n, b"a" * 4000) for n in range(5)),  # a head over 16 KiB
    ],
    ids=["fields", "field", "head"],
)
def test_too_many_or_too_large_header_fields_are_refused_431(limited: GunicornService, fields: bytes) -> None:
    _refused(limited, b"GET /healthz HTTP/1.1\r\nHost: reports.test\r\n" + fields + b"\r\n", 431)


def test_a_request_line_over_8_kib_is_refused_414(limited: GunicornService) -> None:
    _refused(limited, b"GET /healthz?" + b"a" * (8 * 1024) + b" HTTP/1.1\r\nHost: reports.test\r\n\r\n", 414)


def test_a_client_trickling_its_body_is_closed(impatient: GunicornService) -> None:
    """The head whole, the body one byte every 100 ms: the deadline covers the body too."""
    with _connect(impatient) as sock:
        sock.settimeout(0.1)
        sock.sendall(POST + b"Content-Length: 1000\r\n\r\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"a")
                if sock.recv(65536) == b"":
                    return
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return
        pytest.fail("the server still held a connection trickling its body after 10 s")


def test_expect_100_continue_is_answered_and_the_body_awaited(limited: GunicornService) -> None:
    body = b"{}"
    with _connect(limited) as sock:
        sock.sendall(POST + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 405 ")


def test_pipelined_requests_are_each_answered(limited: GunicornService) -> None:
    with _connect(limited) as sock:
        sock.sendall(HEALTHZ * 3)
        data = b""
        while data.count(b"HTTP/1.1 200 ") < 3:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk


def _answers_after_half_close(service: GunicornService, sent: bytes) -> tuple[list[bytes], float]:
    """Send `sent`, shut our sending side, read until the server closes; return the statuses and how long that took."""
    with _connect(service) as sock:
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)  # nothing more to send: RFC 9112 section 9.6 lets a client half-close
        started = time.monotonic()
        received = _read_to_close(sock)
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", received), time.monotonic() - started


def test_pipelined_requests_of_a_client_that_half_closed_are_each_answered_then_closed(
    limited: GunicornService,
) -> None:
    """The client's FIN ends what it sends, not what it asked: every whole request gets its answer (RFC 9112 9.3, 9.6).

    asyncio closes a transport when the peer's FIN arrives unless the protocol keeps it open;
    uvicorn's did not, so only the request being served was answered. Once the last answer is
    sent the server closes at once, not after its keep-alive (30 s here).
    """
    statuses, took = _answers_after_half_close(limited, HEALTHZ * 5)
    assert statuses == [b"200"] * 5
    assert took < 5, f"closed {took:.1f} s after the last answer: the keep-alive ran, not the client's FIN"


def test_a_request_cut_short_by_the_clients_fin_is_not_waited_for(limited: GunicornService) -> None:
    """Whole requests before it are answered; the half-sent one can never complete, so the server closes at once."""
    statuses, took = _answers_after_half_close(limited, HEALTHZ * 2 + b"GET /healthz HTTP/1.1\r\nHost: rep")
    assert statuses == [b"200", b"200"]
    assert took < 5, f"closed {took:.1f} s after the FIN: the head deadline ran, not the client's FIN"


def test_a_websocket_upgrade_is_served_as_a_plain_request(limited: GunicornService) -> None:
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nHost: reports.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with _connect(limited) as sock:
        sock.sendall(upgrade)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def _established_per_worker(service: GunicornService) -> list[int]:
    """Count, for each worker, the established connections on the service's port it holds."""
    port = f":{service.port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(port) and fields[3] == "01":  # local address, state ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    held = []
    for pid in service.worker_pids():
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                count += os.readlink(fd) in inodes
        held.append(count)
    return held


def test_a_burst_of_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    # asyncio took up to 2048 connections per wake-up: the first worker awake took a whole burst
    # and served it on one core while the others idled (wrk's 32 connections: 32 on one worker,
    # or 26 and 6; 2,600 requests a second instead of 4,400).
    service = _reports(tmp_path, "--keep-alive 30", workers=4)
    try:
        wait_until(lambda: service.log().count("Application startup complete") >= 4, timeout=30)
        # Up to three bursts, each on connections of its own. Before, every burst left two or
        # three of the four workers without any (32/0/0/0, 26/0/6/0): the first awake took it
        # whole. Now each worker takes one per wake-up, but how many each gets is the
        # scheduler's, and on a busy 2-core machine two workers once drained a burst before the
        # other two ran ([21, 11, 0, 0] in a clean-clone CI run; [23, 4, 4, 1] another time).
        spreads = []
        for _ in range(3):
            held = _burst(service, 32)
            spreads.append(held)
            if min(held) >= 1:
                break
        assert min(spreads[-1]) >= 1, f"a worker took none of any burst: {spreads}"
    finally:
        service.stop()


def _burst(service: GunicornService, count: int) -> list[int]:
    """Send `count` requests on new connections that wait in the accept queue for every worker at once.

    Return how many of them each worker holds once all are answered; the connections are then
    closed, and their server sides gone, before it returns.
    """
    burst: list[socket.socket] = []
    try:
        workers = service.worker_pids()
        for pid in workers:  # the burst waits in the accept queue, as one that came faster than they wake
            os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(count):
                burst.append(_connect(service))
                burst[-1].sendall(HEALTHZ)
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        for sock in burst:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        held = _established_per_worker(service)
        assert sum(held) == len(burst)
        return held
    finally:
        for sock in burst:
            sock.close()
        wait_until(
            lambda: sum(_established_per_worker(service)) == 0, timeout=10, what="the burst's connections to close"
        )
