"""Only the reports API's rows (8, 8a, 8b): `python -m bench.reports`, in about half a minute.

Starts the issuer and the reports API (four uvicorn workers) under gunicorn on 127.0.0.1, then
drives the unprotected `/healthz` and the protected `/api/caller` (the same token on every
request, then a new token on every request) with wrk in `BENCH_ROUNDS` interleaved rounds of
`BENCH_SECONDS` each, and prints each ratio beside its target, as `make bench` does.
"""

from __future__ import annotations

import sys
import time

from bench import report
from bench.__main__ import REPO, REPORTS_WORKERS, reports_http, say
from bench.services import bench_issuer, reports_service
from tests.support.processes import GunicornService


def main() -> int:
    """Measure and print the reports rows."""
    run_dir = REPO / "var" / "bench" / f"reports-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    data_dir = run_dir / "issuer"
    issuer = bench_issuer(run_dir, data_dir, workers=1, threads=2)
    services: list[GunicornService] = [issuer]
    try:
        issuer.start().wait_answering(timeout=60)
        reports = reports_service(run_dir, issuer, workers=REPORTS_WORKERS)
        services.append(reports)
        measured = reports_http(reports, data_dir, run_dir)
    finally:
        for service in services:
            service.stop()
    for measure, figure, ratio, target, met in report.reports_rows(measured):
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(f"{measure:60s} {figure:32s} {ratio:18s} {target:7s} {verdict}")
    say(f"8b against the bare /healthz, as measured before: {measured['protected_new_over_bare']:.2f}")
    say(f"rounds (rps): { {name: run['rounds'] for name, run in measured.items() if isinstance(run, dict)} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())
