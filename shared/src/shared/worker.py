"""A gthread worker that reads each request's head on its event loop before a thread serves it.

gunicorn's gthread worker hands a connection to a thread as soon as a byte arrives, and the
thread then reads the head with a blocking `recv`: a client that sends half a request line
and stops holds that thread until it goes away, so a few dozen such connections (one pool of
threads each) leave a service unable to answer anyone.

`HeadFirstWorker` keeps a connection on the poller it already has until the whole head and
its body have arrived, reading them with non-blocking `recv`s into a buffer of its own. Only
then does a thread get the connection, with the bytes given back to gunicorn's parser
(`Unreader.unread`), so parsing and every limit of gunicorn's stay as they are, and no thread
ever waits for a body. A connection whose request has not arrived `GUNICORN_HEADER_TIMEOUT`
seconds (default 5) after it was accepted, or after it became readable again when kept alive,
is closed without a thread ever waiting on it.

Only a body of known length up to `MAX_BUFFERED_BODY` (every request our apps accept, small
forms) is buffered. The loop answers the others itself, in JSON like our apps' errors, and
closes without reading further: a request with any `Transfer-Encoding` gets 411 (RFC 9112
section 6.1 lets a server refuse chunked; RFC 9110 section 15.5.12), a longer `Content-Length`
gets 413 (RFC 9110 section 15.5.14). An HTTP/1.1 `Expect: 100-continue` is answered
`100 Continue` from the loop (RFC 9110 section 10.1.1) and the body awaited under the same
deadline; gunicorn may send a second 100 later, which RFC 9110 section 15.2 allows. A thread's
socket still times out after `GUNICORN_HEADER_TIMEOUT` seconds without a byte, as a second
line of defence (a response is written under that bound: ours are small).

The connections of a worker are bounded by gunicorn's `worker_connections`; at that bound the
connection that has waited longest for a request is closed to accept the next (`_make_room`),
rather than leaving everyone else in the listen queue. Each buffer is bounded by
MAX_BUFFERED_HEAD plus MAX_BUFFERED_BODY: a request line past gunicorn's limit goes
to a thread at once (for its 414), and a head longer than MAX_BUFFERED_HEAD is answered 431 and
closed. TLS and HTTP/2 prior knowledge keep gunicorn's own path: our services serve neither.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import selectors
import socket
import struct
import termios
import time
from functools import partial
from typing import Any, NamedTuple

from gunicorn import http
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

HEADER_TIMEOUT_ENV = "GUNICORN_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 5.0
MAX_BUFFERED_HEAD = 64 * 1024
MAX_BUFFERED_BODY = 64 * 1024
RECV_SIZE = 65536
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 29\r\nConnection: close\r\n\r\nrequest headers are too large"
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Any digits: gunicorn reads "0000000000000000005" as 5, so the loop must too.
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
# Any coding, chunked or not, however spelled: the loop reads no body of unknown length.
_TRANSFER_ENCODING = re.compile(rb"^transfer-encoding[ \t]*:", re.IGNORECASE | re.MULTILINE)
_EXPECT_CONTINUE = re.compile(rb"^expect[ \t]*:[ \t]*100-continue[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_HTTP_1_1 = re.compile(rb"^(?:\r?\n)*[^\r\n]* HTTP/1\.1\r?\n")


def error_answer(status: bytes, error: str, description: str, *, extra: bytes = b"") -> bytes:
    """Return a whole JSON error answer that closes the connection, like our apps' errors."""
    body = json.dumps({"error": error, "error_description": description}).encode()
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\n%sConnection: close\r\n\r\n%s" % (status, len(body), extra, body)
    )


def _refusal(status: bytes, description: str) -> bytes:
    return error_answer(status, "invalid_request", description)


LENGTH_REQUIRED = _refusal(
    b"411 Length Required", "send the request body with a Content-Length; Transfer-Encoding is not accepted"
)
BODY_TOO_LARGE = _refusal(b"413 Content Too Large", f"the request body is larger than {MAX_BUFFERED_BODY} bytes")
RETRY_AFTER_SECONDS = 1
# The answer to a request a worker has no room for (its connection limit reached).
BUSY = error_answer(
    b"503 Service Unavailable",
    "temporarily_unavailable",
    "the server is busy; try again shortly",
    extra=b"Retry-After: %d\r\n" % RETRY_AFTER_SECONDS,
)


def _queued(fd: int, request: int) -> int:
    """Return the byte count the socket `fd` answers to `ioctl` `request` (0 when it cannot tell)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def unread_bytes(fd: int) -> int:
    """Return how many bytes have arrived on socket `fd` that nobody has read yet."""
    return _queued(fd, termios.FIONREAD)


def unsent_bytes(fd: int) -> int:
    """Return how many bytes written to socket `fd` its peer has not acknowledged yet."""
    return _queued(fd, termios.TIOCOUTQ)


def count_closed_for_room() -> None:
    """Count a connection closed to make room at a worker's connection limit."""
    from shared import metrics  # in the worker, after the master chose the metrics directory

    metrics.CONNECTIONS_CLOSED_FOR_ROOM.inc()


def header_timeout() -> float:
    """Return the configured header timeout in seconds (GUNICORN_HEADER_TIMEOUT, default 5)."""
    raw = os.environ.get(HEADER_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_HEADER_TIMEOUT
    except ValueError:
        raise SystemExit(f"{HEADER_TIMEOUT_ENV} must be a number of seconds") from None
    if not 0 < value <= 300:
        raise SystemExit(f"{HEADER_TIMEOUT_ENV} must be more than 0 and at most 300 seconds")
    return value


class RequestHead(NamedTuple):
    """What the loop learnt from a complete head: the request's size, and what to answer at once."""

    size: int  # the head, plus the body the loop buffers
    refusal: bytes | None  # an answer to send before closing, instead of handing the request over
    expects_continue: bool  # the client waits for "100 Continue" before sending its body


def read_head(buffered: bytes | bytearray) -> RequestHead | None:
    """Read the first request's head in `buffered`, or return None while it is incomplete.

    A head ends with an empty line (RFC 9112 section 2.1; a bare LF is tolerated here and left
    to the parser to judge). A body of known length up to MAX_BUFFERED_BODY is counted in. A
    `Transfer-Encoding` (RFC 9112 section 6.1) or a longer `Content-Length` is refused, so no
    thread ever reads a body from the socket. A `Content-Length` the parser will refuse (two of
    them, or not digits) adds nothing: the parser answers 400 before reading any body.
    """
    crlf = buffered.find(b"\r\n\r\n")
    lf = buffered.find(b"\n\n")
    ends = [end + size for end, size in ((crlf, 4), (lf, 2)) if end >= 0]
    if not ends:
        return None
    head_end = min(ends)
    head = bytes(buffered[:head_end])
    if _TRANSFER_ENCODING.search(head):
        return RequestHead(head_end, LENGTH_REQUIRED, expects_continue=False)
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1:
        return RequestHead(head_end, None, expects_continue=False)
    length = int(lengths[0])
    if length > MAX_BUFFERED_BODY:
        return RequestHead(head_end, BODY_TOO_LARGE, expects_continue=False)
    # RFC 9110 section 15.2: no 1xx to an HTTP/1.0 client (gunicorn ignores its expectation too).
    expects = length > 0 and bool(_HTTP_1_1.match(head)) and bool(_EXPECT_CONTINUE.search(head))
    return RequestHead(head_end + length, None, expects_continue=expects)


def request_bytes_needed(buffered: bytes | bytearray) -> int | None:
    """Return how many bytes the first request in `buffered` takes, or None while its head is incomplete."""
    head = read_head(buffered)
    return None if head is None else head.size


# What the kernel may hold of answers for one connection, and how long a connection may keep
# them unacknowledged or its window shut before the kernel drops it.
SEND_BUFFER = 64 * 1024
UNREAD_ANSWER_TIMEOUT = 30.0


def drop_unread_answers(sock: socket.socket) -> None:
    """Bound what an answer nobody reads costs: twice `SEND_BUFFER` of kernel memory (Linux doubles it), `UNREAD_ANSWER_TIMEOUT` seconds.

    A fixed send buffer (the kernel's own grows to megabytes) keeps the rest of a long answer
    in the process, where the worker sees whether the client reads (shared.asgi_worker drops
    one that does not); TCP_USER_TIMEOUT (RFC 5482; Linux applies it to a shut window too) has
    the kernel drop a connection whose data stays unacknowledged, or whose window stays shut,
    that long, ours closed or not, instead of the minutes of its retries. A client on a slow
    link reading steadily keeps its connection.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(UNREAD_ANSWER_TIMEOUT * 1000))


class _ReadTimeoutSocket(socket.socket):
    """A client socket whose blocking mode is a timeout, so a thread never waits on it for long."""

    read_timeout = DEFAULT_HEADER_TIMEOUT

    def setblocking(self, flag: bool) -> None:
        """Wait at most `read_timeout` for each read or write where gunicorn asks to block."""
        if flag:
            self.settimeout(self.read_timeout)
        else:
            super().setblocking(False)


class _Head:
    """The bytes of a connection's next request read so far, and when they must be complete."""

    __slots__ = ("buffer", "continued", "deadline", "since")

    def __init__(self, buffered: bytes, deadline: float) -> None:
        self.buffer = bytearray(buffered)
        self.since = time.monotonic()  # when the connection began to wait for this request
        self.deadline = deadline
        self.continued = False  # "100 Continue" sent for the request being buffered


class HeadFirstWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's gthread worker, reading request heads on its event loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout()
        # gunicorn's limits allow a head of ~400 KiB; real ones are a few KiB. A pending
        # connection buffers at most MAX_BUFFERED_HEAD of it, and a longer head is refused.
        self.max_head = min(
            MAX_BUFFERED_HEAD,
            (self.cfg.limit_request_line or 8190)
            + (self.cfg.limit_request_fields or 100) * ((self.cfg.limit_request_field_size or 8190) + 2)
            + 4,
        )
        self._heads: dict[TConn, _Head] = {}
        self._ready: set[TConn] = set()
        # Whole requests waiting for the client to take the previous answer (see `_finish`).
        self._draining: dict[TConn, None] = {}

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection into a socket that times out in blocking mode, and wait for its head."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        if self.nr_conns >= self.worker_connections:
            self._make_room()
        drop_unread_answers(client)
        sock = _ReadTimeoutSocket(fileno=client.detach())
        sock.read_timeout = self.header_timeout
        self.enqueue_req(TConn(self.cfg, sock, address, listener.getsockname()))

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """Serve one request; a client that does not take its answer in time loses its connection, quietly.

        gunicorn logs every socket error but a reset or a broken pipe as an ERROR with its
        traceback: a client that never reads its answers (the write's timeout, or the kernel's
        TCP_USER_TIMEOUT) could fill the log at will. One line instead, and the connection closed.
        """
        try:
            return bool(super().handle_request(req, conn))
        except OSError as exc:
            if not isinstance(exc, TimeoutError) and exc.errno != errno.ETIMEDOUT:
                raise
            self.log.info("closed a connection whose client did not take its answer in time")
            raise StopIteration from None  # gunicorn's handle() closes the connection

    def enqueue_req(self, conn: TConn) -> None:
        """Give `conn` to a thread once its request has arrived; until then read it on the poller."""
        if conn in self._ready:
            self._ready.discard(conn)
            super().enqueue_req(conn)
            return
        if self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        self._heads[conn] = _Head(buffered, time.monotonic() + self.header_timeout)
        conn.sock.setblocking(False)
        if self._head_complete(conn):
            self._finish(conn)
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))
        self._read_head(conn)

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request, so that accepting goes on at the limit.

        gunicorn stops accepting once a worker holds `worker_connections`: connections opened
        and left idle would keep everyone else in the listen queue until the header timeout
        closed them, and opened again, for ever. A connection with no request in progress holds
        its place only while nobody else needs it: the one that has waited longest for its next
        request, closed if it is kept alive (RFC 9112 section 9.6 lets a server close an idle
        connection at any time) or sent nothing, else answered 503 with `Retry-After` (nginx
        drains its idle connections the same way, longest idle first); a pipelined request
        whose client has not taken the previous answer (`_finish`) waits in line with them,
        and is closed. Longest
        waiting, not silent, first: a client whose request is on its way looks silent, and a
        flood of connections that each sent a byte would otherwise make every new client the
        one closed; nor oldest connection first: a busy kept-alive client would go first.
        One whose bytes have arrived but are not read yet (`unread_bytes`) is about to be
        served, and is never closed; nor is one a thread serves: with only those left, gunicorn
        stops accepting as before.
        """
        kept = next((conn for conn in self.keepalived_conns if not unread_bytes(conn.sock.fileno())), None)
        victim = next(
            (conn for conn in self._heads if conn in self._draining or not unread_bytes(conn.sock.fileno())), None
        )
        # Whichever has waited longer: a kept-alive connection since its answer (gunicorn's
        # `set_timeout` put its deadline `keepalive` seconds later), a head since it began.
        if kept is not None and (victim is None or kept.timeout - self.cfg.keepalive <= self._heads[victim].since):
            self.keepalived_conns.remove(kept)
            self._unregister(kept)
            self.nr_conns -= 1
            kept.close()
            count_closed_for_room()
            return
        if victim is None:
            return
        if self._heads[victim].buffer and victim not in self._draining:
            self._refuse(victim, BUSY)
        else:
            self._drop(victim)
        count_closed_for_room()

    def on_client_socket_readable(self, conn: TConn, client: object) -> None:
        """gunicorn's, but for a kept-alive connection closed to make room earlier in the same turn of the poller."""
        if conn.sock.fileno() == -1:
            return
        super().on_client_socket_readable(conn, client)

    def _on_head_readable(self, conn: TConn, _client: object) -> None:
        self._read_head(conn)

    def _read_head(self, conn: TConn) -> None:
        """Read what has arrived, to the last byte: the poller is level-triggered."""
        while conn in self._heads:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(conn)
                return
            if not data:
                self._drop(conn)  # closed before a whole request arrived
                return
            self._heads[conn].buffer += data
            if self._head_too_large(conn):
                self._refuse(conn, TOO_LARGE)
                return
            if self._head_complete(conn):
                self._unregister(conn)
                self._finish(conn)
                return

    def _head_complete(self, conn: TConn) -> bool:
        """Return whether `conn`'s request is in (or is to be refused), or its request line is past gunicorn's limit."""
        pending = self._heads[conn]
        head = read_head(pending.buffer)
        if head is not None:
            if head.expects_continue and not pending.continued and len(pending.buffer) < head.size:
                pending.continued = True
                self._send_at_once(conn, CONTINUE)  # the client waits for it; the deadline still runs
            return head.refusal is not None or len(pending.buffer) >= head.size
        line_end = pending.buffer.find(b"\n")
        line = line_end if line_end >= 0 else len(pending.buffer)
        return line > (self.cfg.limit_request_line or 8190) + 2

    def _finish(self, conn: TConn) -> None:
        """Hand a complete request to a thread, or send the loop's refusal of it and close.

        Only once the client has taken the previous answer on the connection: a client that
        pipelines requests and reads none of the answers would otherwise get a thread per
        connection stuck writing for the whole write timeout. While any of it is in the kernel
        unacknowledged (`unsent_bytes`), the request waits on the loop until all of it has left
        (`TCP_NOTSENT_LOWAT`: the socket turns writable only then; no polling), for as long as
        the kernel keeps a connection whose window stays shut (`UNREAD_ANSWER_TIMEOUT`), so a
        client reading slowly but steadily gets every answer. A client that reads its answers
        acknowledges them before, or with, its next request: it never waits.
        """
        head = read_head(self._heads[conn].buffer)
        if head is not None and head.refusal is not None:
            self._refuse(conn, head.refusal)
        elif unsent_bytes(conn.sock.fileno()):
            waiting = self._heads[conn]
            waiting.deadline = max(waiting.deadline, time.monotonic() + UNREAD_ANSWER_TIMEOUT)
            self._draining[conn] = None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 1)
            self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._on_answer_sent, conn))
        else:
            self._hand_over(conn)

    def _on_answer_sent(self, conn: TConn, _client: object) -> None:
        """The previous answer has all left (or the connection failed): the request can have a thread."""
        self._unregister(conn)
        self._draining.pop(conn, None)
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 0)  # the system's default again
        if conn in self._heads:
            self._hand_over(conn)

    def _head_too_large(self, conn: TConn) -> bool:
        buffered = self._heads[conn].buffer
        return len(buffered) > self.max_head and request_bytes_needed(buffered[: self.max_head + 4]) is None

    def _refuse(self, conn: TConn, answer: bytes) -> None:
        """Send `answer` (a 411, 413 or 431: RFC 6585 section 5) as far as the socket takes it at once, and close.

        Reading no further: what the client has sent but we have not read makes the close a reset,
        which may lose the answer; discarding what is already here makes that rarer, and a client
        that sends on regardless gets the reset it asked for.
        """
        self._send_at_once(conn, answer)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
            for _ in range(4):  # what has arrived, within a bound
                if not conn.sock.recv(RECV_SIZE):
                    break
        self._drop(conn)

    @staticmethod
    def _send_at_once(conn: TConn, data: bytes) -> None:
        """Send as much of `data` as the socket takes now: small answers fit its buffer."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    def _hand_over(self, conn: TConn) -> None:
        """Give the buffered bytes back to gunicorn's parser and `conn` to a thread."""
        head = self._heads.pop(conn)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(head.buffer))
        conn.data_ready = True  # gthread would otherwise wait for the socket to turn readable
        self._ready.add(conn)
        self.enqueue_req(conn)

    def _unregister(self, conn: TConn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):  # not registered: complete at once
            self.poller.unregister(conn.sock)

    def _drop(self, conn: TConn) -> None:
        self._heads.pop(conn, None)
        self._draining.pop(conn, None)
        self._unregister(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close the connections whose head is late, then gthread's own pending ones."""
        now = time.monotonic()
        late = [conn for conn, head in self._heads.items() if head.deadline <= now]
        for conn in late:
            self._drop(conn)
        super().murder_pending()
