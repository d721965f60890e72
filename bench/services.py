"""The services under test: gunicorn processes on 127.0.0.1, and what they look like from outside."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str, *, status: int = 200, timeout: float = 60.0) -> None:
    """Wait until GET url answers with `status`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == status:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {status} within {timeout}s")


class Service:
    """One app under gunicorn with the shared settings; output to a log file."""

    def __init__(
        self,
        name: str,
        app: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        workers: int,
        threads: int,
        worker_class: str = "gthread",
    ) -> None:
        self.name = name
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)}
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        """Describe the worker settings, as gunicorn flags."""
        if self.worker_class == "sync":
            return f"sync -w{self.workers}"
        return f"gthread -w{self.workers} --threads {self.threads}"

    def start(self) -> Service:
        """Start gunicorn (returns at once)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "-c",
                    "python:shared.gunicorn_conf",
                    "--worker-class",
                    self.worker_class,
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    self.app,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self) -> None:
        """Stop gunicorn and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def worker_pids(self) -> list[int]:
        """Return the pids of gunicorn's workers."""
        if self.proc is None:
            return []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) the master and its workers have used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.proc.pid if self.proc else 0, *self.worker_pids()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def worker_rss_mib(self) -> list[float]:
        """Return each worker's resident set size, MiB."""
        sizes = []
        for pid in self.worker_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def events(self) -> list[dict[str, object]]:
        """Return the JSON log lines the service wrote."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def count(self, msg: str, path: str | None = None) -> int:
        """Return how many log events have this message (and path)."""
        return sum(1 for e in self.events() if e.get("msg") == msg and (path is None or e.get("path") == path))

    def wait_all_workers(self, msg: str, timeout: float = 60.0) -> None:
        """Wait until every worker has logged `msg` (e.g. 'jwks loaded')."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = {e.get("pid") for e in self.events() if e.get("msg") == msg}
            if len(pids) >= self.workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not every worker logged {msg!r} within {timeout}s")
