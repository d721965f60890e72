"""Gunicorn settings both services run with: `gunicorn -c python:shared.gunicorn_conf ...`.

Two cores: four gthread workers of four threads keep keep-alive connections spread over
processes (two gthread workers let them pile onto one; see docs/performance.md).
WEB_CONCURRENCY and GUNICORN_THREADS override the counts. The workers are gthread workers that
read each request's head on their event loop (shared.worker): a connection costs a thread only
once its head has arrived, and one whose head is not in within GUNICORN_HEADER_TIMEOUT seconds
(default 5) is closed. The reports API, a FastAPI app, overrides the class with
`-k shared.asgi_worker.AsgiWorker` (uvicorn workers); the hooks below run for it all the same.

The master also serves the app's Prometheus metrics, summed over its workers, on a port of its
own: `<SERVICE>_METRICS_PORT` (0 turns it off) on `<SERVICE>_METRICS_HOST` (default 0.0.0.0,
the container's network; `make run` binds 127.0.0.1). See docs/observability.md.

The APIs' `/readyz` is 200 only when every worker holds the issuer's keys: the master keeps a
private directory where each worker records that it does (shared.readiness).

Each worker starts its own OpenTelemetry exporter after the fork, when OTEL_EXPORTER_OTLP_ENDPOINT
is set (shared.tracing): the master exports nothing and holds no exporter thread.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# Half-sent requests must not hold threads (see shared/src/shared/worker.py and docs/security.md).
worker_class = "shared.worker.HeadFirstWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 10
# Seconds a request has to arrive whole, an idle connection is kept, and an answer may wait for
# its reader (shared.worker, shared.asgi_worker).
keepalive = 5
# Forwarding headers (SCRIPT_NAME, X-Forwarded-*) are trusted from no peer: gunicorn's default
# trusts them from loopback, so any client on the host chose the path the app routed (or made
# gunicorn answer 500). The issuer trusts a proxy only when it is listed (ISSUER_TRUSTED_PROXIES).
forwarded_allow_ips = ""
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


# The variable prefix, and default metrics port, of each app module.
METRICS_PORTS = {"issuer": ("ISSUER", 9100), "resource_server": ("RESOURCE", 9101), "reports_api": ("REPORTS", 9102)}

# The service name (`service.name` of exported spans, `service` of log lines) of each app module.
SERVICES = {"issuer": "issuer", "resource_server": "resource", "reports_api": "reports"}

# The app modules whose `/readyz` waits for every worker (shared.readiness).
READY_MODULES = frozenset({"resource_server", "reports_api"})

SHM = "/dev/shm"  # noqa: S108 - mkdtemp makes a private (0700) directory of a name of its own there
_metrics_dir: Path | None = None
_ready_dir: Path | None = None


def on_starting(server: Any) -> None:
    """Run the app's `check_start()`, if its module has one, then start the metrics exporter, in the master.

    The multiprocess directory is chosen before anything imports prometheus_client (the check
    imports the app). A configuration that cannot work stops gunicorn with a one-line message:
    workers failing together would make gunicorn halt with tracebacks of their own.
    """
    global _metrics_dir, _ready_dir
    module, _, _ = str(getattr(server.app, "app_uri", "") or "").partition(":")
    if module in METRICS_PORTS:
        _metrics_dir = _prepare_multiprocess_dir()
    if module in READY_MODULES:
        from shared import readiness

        _ready_dir = readiness.prepare(SHM if os.access(SHM, os.W_OK) else None, server.cfg.workers)
    try:
        check = getattr(importlib.import_module(module), "check_start", None) if module else None
        if callable(check):
            check()
        if module in METRICS_PORTS:
            _start_exporter(*METRICS_PORTS[module], service=SERVICES[module])
    except BaseException:
        on_exit(server)
        raise


def _prepare_multiprocess_dir() -> Path:
    """Create a fresh private directory for the workers' metric values and point prometheus_client at it.

    It goes to /dev/shm where that is writable (a tmpfs, also in a read-only container), else to
    the temporary directory. prometheus_client picks its mode when first imported, so this runs
    before: the master, then every worker forked from it, writes there.
    """
    base = SHM if os.access(SHM, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="jwt-split-metrics-", dir=base))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _start_exporter(prefix: str, default_port: int, service: str) -> None:
    import logging

    from shared import logs, metrics

    if not logging.getLogger().handlers:  # the master has no app: its exporter's lines are JSON too
        logs.configure(service)

    host = os.environ.get(f"{prefix}_METRICS_HOST", "0.0.0.0")  # noqa: S104 - the compose network
    port = os.environ.get(f"{prefix}_METRICS_PORT", str(default_port))
    if not port.isdigit() or int(port) > 65535:
        raise SystemExit(f"{prefix}_METRICS_PORT must be a port number (0 turns the metrics off)")
    if int(port):
        try:
            metrics.start_exporter(host, int(port))
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None


def post_fork(server: Any, worker: Any) -> None:
    """Start this worker's span exporter if OTEL_EXPORTER_OTLP_ENDPOINT asks for one."""
    module, _, _ = str(getattr(server.app, "app_uri", "") or "").partition(":")
    from shared import tracing

    tracing.start_exporter(SERVICES.get(module, module or "jwt-split"))


def nworkers_changed(server: Any, new_value: int, old_value: int | None) -> None:
    """Keep the worker count `/readyz` compares against in step (TTIN, TTOU)."""
    if _ready_dir is not None:
        from shared import readiness

        readiness.set_workers(_ready_dir, new_value)


def child_exit(server: Any, worker: Any) -> None:
    """Tell the metrics and the readiness a worker is gone (its live gauges stop counting)."""
    if _metrics_dir is not None:
        from shared import metrics

        metrics.worker_exited(worker.pid)
    if _ready_dir is not None:
        from shared import readiness

        readiness.worker_exited(_ready_dir, worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics and readiness directories of this run."""
    if _metrics_dir is not None:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    if _ready_dir is not None:
        shutil.rmtree(_ready_dir, ignore_errors=True)
