"""Readiness of a whole service: `/readyz` is 200 only when every gunicorn worker holds keys.

A load balancer (compose's healthcheck, `make run`'s banner, a Kubernetes probe) asks one
worker, but tokens go to all of them: a worker that answers "ready" while a sibling still
refuses every token lets the first requests fail. So each worker records its own readiness
in a private directory of the run (an empty file named after its pid, written when its
verifier first holds keys, and whatever else the app needs: the reports API's service token), and `/readyz` counts the files of live workers against the number
of workers the master runs. The master (shared.gunicorn_conf) makes the directory, tells the
workers where it is (JWT_SPLIT_READY_DIR), keeps the worker count in it (also after TTIN or
TTOU), removes a dead worker's file and the directory at exit. A process not run by that
master (the unit tests' apps) is ready when it holds keys itself. `watch` and `siblings_waiting`
serve any framework: `init_app` and `readiness` here are the Flask services', shared.asgi has
the FastAPI ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, jsonify

from jwt_verifier.errors import RETRY_AFTER_SECONDS
from jwt_verifier.flask import protection
from jwt_verifier.flask import readiness as verifier_readiness
from jwt_verifier.jwks import JwksClient

READY_DIR_ENV = "JWT_SPLIT_READY_DIR"
WORKERS_FILE = "workers"
POLL_SECONDS = 0.1

log = logging.getLogger(__name__)


# -- the master ------------------------------------------------------------------------------


def prepare(base: str | None, workers: int) -> Path:
    """Create this run's private readiness directory under `base` and point the workers at it."""
    path = Path(tempfile.mkdtemp(prefix="jwt-split-ready-", dir=base))
    os.environ[READY_DIR_ENV] = str(path)
    set_workers(path, workers)
    return path


def set_workers(path: Path, workers: int) -> None:
    """Record how many workers the master runs (atomically: workers read it at any time)."""
    partial = path / f".{WORKERS_FILE}"
    partial.write_text(str(workers))
    partial.replace(path / WORKERS_FILE)


def worker_exited(path: Path, pid: int) -> None:
    """Forget a dead worker's readiness: the worker that replaces it must load keys itself."""
    with contextlib.suppress(FileNotFoundError):
        (path / str(pid)).unlink()


def remove(path: Path) -> None:
    """Remove the directory of this run."""
    shutil.rmtree(path, ignore_errors=True)


# -- a worker --------------------------------------------------------------------------------


def _directory() -> Path | None:
    value = os.environ.get(READY_DIR_ENV)
    return Path(value) if value else None


def mark_ready() -> None:
    """Record that this worker holds keys (nothing outside a run of shared.gunicorn_conf)."""
    path = _directory()
    if path is not None:
        with contextlib.suppress(OSError):  # the run is ending and its directory is gone
            (path / str(os.getpid())).touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def workers_waiting() -> tuple[int, int]:
    """Return how many of the service's workers hold no keys yet, and how many workers it runs."""
    path = _directory()
    if path is None:
        return 0, 1
    try:
        expected = int((path / WORKERS_FILE).read_text())
        ready = sum(1 for entry in path.iterdir() if entry.name.isdigit() and _alive(int(entry.name)))
    except (OSError, ValueError):
        return 1, 1  # the run is ending: not ready
    return max(0, expected - ready), expected


def watch(jwks: JwksClient, *, also: Callable[[], bool] | None = None) -> None:
    """Mark this worker ready once `jwks` holds keys, and `also()` is true if given (any framework).

    `also` (the reports API's service token, say) is asked every POLL_SECONDS from a daemon
    thread until both hold; it must answer quickly and not raise.
    """
    if also is None:
        jwks.subscribe(lambda kids: mark_ready())
        if jwks.kids:  # loaded before the subscription
            mark_ready()
        return
    condition = also

    def wait() -> None:
        while True:
            try:
                if jwks.kids and condition():
                    mark_ready()
                    return
            except Exception:  # the thread's outermost guard: a bug must not leave it dead and unready
                log.exception("readiness check failed; retrying")
            time.sleep(POLL_SECONDS)

    threading.Thread(target=wait, name="readiness", daemon=True).start()


def siblings_waiting() -> str | None:
    """Say why the service is not ready while this worker is (None once every worker holds keys)."""
    waiting, workers = workers_waiting()
    return f"{waiting} of {workers} workers hold no verification keys yet" if waiting else None


def init_app(app: Flask, *, also: Callable[[], bool] | None = None) -> None:
    """Mark this worker of a Flask app ready once its verifier holds keys, and `also()` is true if given."""
    watch(protection(app).jwks, also=also)


def readiness() -> Response:
    """Answer a readiness probe: 200 when this worker and all its siblings hold keys, else 503."""
    response = verifier_readiness()
    if response.status_code != 200:
        return response
    reason = siblings_waiting()
    if reason is None:
        return response
    response = jsonify(status="not ready", reason=reason)
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
