"""Slow and half-sent requests against a real gunicorn with the shared settings (shared.worker).

A connection that has not sent its whole head must cost no thread: with every thread's worth
of such connections open, a normal request still answers at once, and the server closes them
after the header timeout (GUNICORN_HEADER_TIMEOUT, 1 s here).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from tests.support.processes import GunicornService, issuer_process, wait_until

HEADER_TIMEOUT = 1.0


def _issuer(run_dir: Path, env: dict[str, str]) -> Iterator[GunicornService]:
    """One issuer worker with two threads (a handful of stalled connections would take them all), with `env`."""
    service = issuer_process(run_dir, data_dir=run_dir / "issuer", workers=1, threads=2, env=env)
    service.start()
    try:
        service.wait_answering()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    """The issuer with a header timeout of HEADER_TIMEOUT."""
    yield from _issuer(tmp_path_factory.mktemp("slow-clients"), {"GUNICORN_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})


def connect(service: GunicornService, first_bytes: bytes) -> socket.socket:
    """Open a connection to `service` and send `first_bytes` (maybe none)."""
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def read_until(sock: socket.socket, end: bytes, responses: int) -> bytes:
    """Read from `sock` until `responses` answers have begun and the data ends with `end`."""
    sock.settimeout(5)
    data = b""
    while data.count(b"HTTP/1.1 ") < responses or not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def answer_before_close(sock: socket.socket, within: float) -> bytes | None:
    """Return what the server sent on `sock` before closing it, or None if it is still open after `within` seconds."""
    sock.settimeout(within)
    received = b""
    try:
        while data := sock.recv(4096):
            received += data
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Return whether the server closes `sock` (EOF or a reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_half_sent_and_silent_connections_cost_no_thread(issuer: GunicornService) -> None:
    with ExitStack() as stack:
        for _ in range(64):
            stack.enter_context(connect(issuer, b"GET /healthz HT"))
            stack.enter_context(connect(issuer, b""))
        started = time.monotonic()
        response = requests.get(f"{issuer.url}/healthz", timeout=HEADER_TIMEOUT / 2)
        assert response.status_code == 200
        assert time.monotonic() - started < HEADER_TIMEOUT / 2


def test_server_closes_connections_whose_head_is_late(issuer: GunicornService) -> None:
    partial = connect(issuer, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    silent = connect(issuer, b"")
    with partial, silent:
        assert closed_by_server(partial, within=HEADER_TIMEOUT + 5)
        assert closed_by_server(silent, within=HEADER_TIMEOUT + 5)


def test_slow_body_holds_no_thread_and_is_cut_off(issuer: GunicornService) -> None:
    head = b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    slow = [connect(issuer, head + b"Content-Length: 1000\r\n\r\ng") for _ in range(8)]
    with ExitStack() as stack:
        for sock in slow:
            stack.enter_context(sock)
        for _ in range(3):  # a byte a second, while others are served at once
            for sock in slow:
                with contextlib.suppress(OSError):  # already closed by the server
                    sock.sendall(b"r")
            started = time.monotonic()
            assert requests.get(f"{issuer.url}/healthz", timeout=HEADER_TIMEOUT / 2).status_code == 200
            assert time.monotonic() - started < HEADER_TIMEOUT / 2
            time.sleep(1)  # the trickle's pace is the point of the test
        assert all(closed_by_server(sock, within=HEADER_TIMEOUT + 5) for sock in slow)


def test_pipelined_and_kept_alive_requests_are_answered(issuer: GunicornService) -> None:
    body = b"grant_type=password"
    post = (
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(issuer, post[:10]) as sock:
        sock.sendall(post[10:] + get)  # the first request in two pieces, the second pipelined
        answers = read_until(sock, b'{"status":"ok"}\n', 2)
        assert answers.startswith(b"HTTP/1.1 400 ")  # the password grant without a username
        assert answers.count(b"HTTP/1.1 200 OK") == 1
        sock.sendall(get)  # the same connection, kept alive
        assert read_until(sock, b'{"status":"ok"}\n', 1).startswith(b"HTTP/1.1 200 OK")


def test_oversized_head_is_refused_at_once(issuer: GunicornService) -> None:
    with connect(issuer, b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n") as sock:
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 414 ")  # gunicorn's limit, at once


def master_threads(service: GunicornService) -> int:
    """Return how many threads gunicorn's master runs (the metrics exporter's among them)."""
    assert service.proc is not None
    return len(list(Path(f"/proc/{service.proc.pid}/task").iterdir()))


def idle_master_threads(service: GunicornService) -> int:
    """Return the master's thread count with no scrape in flight: the fewest seen over a second.

    A scrape's thread can outlive the answer its client already read by a moment, and it holds
    one of the exporter's slots while it does; counted into the baseline, it would leave the
    test waiting for one thread more than the exporter may start.
    """
    seen = []
    for _ in range(50):
        seen.append(master_threads(service))
        time.sleep(0.02)
    return min(seen)


def test_metrics_exporter_bounds_its_threads_and_closes_stalled_connections(issuer: GunicornService) -> None:
    from shared.metrics import EXPORTER_CONNECTIONS, EXPORTER_DEADLINE

    baseline = idle_master_threads(issuer)
    port = issuer.metrics_port
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
    for _ in range(16):
        stalled.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        stalled[-1].sendall(b"GET /metrics HT")
    with ExitStack() as stack:
        for sock in stalled:
            stack.enter_context(sock)
        wait_until(lambda: master_threads(issuer) >= baseline + EXPORTER_CONNECTIONS, what="the exporter's threads")
        most = max(master_threads(issuer) for _ in range(50))
        assert most <= baseline + EXPORTER_CONNECTIONS
        assert all(closed_by_server(sock, within=EXPORTER_DEADLINE + 5) for sock in stalled)
    assert requests.get(issuer.metrics_url, timeout=5).status_code == 200


def test_a_head_over_64_kib_is_refused_without_a_thread(issuer: GunicornService) -> None:
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 7000) for n in range(10))
    with connect(issuer, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields) as sock:  # no end of head
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")


def refused_with_json(sock: socket.socket, status: int) -> dict[str, str]:
    """Read the whole answer on `sock` (the server closes it): a JSON `status` with `Connection: close`."""
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), data
    assert b"\r\nContent-Type: application/json" in head
    assert b"\r\nConnection: close" in head
    answer: dict[str, str] = json.loads(body)
    assert answer["error"] == "invalid_request"
    return answer


POST_HEAD = b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
CHUNKED_HEAD = POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
LARGE_HEAD = POST_HEAD + b"Content-Length: 100000\r\n\r\n"
EXPECTING_HEAD = POST_HEAD + b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n"


def test_trickled_bodies_of_any_kind_hold_no_thread(issuer: GunicornService) -> None:
    trickles = {CHUNKED_HEAD: b"1\r\na\r\n", LARGE_HEAD: b"a", EXPECTING_HEAD: b"a"}
    slow = [(connect(issuer, head + trickle), trickle) for head, trickle in trickles.items() for _ in range(8)]
    with ExitStack() as stack:
        for sock, _ in slow:
            stack.enter_context(sock)
        for _ in range(3):  # a chunk or byte a second on each, while others are served at once
            for sock, trickle in slow:
                with contextlib.suppress(OSError):  # already answered and closed by the server
                    sock.sendall(trickle)
            started = time.monotonic()
            assert requests.get(f"{issuer.url}/healthz", timeout=HEADER_TIMEOUT / 2).status_code == 200
            assert time.monotonic() - started < HEADER_TIMEOUT / 2
            time.sleep(1)  # the trickle's pace is the point of the test
        assert all(closed_by_server(sock, within=HEADER_TIMEOUT + 5) for sock, _ in slow)


@pytest.mark.parametrize("coding", [b"chunked", b"xchunked", b"gzip, chunked"])
def test_a_body_of_any_transfer_coding_is_refused_411_at_once(issuer: GunicornService, coding: bytes) -> None:
    with connect(issuer, POST_HEAD + b"Transfer-Encoding: " + coding + b"\r\n\r\n5\r\nhello\r\n") as sock:
        answer = refused_with_json(sock, 411)  # no end of body sent: the answer does not wait for it
    assert "Content-Length" in answer["error_description"]


def test_a_body_over_64_kib_is_refused_413_at_once_and_not_drained(issuer: GunicornService) -> None:
    with connect(issuer, LARGE_HEAD + b"a" * 100) as sock:
        refused_with_json(sock, 413)


def test_expect_100_continue_is_answered_by_the_loop_and_the_body_awaited(issuer: GunicornService) -> None:
    body = b"grant_type=password"
    head = POST_HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    with connect(issuer, head) as sock:
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert b"HTTP/1.1 400 " in read_until(sock, b"}\n", 1)  # the password grant without a username


def test_stalled_metrics_connections_keep_the_log_json_lines(issuer: GunicornService) -> None:
    from shared.metrics import EXPORTER_DEADLINE

    before = len(issuer.log())
    port = issuer.metrics_port
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    stalled[0].sendall(b"GET /metr")  # a head that never ends; the other sends nothing
    with ExitStack() as stack:
        for sock in stalled:
            stack.enter_context(sock)
        assert all(closed_by_server(sock, within=EXPORTER_DEADLINE + 5) for sock in stalled)
    assert requests.get(issuer.metrics_url, timeout=5).status_code == 200  # served after them
    written = issuer.log()[before:]
    not_json = [line for line in written.splitlines() if not line.startswith("{")]
    assert not not_json, written
    assert all(json.loads(line)["level"] in ("debug", "info") for line in written.splitlines() if "metrics" in line)


@pytest.fixture
def crowded_issuer(tmp_path: Path) -> Iterator[GunicornService]:
    """The issuer holding at most 8 connections, with 30 s for a head: only making room frees a place."""
    yield from _issuer(tmp_path, {"GUNICORN_HEADER_TIMEOUT": "30", "GUNICORN_CMD_ARGS": "--worker-connections 8"})


def test_connections_left_idle_make_room_at_the_limit_oldest_first(crowded_issuer: GunicornService) -> None:
    """Connections opened and left idle, more than the worker holds, keep nobody else waiting."""
    with ExitStack() as stack:
        silent = [stack.enter_context(connect(crowded_issuer, b"")) for _ in range(20)]
        answer = requests.get(f"{crowded_issuer.url}/healthz", timeout=10)
        assert answer.status_code == 200
        # The worker holds at most 7 waiting connections: the oldest were closed, with nothing
        # to answer, and the newest kept. 14 of ours when a start-up probe's kept-alive
        # connection was still there to go first; 15 when it had timed out already (a slow start).
        went = [closed_by_server(sock, within=0.3) for sock in silent]
        assert went in ([True] * 14 + [False] * 6, [True] * 15 + [False] * 5), went
        begun = stack.enter_context(connect(crowded_issuer, b"GET /healthz HTTP/1.1\r\n"))
        begun.sendall(b"Host: x\r\n\r\n")
        assert read_until(begun, b'{"status":"ok"}\n', 1).startswith(b"HTTP/1.1 200 OK")

        for sock in [begun, *silent]:
            sock.close()

        # With only heads under way left to close, the oldest is answered 503 and closed: once
        # the worker has seen the closed ones go (a busy machine may take a while), at the 8th.
        heads = [stack.enter_context(connect(crowded_issuer, b"GET /healthz HT"))]
        while (refused := answer_before_close(heads[0], within=0.3)) is None:
            assert len(heads) < 20, "no head under way was closed to make room"
            heads.append(stack.enter_context(connect(crowded_issuer, b"GET /healthz HT")))
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"Retry-After: 1" in refused
        assert len(heads) >= 8
        assert not any(closed_by_server(sock, within=0.3) for sock in heads[1:])
    exported = requests.get(crowded_issuer.metrics_url, timeout=5).text
    closed = re.search(r"^jwt_split_connections_closed_for_room_total ([0-9.]+)$", exported, re.MULTILINE)
    assert closed is not None, exported
    assert float(closed.group(1)) >= 15  # and any connection of the start-up's probes still kept alive
