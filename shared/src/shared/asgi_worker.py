"""Gunicorn's worker class for the FastAPI service: `gunicorn -k shared.asgi_worker.AsgiWorker ...`.

uvicorn's worker for gunicorn, with the limits set for a service on the open network:
- an idle keep-alive connection is closed after gunicorn's `keepalive` seconds (5, from
  shared.gunicorn_conf; uvicorn's `timeout_keep_alive`);
- at most `--worker-connections` connections and requests at once per worker (gunicorn's
  setting for event-loop workers, default 1000; uvicorn's `limit_concurrency`): past that a
  new request is answered 503 at once rather than queued without bound;
- request headers of at most 16 KiB (h11's limit, as gunicorn's limit_request_* are for its
  own parser), and no `Server` header.

uvicorn reads a request on the event loop, so a slow or half-open client costs a socket and a
few kilobytes, not a thread: the gthread workers' reason for reading headers first does not
apply. Blocking calls (the upstream token and profile API) run in the worker's thread pool.

This module imports no prometheus_client: gunicorn's master loads the worker class before
shared.gunicorn_conf chooses the metrics directory.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

HEADER_LIMIT = 16 * 1024


class AsgiWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no type information
    """uvicorn under gunicorn, with keep-alive, concurrency and header limits (see the module docstring)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "asyncio", "http": "h11", "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
        self.config.h11_max_incomplete_event_size = HEADER_LIMIT
