"""Gunicorn's worker class for the FastAPI service: `gunicorn -k shared.asgi_worker.AsgiWorker ...`.

uvicorn's worker for gunicorn, with the limits set for a service on the open network. Like the
gthread workers' loop (shared.worker), it buffers each whole request, head and body, before the
app sees any of it, under one deadline:
- a request (head and body) must arrive whole within gunicorn's `keepalive` seconds (5, from
  shared.gunicorn_conf) of the connection's opening or of its first byte, and an idle
  keep-alive connection is closed after as long (uvicorn's `timeout_keep_alive`). uvicorn itself
  has no deadline for a head or a body: a client sending a byte now and then would hold its
  connection, and a place under the limit below, for ever;
- a request line over 8 KiB is answered 414; more than 50 header fields, one over 8 KiB or a
  head over 16 KiB, 431 (RFC 6585 section 5); a body of any `Transfer-Encoding` 411 and one
  over 64 KiB 413 (RFC 9110 sections 15.5.12 and 15.5.14), at once and without reading it;
  `Expect: 100-continue` is answered here and the body awaited under the same deadline. These
  answers are JSON like the app's errors and close the connection;
- at most `--worker-connections` requests in progress at once per worker (gunicorn's setting
  for event-loop workers, default 1000; uvicorn's `limit_concurrency`): past that a request is
  answered 503 with `Retry-After` at once rather than queued without bound, and counted in
  `jwt_split_connections_refused_total`. Connections count toward the same limit, but one with
  no request in progress keeps its place only while no request needs it: at the limit, a whole
  request makes room by closing such connections (idle ones first, counted in
  `jwt_split_connections_closed_for_room_total`), so connections opened and left idle cost
  other clients no 503;
- an answer the client does not read: the kernel holds little of it (a 64 KiB send buffer,
  `shared.worker.SEND_BUFFER`, which Linux doubles) and the rest waits here; once more is queued than asyncio's
  high-water mark, the client has 10 seconds to read enough to fall below the low-water
  mark, or its connection is reset (what was queued goes with it). A
  client reading steadily, even slowly (20 KB a second), keeps it. The kernel drops a
  connection whose data stays unacknowledged, or whose window stays shut, 30 s
  (TCP_USER_TIMEOUT), closed by us or not;
- no websockets (`ws="none"`: an upgrade is served as a plain request) and no `Server` header.

uvicorn reads requests on the event loop, so a slow or half-open client costs a socket and a
few kilobytes, not a thread (the reason the gthread workers read a head before taking a
thread). Blocking calls (the upstream token and profile API) run in the worker's thread pool.

This module imports no prometheus_client at import time: gunicorn's master loads the worker
class before shared.gunicorn_conf chooses the metrics directory.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import sys
from typing import Any, ClassVar, cast

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from shared.worker import (
    BUSY,
    CONTINUE,
    MAX_BUFFERED_BODY,
    count_closed_for_room,
    drop_unread_answers,
    error_answer,
    read_head,
)

HEAD_LIMIT = 16 * 1024
LINE_LIMIT = 8 * 1024  # the request line, and each header field
FIELDS_LIMIT = 50
# Seconds an answer may stay queued above asyncio's high-water mark before its connection is
# dropped. Over loopback a client reading 20 KB a second opens its window 64 KiB at a time
# (the MSS), about every 3 s: it must keep its connection.
UNREAD_ANSWER_DEADLINE = 10
_LINE_END = re.compile(rb"\r?\n")


URI_TOO_LONG = error_answer(
    b"414 URI Too Long", "invalid_request", f"the request line is longer than {LINE_LIMIT} bytes"
)
HEADERS_TOO_LARGE = error_answer(
    b"431 Request Header Fields Too Large",
    "invalid_request",
    f"send at most {FIELDS_LIMIT} header fields of at most {LINE_LIMIT} bytes each, {HEAD_LIMIT} bytes in all",
)


def head_refusal(buffered: bytes | bytearray) -> bytes | None:
    """Return the 414 or 431 answer the request head begun in `buffered` has earned already, if any."""
    end = buffered.find(b"\r\n\r\n")
    bare = buffered.find(b"\n\n")
    ends = [e for e in (end, bare) if e >= 0]
    head = bytes(buffered[: min(ends)] if ends else buffered[: HEAD_LIMIT + 1])
    lines = _LINE_END.split(head)
    complete = ends or len(lines) > 1
    if len(lines[0]) > LINE_LIMIT or (not complete and len(head) > LINE_LIMIT):
        return URI_TOO_LONG
    fields = [line for line in lines[1:] if line]
    if len(head) > HEAD_LIMIT or len(fields) > FIELDS_LIMIT or any(len(line) > LINE_LIMIT for line in fields):
        return HEADERS_TOO_LARGE
    return None


def _count_refusal() -> None:
    from shared import metrics  # in the worker, after the master chose the metrics directory

    metrics.CONNECTIONS_REFUSED.inc()


class BufferingProtocol(H11Protocol):
    """uvicorn's h11 protocol, handing the app only whole requests that arrived within a deadline (see the module docstring)."""

    _timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None  # runs while the client does not read its answer
    _pending: bytearray
    _serving = False  # a request was handed to h11 and its answer is not complete yet
    _continued = False  # "100 Continue" sent for the request being buffered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request as the connection opens."""
        super().connection_made(transport)
        self._pending = bytearray()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            drop_unread_answers(sock)  # what an answer left unread may hold in the kernel, and how long
        self._start_clock()

    def pause_writing(self) -> None:
        """An answer is queued faster than the client reads it: it has `UNREAD_ANSWER_DEADLINE` seconds to catch up."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(UNREAD_ANSWER_DEADLINE, self._not_read)

    def resume_writing(self) -> None:
        """The client read what was queued: no deadline until the next time it falls behind."""
        super().resume_writing()
        self._stop_write_clock()

    def data_received(self, data: bytes) -> None:
        """Buffer `data`; hand a request over once it is whole, or answer what it has earned and close."""
        self._unset_keepalive_if_required()
        if self._timer is None and not self._serving:
            self._start_clock()  # after an answer uvicorn's keep-alive timer ran until this byte
        self._pending += data
        self._next_request()

    def on_response_complete(self) -> None:
        """Let uvicorn finish the cycle, then take up a request that arrived meanwhile."""
        self._serving = False
        super().on_response_complete()
        if self._pending and not self.transport.is_closing():
            self._start_clock()
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clocks with the connection."""
        self._stop_clock()
        self._stop_write_clock()
        super().connection_lost(exc)

    def _next_request(self) -> None:
        if self._serving:
            if len(self._pending) > HEAD_LIMIT + MAX_BUFFERED_BODY:
                self.flow.pause_reading()  # pipelined: the next request waits for this answer
            return
        refusal = head_refusal(self._pending)
        if refusal is not None:
            self._refuse(refusal)
            return
        head = read_head(self._pending)
        if head is None:
            return
        if head.refusal is not None:
            self._refuse(head.refusal)
            return
        if len(self._pending) < head.size:
            if head.expects_continue and not self._continued:
                self._continued = True
                self.transport.write(CONTINUE)  # the client waits for it; the deadline still runs
            return
        self._stop_clock()
        if self.limit_concurrency is not None and not self._make_room(self.limit_concurrency):
            _count_refusal()
            self._refuse(BUSY)
            return
        request, self._pending = bytes(self._pending[: head.size]), self._pending[head.size :]
        self._serving = True
        self._continued = False
        super().data_received(request)

    def _make_room(self, limit: int) -> bool:
        """Return whether this request may be served now, closing connections that wait for one if need be.

        Fewer than `limit` requests must be in progress, and fewer than `limit` connections open
        (uvicorn's `limit_concurrency` counts both). A connection with no request in progress holds
        its place only while no request needs it: at the limit, enough of them are closed to let
        this request in, those that sent nothing first (RFC 9112 section 9.6 lets a server close
        an idle connection at any time), then those still sending a request, which are answered
        503 with `Retry-After`. Connections opened and left idle, however many, so cost their
        opener a place each for as long as nobody else needs it, never another client a 503.
        """
        if len(self.tasks) >= limit:
            return False
        excess = len(self.connections) - limit + 1
        if excess <= 0:
            return True
        waiting = [
            other
            for other in self.connections
            if isinstance(other, BufferingProtocol) and other is not self and not other._serving
        ]
        if len(waiting) < excess:
            return False
        waiting.sort(key=lambda other: len(other._pending) > 0)  # stable: those that sent nothing first
        for other in waiting[:excess]:
            other._give_up_place()
            count_closed_for_room()
        return True

    def _give_up_place(self) -> None:
        """Close this connection, which has no request in progress, to make room for one that has."""
        self.connections.discard(self)  # at once: uvicorn counts it until `connection_lost` runs
        if self._pending:
            self._refuse(BUSY)
        else:
            self._stop_clock()
            self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        """Send `answer` and close, reading no further."""
        self._stop_clock()
        self._pending.clear()
        self.transport.write(answer)
        self.transport.close()

    def _start_clock(self) -> None:
        self._stop_clock()
        self._timer = self.loop.call_later(self.timeout_keep_alive, self._too_slow)

    def _stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_write_clock(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _not_read(self) -> None:
        """Drop a connection whose client left its answer unread: the bytes queued for it go with it.

        A reset (SO_LINGER of 0), not a close: a closed socket keeps what the kernel still holds
        of the answer until the kernel gives up.
        """
        self._write_timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _too_slow(self) -> None:
        self._timer = None
        if not self._serving:
            self.timeout_keep_alive_handler()  # uvicorn's own close of a connection with no request


class _Listener:
    """The master's listening socket as a worker's event loop sees it: one connection taken per wake-up.

    asyncio's server takes up to its `backlog` connections each time the socket is readable
    (2048 with uvicorn's default), so the first worker to wake takes a whole burst: 32
    connections opened at once all landed on one of four workers, which served them on one
    core while the others idled. Taking one per wake-up (nginx's `multi_accept off`) leaves
    the next to whichever worker is free first. `listen` keeps the backlog gunicorn's master
    listens with: the loop's `backlog` here means only how many connections it takes at a time.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def listen(self, backlog: int = 0) -> None:
        """Leave the master's backlog as it is."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class AsgiWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no type information
    """uvicorn under gunicorn, with request, keep-alive and concurrency limits (see the module docstring)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": BufferingProtocol,
        "ws": "none",
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
        self.config.h11_max_incomplete_event_size = HEAD_LIMIT + 4
        self.config.backlog = 1  # connections taken per wake-up of the event loop (see _Listener)

    async def _serve(self) -> None:
        """Serve on the master's sockets, taking one connection per wake-up (uvicorn_worker's own, but for that)."""
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=[cast(socket.socket, _Listener(sock)) for sock in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
