"""Clients that read their answers slowly, or not at all: the first keep their connection, the second leave no trace.

Answers nobody reads are bounded (shared.worker.drop_unread_answers: a 64 KiB send buffer and
a 30 s TCP_USER_TIMEOUT, RFC 5482; shared.asgi_worker: a reset after 10 s above the high-water
mark). A client on a slow link reading 20 KB a second, every second, is not one of them: it must
keep its connection, however long the answer takes (the 1 MB Swagger UI bundle, 50 s). Over
loopback it opens its window a whole MSS (64 KiB) at a time, about every 3 s; with the 5 s
TCP_USER_TIMEOUT first tried, the kernel reset it after about 160 KB (8 s). The test reads
500 KB (25 s, past both deadlines twice over) rather than the whole answer: CI time.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from shared.asgi import SWAGGER_VERSION
from tests.support.stack import LoopbackStack, module_stack

BUNDLE = f"/docs/{SWAGGER_VERSION}/swagger-ui-bundle.js"
RATE = 20_000  # bytes a second, read a kilobyte at a time
ENOUGH = 500_000  # bytes read before the client is satisfied: 25 s at RATE
CLIENTS = 40  # connections that never read, more than the issuer has threads


@pytest.fixture(scope="module")
def reports_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    """One loopback stack with the reports API (the asset does not depend on the issuer's database)."""
    yield from module_stack(tmp_path_factory.mktemp("steady-readers"), workers=1, reports=True)


def _read_steadily(url: str, path: str, rate: int, enough: int) -> tuple[bytes, bytes, str | None]:
    """GET `path` and read `enough` bytes of the answer at `rate` bytes a second; return its head, its body and how it ended early."""
    host, _, port = url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        received = bytearray()
        started = time.monotonic()
        failure = None
        while True:
            try:
                data = sock.recv(1024)
            except OSError as exc:
                failure = f"{exc!r} after {time.monotonic() - started:.1f} s"
                break
            if not data:
                failure = f"closed after {time.monotonic() - started:.1f} s"
                break
            received += data
            if len(received) >= enough:
                break
            ahead = len(received) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return head, body, failure


def test_a_client_reading_20_kb_a_second_keeps_its_connection_past_every_deadline(reports_stack: LoopbackStack) -> None:
    head, body, failure = _read_steadily(reports_stack.reports_url, BUNDLE, RATE, ENOUGH)
    assert head.startswith(b"HTTP/1.1 200"), head
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert len(lengths) == 1, head
    assert lengths[0] > 1_000_000, head  # more than the client reads: the server was still sending
    assert failure is None, f"dropped after {len(body)} of {lengths[0]} bytes: {failure}"
    assert len(head) + 4 + len(body) >= ENOUGH


def test_a_client_that_never_reads_leaves_no_traceback_in_the_issuer_log(reports_stack: LoopbackStack) -> None:
    """The worker's write times out (5 s); the issuer's log says one line of it, never a traceback.

    Any client may do this as often as it likes: an ERROR with a traceback per connection is a
    log (and an alert) anyone can fill.
    """
    host, _, port = reports_stack.issuer_url.removeprefix("http://").partition(":")
    before = len(reports_stack.issuer_logs())
    request = f"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() * 200
    with contextlib.ExitStack() as held:
        for _ in range(CLIENTS):
            sock = held.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(request)
        time.sleep(8)  # past the 5 s write timeout of the issuer's threads: it has given them up
    logged = reports_stack.issuer_logs()[before:]
    assert "Traceback" not in logged, logged[logged.find("Traceback") - 200 :][:1500]
