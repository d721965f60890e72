"""`make run` serves each service's metrics on a port of its own, bound to 127.0.0.1 only."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from pathlib import Path

from tests.support.metrics import scrape
from tests.support.processes import answers, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
APP_PORTS = ("ISSUER_PORT", "RESOURCE_PORT", "REPORTS_PORT")
METRICS_PORTS = ("ISSUER_METRICS_PORT", "RESOURCE_METRICS_PORT", "REPORTS_METRICS_PORT")


def listening_addresses(port: int) -> set[str]:
    """Return the IPv4 addresses something listens on at `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_run_local_binds_every_metrics_port_to_loopback_apart_from_the_app_port(tmp_path: Path) -> None:
    ports = {name: free_port() for name in (*APP_PORTS, *METRICS_PORTS)}
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "ISSUER_DATA_DIR": str(tmp_path / "issuer"),
        "REPORTS_DATA_DIR": str(tmp_path / "reports"),
        "WEB_CONCURRENCY": "1",
        # Set by the caller, still loopback: make run decides the bind address itself.
        "ISSUER_METRICS_HOST": "0.0.0.0",  # noqa: S104
    }
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            ["scripts/run-local"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            for name in METRICS_PORTS:
                url = f"http://127.0.0.1:{ports[name]}/metrics"
                wait_until(functools.partial(answers, url), timeout=60, what=f"make run's metrics at {url}")
                assert listening_addresses(ports[name]) == {"127.0.0.1"}
                assert scrape(url)  # a Prometheus text exposition
            for app, metrics in zip(APP_PORTS, METRICS_PORTS, strict=True):
                assert ports[app] != ports[metrics]
                wait_until(functools.partial(answers, f"http://127.0.0.1:{ports[app]}/healthz"), timeout=60)
                assert not answers(f"http://127.0.0.1:{ports[app]}/metrics")
        finally:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=30)
