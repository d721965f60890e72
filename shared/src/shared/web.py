"""Per-request plumbing every service shares: trace context, request ids, access log, headers, errors."""

from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path

from flask import Flask, Response, current_app, g, request

from shared import errors, metrics, tracing

log = logging.getLogger("access")

STATIC_DIR = str(Path(__file__).parent / "static")  # the stylesheet both services' pages use

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _begin() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    g.started = time.perf_counter()


def content_security_policy(form_targets: tuple[str, ...] = (), *, scripts: bool = False) -> str:
    """Return the strict CSP of our HTML: no script at all, styles from our origin only.

    `form_targets` are origins a form submission may end up at through redirects (the issuer's
    login form redirects to registered clients). With `scripts`, the page may run script files
    of our origin (never inline) and fetch from it: the issuer's passkey pages (WebAuthn).
    """
    form_action = " ".join(("'self'", *form_targets))
    script = "script-src 'self'; connect-src 'self'; " if scripts else ""
    return (
        f"default-src 'none'; {script}style-src 'self'; img-src 'self'; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        csp = current_app.config.get("CONTENT_SECURITY_POLICY") or content_security_policy()
        response.headers.setdefault("Content-Security-Policy", csp)
        response.headers.setdefault("Referrer-Policy", "same-origin")
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
    """Install trace context, request ids, the access log, default headers, JSON errors and the request metrics."""
    tracing.init_app(app)
    app.before_request(_begin)
    app.after_request(_finish)
    metrics.init_app(app)
    errors.init_app(app)
