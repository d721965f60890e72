"""The services as gunicorn processes on 127.0.0.1: the one harness for the tests and the bench.

The loopback stack (tests/support/stack.py) and `python -m bench` both start the issuer and the
resource through `issuer_process` and `resource_process`, so the two run them the same way;
tests/support/databases.py runs PostgreSQL and Redis as `ChildProcess`es too.
Nothing here imports pytest: the bench runs it from the repository root.
"""

from __future__ import annotations

import gc
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from signal import SIGTERM  # the class's own `signal` method hides the module in its body
from typing import Any, Self

import requests

from tests.support.browsing import DEMO_USERS

BIN = Path(sys.executable).parent
# The metrics variables' prefix of each app module (shared.gunicorn_conf.METRICS_PORTS).
METRICS_PREFIX = {"issuer": "ISSUER", "resource_server": "RESOURCE", "reports_api": "REPORTS"}
# The reports API is a FastAPI app: uvicorn workers (as in reports/Dockerfile and scripts/run-local).
REPORTS_WORKER = "shared.asgi_worker.AsgiWorker"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], object], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll `predicate()` until it is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def answers(url: str, status: int = 200) -> bool:
    """Return whether GET url answers with the given status."""
    try:
        return requests.get(url, timeout=1).status_code == status
    except requests.RequestException:
        return False


def log_events(text: str) -> list[dict[str, Any]]:
    """Return the JSON log lines in a service's output."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def count_events(text: str, msg: str, path: str | None = None) -> int:
    """Return how many log events in `text` have this message (and request path)."""
    return sum(1 for e in log_events(text) if e.get("msg") == msg and (path is None or e.get("path") == path))


def pids_that_logged(text: str, msg: str) -> set[object]:
    """Return the pids of the workers that logged `msg` (e.g. 'jwks loaded')."""
    return {e.get("pid") for e in log_events(text) if e.get("msg") == msg}


class NotStarted(AssertionError):
    """A process could not start, or did not become ready (the test asking for it fails)."""


class ChildProcess:
    """A program run in a session of its own, its output in a log file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        user: pwd.struct_passwd | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = dict(env or {})
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the program (returns at once; `wait_ready` waits for it)."""
        env = {**os.environ, **self.env}
        as_user: dict[str, Any] = {}
        if self.user is not None:
            env["HOME"] = self.user.pw_dir
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_user,
            )
        return self

    def wait_ready(self, ready: Callable[[], object], *, timeout: float = 20.0, what: str = "") -> None:
        """Wait until `ready()`; fail with the end of the log if the program exits or takes too long."""

        def ready_or_exited() -> object:
            if self.proc is not None and self.proc.poll() is not None:
                raise NotStarted(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
            return ready()

        try:
            wait_until(ready_or_exited, timeout=timeout, what=what or f"the {self.name} to be ready")
        except NotStarted:
            raise
        except AssertionError as exc:
            raise NotStarted(f"{exc}\n{self.log()[-2000:]}") from None

    def signal(self, signum: int) -> None:
        """Send a signal to the program and its children."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)

    def stop(self, signum: int = SIGTERM) -> None:
        """Stop the program with `signum` and wait for it to exit (SIGKILL after 20 s)."""
        stop_all([self], signum)

    def _ask_to_stop(self, signum: int) -> None:
        self.signal(signal.SIGCONT)  # a stopped program cannot act on the signal
        self.signal(signum)

    def _wait_stopped(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        """Return everything the program has logged."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def stop_all(programs: Iterable[ChildProcess], signum: int = SIGTERM) -> None:
    """Stop `programs` with `signum` all at once, and wait for each to exit (SIGKILL after 20 s).

    At once, not one after another: a gunicorn master takes a second or more to stop (its
    workers notice at their next poll), and a stack has three.

    The test process's idle connections to them are closed first: a gunicorn worker that is
    stopping keeps a kept-alive connection open for up to 2 s, and the connections of finished
    `requests` calls stay open while their responses sit in reference cycles, until the cyclic
    garbage collector runs. Collecting first took a stack's stop from 2.6-2.8 s to 1.2-1.5 s.
    """
    gc.collect()
    running = [program for program in programs if program.proc is not None]
    for program in running:
        program._ask_to_stop(signum)
    deadline = time.monotonic() + 20
    for program in running:
        program._wait_stopped(deadline)


class GunicornService(ChildProcess):
    """One app under gunicorn with the shared gunicorn settings."""

    def __init__(
        self,
        name: str,
        app: str,
        env: Mapping[str, str],
        log_path: Path,
        *,
        port: int | None = None,
        workers: int = 2,
        threads: int = 4,
        worker_class: str | None = None,
    ) -> None:
        self.app = app
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Its own free metrics port on loopback: the default ports would clash between tests.
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        prefix = METRICS_PREFIX[app.partition(":")[0]]
        metrics_env = {f"{prefix}_METRICS_HOST": "127.0.0.1", f"{prefix}_METRICS_PORT": str(self.metrics_port)}
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        super().__init__(
            name,
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:shared.gunicorn_conf",
                *(["--worker-class", worker_class] if worker_class else []),
                "--bind",
                f"127.0.0.1:{self.port}",
                app,
            ],
            log_path,
            env={**metrics_env, **env, "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)},
        )

    def wait_answering(self, path: str = "/healthz", *, timeout: float = 20.0) -> None:
        """Wait until GET `path` answers 200."""
        self.wait_ready(lambda: answers(f"{self.url}{path}"), timeout=timeout, what=f"the {self.name} to answer")

    def wait_all_workers(self, msg: str, *, timeout: float = 30.0) -> None:
        """Wait until every worker has logged `msg` (e.g. 'jwks loaded')."""
        self.wait_ready(
            lambda: len(pids_that_logged(self.log(), msg)) >= self.workers,
            timeout=timeout,
            what=f"every {self.name} worker to log {msg!r}",
        )

    def worker_pids(self) -> list[int]:
        """Return the pids of gunicorn's workers."""
        if self.proc is None:
            return []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []


def issuer_process(
    log_dir: Path,
    *,
    public_url: str | None = None,
    data_dir: Path,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    workers: int = 2,
    threads: int = 4,
) -> GunicornService:
    """Prepare the issuer (public URL `http://localhost:PORT` unless given) with the demo users."""
    port = port if port is not None else free_port()
    return GunicornService(
        "issuer",
        "issuer:create_app()",
        {
            "ISSUER_URL": public_url or f"http://localhost:{port}",
            "ISSUER_DATA_DIR": str(data_dir),
            "ISSUER_DEMO_USERS": DEMO_USERS,
            # The CLI's registration changes reach the next request at once (the default, 1 s
            # later): the tests that change registrations then ask at once. test_registry_cache
            # runs with the cache on.
            "ISSUER_REGISTRY_CACHE_TTL": "0",
            **(env or {}),
        },
        log_dir / "issuer.log",
        port=port,
        workers=workers,
        threads=threads,
    )


def resource_process(
    log_dir: Path,
    issuer: GunicornService,
    *,
    name: str = "resource",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    workers: int = 2,
    threads: int = 4,
    worker_class: str | None = None,
) -> GunicornService:
    """Prepare a resource that trusts `issuer` and reaches it on loopback."""
    port = port if port is not None else free_port()
    return GunicornService(
        name,
        "resource_server:create_app()",
        {
            "RESOURCE_ISSUER": issuer.env["ISSUER_URL"],
            "RESOURCE_ISSUER_INTERNAL_URL": issuer.url,
            "RESOURCE_PUBLIC_URL": f"http://localhost:{port}",
            **(env or {}),
        },
        log_dir / f"{name}.log",
        port=port,
        workers=workers,
        threads=threads,
        worker_class=worker_class,
    )


def reports_process(
    log_dir: Path,
    issuer: GunicornService,
    resource: GunicornService,
    *,
    data_dir: Path,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    workers: int = 2,
) -> GunicornService:
    """Prepare the reports API: it trusts `issuer` and calls `resource` (the profile API) on loopback."""
    port = port if port is not None else free_port()
    return GunicornService(
        "reports",
        "reports_api:create_app()",
        {
            "REPORTS_ISSUER": issuer.env["ISSUER_URL"],
            "REPORTS_ISSUER_INTERNAL_URL": issuer.url,
            "REPORTS_PUBLIC_URL": f"http://localhost:{port}",
            "REPORTS_PROFILE_API_URL": resource.url,
            "REPORTS_PROFILE_API_PUBLIC_URL": resource.env["RESOURCE_PUBLIC_URL"],
            "REPORTS_DATA_DIR": str(data_dir),
            **(env or {}),
        },
        log_dir / "reports.log",
        port=port,
        workers=workers,
        worker_class=REPORTS_WORKER,
    )
