"""Per-request plumbing both services share: request ids, access log, headers, errors."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from shared import errors

log = logging.getLogger("access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _begin() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'",
        )
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
    elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
    # The path only: query strings can carry codes or tokens.
    log.info(
        "request",
        extra={
            "fields": {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "ms": round(elapsed_ms, 2),
            }
        },
    )
    return response


def init_app(app: Flask) -> None:
    """Install request ids, the access log, default headers and JSON errors."""
    app.before_request(_begin)
    app.after_request(_finish)
    errors.init_app(app)
