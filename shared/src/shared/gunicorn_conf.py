"""Gunicorn settings both services run with: `gunicorn -c python:shared.gunicorn_conf ...`.

Two cores: four gthread workers of four threads keep keep-alive connections spread over
processes (two gthread workers let them pile onto one; see docs/performance.md).
WEB_CONCURRENCY and GUNICORN_THREADS override the counts.
"""

import os

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
