"""Structured logging: one JSON object per line on stderr, tagged with the request id and trace.

Every line written inside a span (a request, or a back-channel call of a background thread)
carries `trace_id` and `span_id` (shared.tracing).

Callers pass event details as `extra={"fields": {...}}`. Log `sub`, `kid`, `jti` and reasons;
never a token, password or key.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Any

from flask import g, has_request_context

from shared import tracing

# The request id of an ASGI request (shared.asgi sets it); a Flask request keeps its own on `g`.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """Format a record as a single JSON line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", None)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestIdFilter(logging.Filter):
    """Attach the current request id, when there is a request, and the current span, if any, to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id")
        elif (request_id := REQUEST_ID.get()) is not None:
            record.request_id = request_id
        context = tracing.current()
        if context is not None:
            record.trace_id = context.trace_id
            record.span_id = context.span_id
        return True


def configure(service: str, level: str = "INFO") -> None:
    """Send all logging to stderr as JSON lines."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {"json": {"()": JsonFormatter, "service": service}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "json",
                    "filters": ["request_id"],
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
            # Werkzeug would log request lines with query strings; we log our own.
            "loggers": {"werkzeug": {"level": "WARNING"}},
        }
    )
