"""Gunicorn settings both services run with: `gunicorn -c python:shared.gunicorn_conf ...`.

Two cores: four gthread workers of four threads keep keep-alive connections spread over
processes (two gthread workers let them pile onto one; see docs/performance.md).
WEB_CONCURRENCY and GUNICORN_THREADS override the counts.
"""

import importlib
import os
from typing import Any

workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# The apps log one JSON line per request themselves, without query strings.
accesslog = None
# No gunicornc control socket: it would live in $HOME, absent in containers and shared by
# the two services of `make run`.
control_socket_disable = True
errorlog = "-"
# Headers are where tokens travel: refuse oversized ones before the app sees them.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190


def on_starting(server: Any) -> None:
    """Run the app's `check_start()`, if its module has one, in the master before any worker starts.

    A configuration that cannot work then stops gunicorn with the app's one-line message:
    workers failing together would make gunicorn halt with tracebacks of its own.
    """
    module, _, _ = str(getattr(server.app, "app_uri", "") or "").partition(":")
    check = getattr(importlib.import_module(module), "check_start", None) if module else None
    if callable(check):
        check()
