"""HTTP fetches bounded in total time, headers and body alike.

requests' `timeout` bounds each read, not the whole answer: a server that sends a byte just
before every read timeout (in its headers or its body) keeps the caller waiting for as long
as it likes. `watch(session)` mounts an adapter on a session whose connections report their
sockets to the fetch under way in this thread; `deadline(seconds)` shuts those sockets down
when the time is up, so the blocked read fails at once and the fetch ends as a
`requests.RequestException`. A connection through a proxy keeps requests' own timeouts only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Deadline", "deadline", "watch"]

_current = threading.local()


class Deadline:
    """The sockets of one fetch and the moment they are shut down."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        """Watch `sock`; shut it down at once if the time is already up."""
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def expire(self) -> None:
        """Shut every watched socket down: their blocked reads return."""
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound the fetches this thread makes through watched sessions to `seconds` in total."""
    bound = Deadline(seconds)
    timer = threading.Timer(seconds, bound.expire)
    timer.daemon = True
    _current.deadline = bound
    timer.start()
    try:
        yield bound
    finally:
        timer.cancel()
        _current.deadline = None


def _report(sock: socket.socket | None) -> None:
    bound: Deadline | None = getattr(_current, "deadline", None)
    if bound is not None and sock is not None:
        bound.add(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _report(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _report(self.sock)  # a kept-alive connection: connect() is not called again
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _report(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _report(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def watch(session: requests.Session) -> requests.Session:
    """Let `deadline()` bound `session`'s fetches (its http and https connections); return it."""
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
