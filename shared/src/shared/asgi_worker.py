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
  head over 16 KiB, 431 (RFC 6585 section 5); a field folded onto the next line, 400 (RFC 9112
  section 5.2); a body of any `Transfer-Encoding` 411 and one
  over 64 KiB 413 (RFC 9110 sections 15.5.12 and 15.5.14), at once and without reading it;
  `Expect: 100-continue` is answered here and the body awaited under the same deadline. These
  answers are JSON like the app's errors and close the connection;
- at most `--worker-connections` requests in progress at once per worker (gunicorn's setting
  for event-loop workers, default 1000; uvicorn's `limit_concurrency`): past that a request is
  answered 503 with `Retry-After` at once rather than queued without bound, and counted in
  `jwt_split_connections_refused_total`. Connections count toward the same limit, but one that
  holds its place for nothing (silent, still sending a request, or its client reading none of
  its answer, whose request then counts for nothing either) keeps it only while nobody needs
  it: at the limit, a connection opened or a whole request closes those waiting longest (503 for
  a request under way, a reset for a client not reading); counted in
  `jwt_split_connections_closed_for_room_total`. A connection whose bytes have arrived unread
  is never closed so. Connections opened and left idle, or asking and never reading, cost
  other clients no 503;
- an answer the client does not read: the kernel holds little of it (a 64 KiB send buffer,
  `shared.worker.SEND_BUFFER`, which Linux doubles) and the rest waits here; once more is queued than asyncio's
  high-water mark, the client has 10 seconds to read enough to fall below the low-water
  mark, or its connection is reset (what was queued goes with it). A
  client reading steadily, even slowly (20 KB a second), keeps it. The kernel drops a
  connection whose data stays unacknowledged, or whose window stays shut, 30 s
  (TCP_USER_TIMEOUT), closed by us or not;
- a client that shuts its sending side (FIN) after pipelining requests gets an answer to each
  request it sent whole, then the close (asyncio would close at the FIN);
- no websockets (`ws="none"`: an upgrade is served as a plain request) and no `Server` header.

uvicorn reads requests on the event loop, so a slow or half-open client costs a socket and a
few kilobytes, not a thread (the reason the gthread workers read a head before taking a
thread). Blocking calls (the upstream token and profile API) run in the worker's thread pool.

This module imports no prometheus_client at import time: gunicorn's master loads the worker
class before shared.gunicorn_conf chooses the metrics directory.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import struct
import sys
from collections.abc import Iterator
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
    unread_bytes,
)

HEAD_LIMIT = 16 * 1024
LINE_LIMIT = 8 * 1024  # the request line, and each header field
FIELDS_LIMIT = 50
# Seconds an answer may stay queued above asyncio's high-water mark before its connection is
# dropped. Over loopback a client reading 20 KB a second opens its window 64 KiB at a time
# (the MSS), about every 3 s: it must keep its connection.
UNREAD_ANSWER_DEADLINE = 10
FLOOD_ACCEPTS = 64  # connections a worker takes at a time while more wait (see _Listener)
_TCP_INFO_SIZE = 104
_TCPI_UNACKED = 24  # struct tcp_info's tcpi_unacked: a listening socket's accept queue length
_LINE_END = re.compile(rb"\r?\n")


URI_TOO_LONG = error_answer(
    b"414 URI Too Long", "invalid_request", f"the request line is longer than {LINE_LIMIT} bytes"
)
HEADERS_TOO_LARGE = error_answer(
    b"431 Request Header Fields Too Large",
    "invalid_request",
    f"send at most {FIELDS_LIMIT} header fields of at most {LINE_LIMIT} bytes each, {HEAD_LIMIT} bytes in all",
)

# RFC 9112 section 5.2: a server MUST reject a field continued on the next line, or unfold it.
# Refused: the buffer would not see a folded Content-Length, which h11 would then wait for.
FOLDED = error_answer(
    b"400 Bad Request",
    "invalid_request",
    "a header field continued on the next line (obsolete line folding) is not accepted",
)


def head_refusal(buffered: bytes | bytearray) -> bytes | None:
    """Return the 414, 431 or 400 answer the request head begun in `buffered` has earned already, if any."""
    end = buffered.find(b"\r\n\r\n")
    bare = buffered.find(b"\n\n")
    ends = [e for e in (end, bare) if e >= 0]
    head = bytes(buffered[: min(ends)] if ends else buffered[: HEAD_LIMIT + 1])
    lines = _LINE_END.split(head)
    complete = ends or len(lines) > 1
    if len(lines[0]) > LINE_LIMIT or (not complete and len(head) > LINE_LIMIT):
        return URI_TOO_LONG
    fields = [line for line in lines[1:] if line]
    if any(line[:1] in (b" ", b"\t") for line in fields):
        return FOLDED
    if len(head) > HEAD_LIMIT or len(fields) > FIELDS_LIMIT or any(len(line) > LINE_LIMIT for line in fields):
        return HEADERS_TOO_LARGE
    return None


def _count_refusal() -> None:
    from shared import metrics  # in the worker, after the master chose the metrics directory

    metrics.CONNECTIONS_REFUSED.inc()


class _Tasks(set[asyncio.Task[None]]):
    """uvicorn's set of the app's tasks, noting the last one added: the task of the request just handed over."""

    last: asyncio.Task[None] | None = None

    def add(self, task: asyncio.Task[None]) -> None:
        """Add `task`, and note it."""
        self.last = task
        super().add(task)


class BufferingProtocol(H11Protocol):
    """uvicorn's h11 protocol, handing the app only whole requests that arrived within a deadline (see the module docstring)."""

    _timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None  # runs while the client does not read its answer
    _stalled_since = 0.0  # when the client stopped reading its answer (with `_write_timer`)
    _pending: bytearray
    _serving = False  # a request was handed to h11 and its answer is not complete yet
    _continued = False  # "100 Continue" sent for the request being buffered
    _eof = False  # the client shut its sending side (FIN): answer the requests it sent whole, then close

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The limit is ours to keep (`_make_room`), not uvicorn's: it would count every task,
        # a request whose client reads none of its answer included.
        self._limit: int | None = self.limit_concurrency
        self.limit_concurrency = None
        state = self.server_state
        if not isinstance(state.tasks, _Tasks):  # the first connection: no task yet
            state.tasks = _Tasks(state.tasks)
            state.abandoned = set()  # type: ignore[attr-defined]
            state.order = {}  # type: ignore[attr-defined]
        self.tasks: _Tasks = state.tasks
        # The tasks of requests whose connections were closed to make room, until they end.
        self._abandoned: set[asyncio.Task[None]] = state.abandoned  # type: ignore[attr-defined]
        self._task: asyncio.Task[None] | None = None  # the app's task for this connection's last request
        # The worker's connections in the order they began to wait for a request, longest first:
        # a kept-alive client is put last after each answer (uvicorn's `connections` is a set).
        self._order: dict[BufferingProtocol, None] = state.order  # type: ignore[attr-defined]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request as the connection opens; past the limit, close a silent one."""
        super().connection_made(transport)
        self._order[self] = None
        self._pending = bytearray()
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        if sock is not None:
            drop_unread_answers(sock)  # what an answer left unread may hold in the kernel, and how long
        self._start_clock()
        self._trim()

    def pause_writing(self) -> None:
        """An answer is queued faster than the client reads it: it has `UNREAD_ANSWER_DEADLINE` seconds to catch up."""
        super().pause_writing()
        if self._write_timer is None:
            self._stalled_since = self.loop.time()
            self._write_timer = self.loop.call_later(UNREAD_ANSWER_DEADLINE, self._not_read)

    def resume_writing(self) -> None:
        """The client read what was queued: no deadline until the next time it falls behind."""
        super().resume_writing()
        self._stop_write_clock()

    def data_received(self, data: bytes) -> None:
        """Buffer `data`; hand a request over once it is whole, or answer what it has earned and close."""
        self._trim()
        self._unset_keepalive_if_required()
        if self._timer is None and not self._serving:
            self._start_clock()  # after an answer uvicorn's keep-alive timer ran until this byte
        self._pending += data
        self._next_request()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's, which uvicorn narrows
        """The client sent all it will (RFC 9112 section 9.6): keep the connection open to answer what it sent whole.

        asyncio closes the transport unless this returns true, and the requests it pipelined
        before its FIN would go unanswered. A request not whole by now never will be: with
        nothing being served, the connection closes at once.
        """
        self._eof = True
        return True if self._serving else None

    def on_response_complete(self) -> None:
        """Let uvicorn finish the cycle, then take up a request that arrived meanwhile (or close, after the client's FIN)."""
        self._serving = False
        if self._order.pop(self, False) is None:
            self._order[self] = None  # waiting again from now: last in line to make room
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._pending:
            self._start_clock()
            self._next_request()
        if self._eof and not self._serving and not self.transport.is_closing():
            self.transport.close()  # every request the client sent whole is answered

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clocks with the connection."""
        self._order.pop(self, None)
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
        if self._limit is not None and not self._make_room(self._limit):
            _count_refusal()
            self._refuse(BUSY)
            return
        request, self._pending = bytes(self._pending[: head.size]), self._pending[head.size :]
        self._serving = True
        self._continued = False
        self.tasks.last = None
        super().data_received(request)
        self._task = self.tasks.last

    def _make_room(self, limit: int) -> bool:
        """Return whether this request may be served now, closing connections that hold a place for nothing if need be.

        At most `limit` requests in progress and `limit` connections (uvicorn's
        `limit_concurrency`, counted here). A place is held for nothing by a connection with no
        request in progress, and by one whose client reads none of its answer: at the limit,
        enough of them are closed to let this request in. For a connection's place, those waiting longest
        such connections: a silent one closed (RFC 9112 section 9.6 lets a server close an idle
        connection at any time), one still sending a request answered 503 with `Retry-After`,
        one whose client reads none of its answer reset (what was queued goes with it; a client
        reading steadily, even slowly, stalls seconds at most). For a request's place, only the
        last, the longest stalled first. Longest waiting first, not silent first (a client whose
        request is on its way looks silent) nor oldest connection first (a busy kept-alive
        client would go first): and a flood of connections that each sent a byte, or that
        never read, would otherwise make every new client the one closed. A
        connection whose bytes have arrived but are not read yet is about to be served, and is
        never closed, nor is a request its client reads.
        """
        requests_over = len(self.tasks) - len(self._abandoned) + 1 - limit
        connections_over = len(self.connections) - limit
        if requests_over <= 0 and connections_over <= 0:
            return True
        stalled = sorted(
            (other for other in self._others() if other._write_timer is not None), key=lambda o: o._stalled_since
        )
        victims = [other for other in stalled if other._running()][: max(requests_over, 0)]
        if len(victims) < requests_over:
            return False
        chosen = set(victims)
        candidates = self._idle_others()
        while len(victims) < connections_over:
            other = next(candidates, None)
            if other is None:
                return False
            if other not in chosen:
                chosen.add(other)
                victims.append(other)
        for other in victims:
            other._give_up_place()
            count_closed_for_room()
        return True

    def _trim(self) -> None:
        """Past the limit of connections, close those waiting longest for a request: the sockets a worker holds stay bounded.

        Called as a connection opens and as one's bytes are read: one whose bytes arrived
        unread when another opened is spared then, and closed once read, if it is still
        among those waiting longest.
        """
        if self._limit is None or len(self.connections) <= self._limit:
            return
        for waiting in list(itertools.islice(self._idle_others(), len(self.connections) - self._limit)):
            waiting._give_up_place()
            count_closed_for_room()

    def _running(self) -> bool:
        """Whether the app's task for this connection's request is still running (and not abandoned)."""
        return self._task is not None and not self._task.done() and self._task not in self._abandoned

    def _others(self) -> Iterator[BufferingProtocol]:
        """The worker's other connections, the one waiting longest for a request first."""
        return (other for other in self._order if other is not self)

    def _idle_others(self) -> Iterator[BufferingProtocol]:
        """The other connections holding a place for nothing, the one waiting longest first.

        Those waiting for a request (none in progress, none arrived unread) and those whose
        client reads none of its answer.
        """
        return (
            other
            for other in self._others()
            if other._write_timer is not None or (not other._serving and not unread_bytes(other._fd))
        )

    def _give_up_place(self) -> None:
        """Close this connection, which holds a place for nothing, to make room for a request."""
        self.connections.discard(self)  # at once: uvicorn counts it until `connection_lost` runs
        self._order.pop(self, None)
        if self._running():
            task = cast(asyncio.Task[None], self._task)
            self._abandoned.add(task)  # no longer counted: it ends as it finds its client gone
            task.add_done_callback(self._abandoned.discard)
        if self._write_timer is not None:
            self._stop_write_clock()
            self._not_read()
        elif self._pending:
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

    Except in a flood: while more than `FLOOD_ACCEPTS` connections wait in the listen queue
    (Linux tells a listening socket's queue in `tcpi_unacked`), the worker takes up to that
    many at a time; taken one at a time, a client queued behind a thousand silent connections
    would wait a thousand turns of a busy loop for its turn. Past its limit, each one taken
    closes a silent one to make room (`BufferingProtocol.connection_made`).
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._taken = 0  # connections taken in this turn of the loop

    def listen(self, backlog: int = 0) -> None:
        """Leave the master's backlog as it is."""

    def accept(self) -> tuple[Any, Any]:
        """Take a connection, the first of this turn of the loop or, in a flood, up to `FLOOD_ACCEPTS` of them."""
        if self._taken and not self._flooded():
            raise BlockingIOError  # asyncio's accept loop stops here until the next turn
        taken = self._sock.accept()
        if not self._taken:
            asyncio.get_running_loop().call_soon(self._next_turn)
        self._taken += 1
        return cast(tuple[Any, Any], taken)

    def _next_turn(self) -> None:
        self._taken = 0

    def _flooded(self) -> bool:
        try:
            info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return False
        return bool(struct.unpack_from("I", info, _TCPI_UNACKED)[0] > FLOOD_ACCEPTS)

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
        self.config.backlog = FLOOD_ACCEPTS  # the most connections taken per wake-up of the event loop (see _Listener)

    async def _serve(self) -> None:
        """Serve on the master's sockets, taking one connection per wake-up (uvicorn_worker's own, but for that)."""
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=[cast(socket.socket, _Listener(sock)) for sock in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
