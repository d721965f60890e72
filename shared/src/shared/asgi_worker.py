"""Gunicorn's worker class for the FastAPI service: `gunicorn -k shared.asgi_worker.AsgiWorker ...`.

uvicorn's worker for gunicorn, with the limits set for a service on the open network:
- a request head must arrive whole within gunicorn's `keepalive` seconds (5, from
  shared.gunicorn_conf) of the connection's opening or of its first byte, and an idle
  keep-alive connection is closed after as long (uvicorn's `timeout_keep_alive`). uvicorn itself
  has no deadline for a head: a client sending nothing, or a header byte now and then, would
  hold its connection, and a place under the limit below, for ever;
- at most `--worker-connections` connections and requests at once per worker (gunicorn's
  setting for event-loop workers, default 1000; uvicorn's `limit_concurrency`): past that a
  request is answered 503 at once rather than queued without bound;
- request heads of at most 16 KiB (h11's limit: gunicorn's limit_request_* are for its own
  parser), and no `Server` header.

uvicorn reads requests on the event loop, so a slow or half-open client costs a socket and a
few kilobytes, not a thread (the reason the gthread workers read a head before taking a
thread). Blocking calls (the upstream token and profile API) run in the worker's thread pool.

This module imports no prometheus_client: gunicorn's master loads the worker class before
shared.gunicorn_conf chooses the metrics directory.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

HEAD_LIMIT = 16 * 1024


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not whole in `timeout_keep_alive` seconds."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request head as the connection opens."""
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        """Start the clock at the first byte of a later head; stop it once a head is whole."""
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._await_head()  # after an answer uvicorn's keep-alive timer ran until this byte
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_done()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._head_done()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_too_slow)

    def _head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE:
            self.timeout_keep_alive_handler()  # uvicorn's own close of a connection with no request


class AsgiWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no type information
    """uvicorn under gunicorn, with head, keep-alive and concurrency limits (see the module docstring)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "asyncio", "http": HeadDeadlineProtocol, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
        self.config.h11_max_incomplete_event_size = HEAD_LIMIT
