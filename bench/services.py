"""The services the bench runs (tests/support/processes.py starts them), and what it reads from them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tests.support.processes import REPORTS_WORKER, GunicornService, free_port, issuer_process

ISSUER_URL = "http://localhost:8000"
# The issuer under load: no address limit, and password hashing cheap enough for many logins.
LOAD_ENV = {
    "ISSUER_ADDRESS_RATE_LIMIT": "1000000 per second",
    "ISSUER_ARGON2_TIME_COST": "1",
    "ISSUER_ARGON2_MEMORY_KIB": "8192",
}


def bench_issuer(
    run_dir: Path, data_dir: Path, *, env: Mapping[str, str] | None = None, workers: int, threads: int
) -> GunicornService:
    """Prepare the issuer at the public URL `ISSUER_URL` with `LOAD_ENV` (and `env`), logs in `run_dir`."""
    return issuer_process(
        run_dir,
        public_url=ISSUER_URL,
        data_dir=data_dir,
        env={**LOAD_ENV, **(env or {})},
        workers=workers,
        threads=threads,
    )


def reports_service(run_dir: Path, issuer: GunicornService, *, workers: int) -> GunicornService:
    """Prepare the reports API under its uvicorn workers; `/api/caller` never calls the profile API."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "REPORTS_ISSUER": ISSUER_URL,
        "REPORTS_ISSUER_INTERNAL_URL": issuer.url,
        "REPORTS_PROFILE_API_URL": nowhere,
        "REPORTS_DATA_DIR": str(run_dir / "reports-data"),
        "REPORTS_TOKEN_PREFETCH": "false",
    }
    return GunicornService(
        "reports",
        "reports_api:create_app()",
        env,
        run_dir / "reports.log",
        workers=workers,
        worker_class=REPORTS_WORKER,
    )


def label(service: GunicornService) -> str:
    """Describe the worker settings, as gunicorn flags."""
    if service.worker_class == "sync":
        return f"sync -w{service.workers}"
    kind = "gthread" if service.worker_class == "gthread" else "head-first gthread"
    return f"{kind} -w{service.workers} --threads {service.threads}"


def cpu_seconds(service: GunicornService) -> float:
    """Return the CPU time (user + system) the master and its workers have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in [service.proc.pid if service.proc else 0, *service.worker_pids()]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def worker_rss_mib(service: GunicornService) -> list[float]:
    """Return each worker's resident set size, MiB."""
    sizes = []
    for pid in service.worker_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU time of a process and every descendant, including those that have exited.

    For PostgreSQL and HAProxy: their children come and go, and a reaped child's time is in
    its parent's cutime and cstime.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, IndexError):
            continue
        total += sum(int(field) for field in fields[11:15]) / ticks  # utime, stime, cutime, cstime
        pending += [int(child) for child in children]
    return total


def parent_pid(pid: int) -> int:
    """Return the parent of a process (a PostgreSQL backend's is the postmaster)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
