"""Clients that ask for an answer and never read it, against the reports API's uvicorn workers.

shared.asgi_worker bounds how long a client may take to *send* a request (5 s, gunicorn's
`keepalive`) and how many connections a worker serves (`--worker-connections`), so that a slow
client costs a socket and a few kilobytes for a few seconds. Nothing bounds how long it may take
to *read* the answer: the Swagger UI bundle (about 1 MB, no token needed) asked for on a
connection whose receive window stays shut is queued whole in the kernel, and the worker closes
the connection gracefully, leaving the answer queued (FIN-WAIT-1) while the peer keeps its
window shut (the kernel's orphan timers, minutes). A few thousand such connections (measured: 3,000) held 500,000 pages of the
host's TCP memory (`tcp_mem` pressure is 383,877 here) and about 1,750 sockets in each worker,
past the 1,000 connections a worker is meant to hold, still after 48 s (the whole run).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import LoopbackStack, module_stack

ASSET = "/docs/swagger-ui-4.15.5/swagger-ui-bundle.js"
READERS = 100


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    yield from module_stack(tmp_path_factory.mktemp("slow-readers"), reports=True)


def _queued_on_port(port: int) -> list[int]:
    """Return the bytes queued to send on each TCP socket whose local port is `port` (listening ones aside)."""
    queued = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.rsplit(":", 1)[1], 16) == port and state != "0A":  # 0A: LISTEN
            queued.append(int(queues.split(":")[0], 16))
    return queued


def test_answers_nobody_reads_are_not_held_past_the_deadline(services: LoopbackStack) -> None:
    port = services.reports.port
    readers = []
    try:
        for _ in range(READERS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a window that stays (almost) shut
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {ASSET} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            readers.append(sock)
        time.sleep(14)  # the 10 s deadline (shared.asgi_worker.UNREAD_ANSWER_DEADLINE) and a margin
        held = [size for size in _queued_on_port(port) if size > 0]
        # Today: all 100 still hold about 1 MB each (about 100 MB of the host's TCP memory).
        assert len(held) == 0, f"{len(held)} answers still queued, {sum(held)} bytes"
    finally:
        for sock in readers:
            sock.close()
