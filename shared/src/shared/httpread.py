"""Read a peer's whole HTTP answer, headers and body, within a total deadline and a size limit.

requests' `timeout` bounds each socket read, not the answer: a peer that sends its headers, or
its body, one byte a second never trips it, and a deadline checked between `iter_content`
chunks waits for a whole chunk first. Here every read of the socket waits at most the time
left before the deadline (the socket's timeout is set to it before each read), so the answer
ends by the deadline whatever the peer does, and the failure is an ordinary
`requests.Timeout` or `requests.ConnectionError`.

How: a session made `bounded()` opens its connections from pools whose connections read
their answers through `_DeadlineReader`, which takes the deadline of the request under way in
this thread (`deadline()`). Framework-free (requests and urllib3 only), so any client of a
peer can use it: `read_within()` for one bounded answer. (The verifier's JWKS fetch has its own
bound, `jwt_verifier.deadline`, since the library depends on nothing of the services.) Connections through
a proxy are not covered; a session made bounded still stops at the deadline between chunks.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Answer", "bounded", "deadline", "read_within"]

CHUNK = 4096
_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Bound every answer that a bounded session starts to read in this thread, `seconds` from now.

    Yields the deadline (on `time.monotonic`). An answer keeps the deadline it started with
    after the block ends, so its body may be read outside it.
    """
    previous: float | None = getattr(_local, "deadline", None)
    ends = time.monotonic() + seconds
    _local.deadline = ends if previous is None else min(previous, ends)
    try:
        yield _local.deadline
    finally:
        _local.deadline = previous


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side whose every read waits at most until the deadline."""

    def __init__(self, sock: socket.socket, ends: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # counts as a reference: the socket stays open
        self._ends = ends

    def readable(self) -> bool:
        """Return True: this is a reader."""
        return True

    def readinto(self, buffer: Any) -> int | None:
        """Read what the peer has sent, waiting no later than the deadline (TimeoutError after it)."""
        remaining = self._ends - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer did not arrive by its deadline")
        timeout = self._sock.gettimeout()
        self._sock.settimeout(remaining if timeout is None else min(timeout, remaining))
        try:
            return self._raw.readinto(buffer)
        finally:
            with contextlib.suppress(OSError):  # closed under us: the read's own error says why
                self._sock.settimeout(timeout)

    def close(self) -> None:
        """Close this reader (the socket closes once its last user is done)."""
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What an `http.client.HTTPResponse` is built from: a socket whose reading side honours the deadline."""

    def __init__(self, sock: socket.socket, ends: float) -> None:
        self._sock = sock
        self._ends = ends

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        """Return a buffered reader of the socket bound by the deadline."""
        return io.BufferedReader(_DeadlineReader(self._sock, self._ends))


class _DeadlineResponse(http.client.HTTPResponse):
    """An answer read under the deadline of its thread's request, if one is set."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None) -> None:
        ends: float | None = getattr(_local, "deadline", None)
        # http.client only calls `makefile("rb")` on what it is given.
        read_from = sock if ends is None else cast(socket.socket, _DeadlineSocket(sock, ends))
        super().__init__(read_from, debuglevel, method, url)


class _HTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _HTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


def bounded(session: requests.Session) -> requests.Session:
    """Make `session`'s connections honour `deadline()`; return it. Call it when the session is made."""
    for adapter in session.adapters.values():
        if isinstance(adapter, HTTPAdapter) and adapter.poolmanager.pool_classes_by_scheme is not _POOLS:
            adapter.poolmanager.pool_classes_by_scheme = _POOLS
            adapter.poolmanager.clear()  # pools opened before would not honour it
    return session


@dataclass(frozen=True)
class Answer:
    """A peer's answer: its status, headers and body (None when larger than the limit)."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None


def read_within(
    session: requests.Session, method: str, url: str, *, timeout: float, max_bytes: int, **kwargs: Any
) -> Answer:
    """Send a request and read the whole answer within `timeout` seconds, at most `max_bytes` of body.

    Redirects are not followed. Raises requests.Timeout or another requests.RequestException
    when the peer cannot be reached or does not answer in time. `session` is made `bounded()`.
    """
    bounded(session)
    with deadline(timeout) as ends:
        response = session.request(method, url, timeout=timeout, stream=True, allow_redirects=False, **kwargs)
    with response:
        body = bytearray()
        for chunk in response.iter_content(chunk_size=CHUNK):
            body += chunk
            if len(body) > max_bytes:
                return Answer(response.status_code, response.headers, None)
            if time.monotonic() > ends:  # only where the session's connections are not bounded (a proxy)
                raise requests.Timeout(f"the answer took longer than {timeout:g} s")
    return Answer(response.status_code, response.headers, bytes(body))
