"""The attacker's third pass on the workers' connection limits, from outside.

It found, in the version before: a gthread worker's requests waiting for their clients to
take the previous answer were off the poller, so whatever their clients sent next stayed
unread and spared them for good (`_make_room` spares bytes arrived unread); they were polled
every 20 ms (a quarter of a core for 900 of them); a slow but steady reader lost pipelined
requests to the 5 s head deadline; and at the reports API, a connection opening past the
limit closed the newest client rather than a client not reading. Each test failed then.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.asgi import SWAGGER_VERSION
from tests.support.processes import GunicornService, issuer_process
from tests.support.stack import LoopbackStack

LIMIT = 20
PIPELINED_LOGIN = b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n" * 12


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[GunicornService]:
    service = issuer_process(
        tmp_path,
        data_dir=tmp_path / "issuer-data",
        workers=1,
        env={"GUNICORN_CMD_ARGS": f"--worker-connections {LIMIT}"},
    ).start()
    try:
        service.wait_answering()
        yield service
    finally:
        service.stop()


def _shut_window_client(port: int) -> socket.socket:
    """A client whose receive window shuts after about one answer, and which reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def _timed_get(port: int) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def test_pipelining_never_reading_clients_cannot_make_themselves_unclosable(issuer: GunicornService) -> None:
    """Fill the limit with draining connections that each sent one byte more: new clients wait in the listen queue.

    Before: a legitimate GET /healthz waits until the flood's header deadline (5 s) closes them
    (measured 2.7 s; the flood repeats for the cost of LIMIT connections every 5 s).
    Expected: the flood's connections, whose clients read none of their answers, make room.
    """
    flood: list[socket.socket] = []
    try:
        for _ in range(LIMIT - 1):
            flood.append(_shut_window_client(issuer.port))
        time.sleep(0.5)
        for sock in flood:
            sock.send(PIPELINED_LOGIN)
        time.sleep(1.0)
        for sock in flood:  # lands after the request waiting for its answer to be taken: never read
            sock.send(b"G")
        # The last places: taken the same way, no longer anyone's to close.
        late = [_shut_window_client(issuer.port) for _ in range(3)]
        for sock in late:
            sock.send(PIPELINED_LOGIN)
        flood += late
        time.sleep(1.0)
        for sock in late:
            sock.send(b"G")
        time.sleep(0.3)
        status, took = _timed_get(issuer.port)
    finally:
        for sock in flood:
            sock.close()
    assert status == b"HTTP/1.1 200 OK"
    assert took < 1.0, f"a legitimate request waited {took:.2f} s behind connections nobody can close"


def _answers(data: bytes) -> list[bytes]:
    """The status lines of the whole answers in `data`."""
    statuses = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        head = data[:end]
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        if len(data) < end + 4 + length:
            break
        statuses.append(head.split(b"\r\n", 1)[0])
        data = data[end + 4 + length :]
    return statuses


def test_a_steady_slow_reader_gets_every_pipelined_answer(issuer: GunicornService) -> None:
    """A client on a slow link (about 400 B/s, reading steadily) pipelines four GET /login.

    Before: the third request waits on the loop for the second answer to be acknowledged, under
    the header deadline (5 s) started when it was buffered; reading the first two answers takes
    longer, so the connection is closed after two answers, the other two dropped unanswered and
    unlogged. Expected: every answer, as for a steady reader without pipelining (the write side
    allows 30 s without progress, `UNREAD_ANSWER_TIMEOUT`).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", issuer.port))
    sock.settimeout(10)
    data = b""
    try:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n" * 4)
        while len(_answers(data)) < 4 and (chunk := sock.recv(40)):
            data += chunk
            time.sleep(0.1)
    finally:
        sock.close()
    assert _answers(data) == [b"HTTP/1.1 200 OK"] * 4


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_requests_waiting_for_an_acknowledgement_cost_no_cpu_at_the_defaults(tmp_path: Path) -> None:
    """900 connections (the default limit is 1,000 a worker) pipeline three GET /login and read nothing.

    Before: while their third requests wait on the loop for the second answer to be acknowledged,
    the worker wakes every 20 ms and asks the kernel twice about each (TCP_INFO, TIOCOUTQ):
    measured 0.78 s of CPU in 3 s, a quarter of a core a worker for connections doing nothing,
    renewed by the flood every 5 s. Expected: waiting costs about what silent connections cost.
    """
    issuer = issuer_process(tmp_path, data_dir=tmp_path / "issuer-data", workers=1).start()
    flood: list[socket.socket] = []
    try:
        issuer.wait_answering()
        [worker] = issuer.worker_pids()
        for _ in range(900):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", issuer.port))
            flood.append(sock)
        for sock in flood:
            sock.send(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n" * 3)
        time.sleep(
            4
        )  # the first two answers of each are written (1,800 pages: seconds of work); the third requests wait
        before = _cpu_seconds(worker)
        time.sleep(3)
        spent = _cpu_seconds(worker) - before
    finally:
        for sock in flood:
            sock.close()
        issuer.stop()
    assert spent < 0.3, f"the worker spent {spent:.2f} s of CPU in 3 s on connections waiting for nothing"


REPORTS_LIMIT = 5
ASSET = f"/docs/{SWAGGER_VERSION}/swagger-ui-bundle.js"  # about 1 MB, no token needed


@pytest.fixture
def reports(tmp_path: Path) -> Iterator[LoopbackStack]:
    stack = LoopbackStack(tmp_path, workers=1, reports=True)
    stack.reports.env["GUNICORN_CMD_ARGS"] = f"--worker-connections {REPORTS_LIMIT}"
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def test_never_readers_holding_every_place_do_not_make_each_new_client_the_one_closed(
    reports: LoopbackStack,
) -> None:
    """Every place of a reports worker is held by a client reading none of a 1 MB answer.

    A client connects; its request is on its way (50 ms: a real network's delay) when another
    connection opens. Before: the trim as a connection opens closes only connections waiting
    for a request, never one stalled on its answer, so the client, the only one waiting, is
    closed with nothing answered (and so is every new client until the readers' 10 s
    deadline, for the cost of one connection per client). Expected: as for a request's place,
    the longest-stalled never-reader is reset to make room, and the client is answered.
    """
    port = reports.reports.port
    readers: list[socket.socket] = []
    try:
        for _ in range(REPORTS_LIMIT):
            reader = _shut_window_client(port)
            reader.send(f"GET {ASSET} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            readers.append(reader)
        time.sleep(1.0)  # their answers stall
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            time.sleep(0.05)
            readers.append(socket.create_connection(("127.0.0.1", port)))  # the next connection
            time.sleep(0.05)
            client.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            try:
                while chunk := client.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
    finally:
        for sock in readers:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), f"the client got {answer[:40]!r}"
