"""What the bench reads from the services it runs (tests/support/processes.py starts them)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.processes import GunicornService


def label(service: GunicornService) -> str:
    """Describe the worker settings, as gunicorn flags."""
    if service.worker_class == "sync":
        return f"sync -w{service.workers}"
    return f"gthread -w{service.workers} --threads {service.threads}"


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
