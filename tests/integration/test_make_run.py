"""`make run`'s script on free ports: the three services start, and a service-to-service call works."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import requests

from tests.support.processes import free_port, wait_until
from tests.support.tokens import client_credentials_form, jwks_json, new_rsa_key

REPO = Path(__file__).resolve().parents[2]


def test_run_local_starts_three_services_and_the_reports_api_calls_the_profile_api(tmp_path: Path) -> None:
    # Free metrics ports too: the defaults (9100-9102) may be taken on a shared machine.
    names = ("ISSUER_PORT", "RESOURCE_PORT", "REPORTS_PORT", "ISSUER_METRICS_PORT", "RESOURCE_METRICS_PORT")
    ports = {name: free_port() for name in (*names, "REPORTS_METRICS_PORT")}
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "ISSUER_DATA_DIR": str(tmp_path / "issuer"),
        "REPORTS_DATA_DIR": str(tmp_path / "reports"),
        "WEB_CONCURRENCY": "2",
    }
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        ["scripts/run-local"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        issuer, reports = f"http://127.0.0.1:{ports['ISSUER_PORT']}", f"http://127.0.0.1:{ports['REPORTS_PORT']}"
        resource = f"http://127.0.0.1:{ports['RESOURCE_PORT']}"
        banner = tmp_path / "run.log"
        wait_until(lambda: b"press Ctrl-C" in banner.read_bytes(), timeout=90, what="make run's banner")
        # Once the banner is out, every worker of every service serves: the README's first
        # request, each on a connection of its own so that all workers get some, never a 503.
        for service in (issuer, resource, reports):
            assert requests.get(f"{service}/readyz", timeout=5).status_code == 200, service
        walk = requests.post(
            f"{issuer}/token",
            data={"grant_type": "password", "username": "alice", "password": "wonderland"},
            timeout=10,
        )
        assert walk.status_code == 200, walk.text
        access = walk.json()["access_token"]
        statuses = [
            requests.get(f"{resource}/api/me", headers={"Authorization": f"Bearer {access}"}, timeout=5).status_code
            for _ in range(20)
        ]
        assert statuses == [200] * 20

        # A batch job registered by the operator calls the reports API, which calls the profile API.
        key = new_rsa_key()
        cli = subprocess.run(
            [
                str(REPO / ".venv/bin/python"),
                "-m",
                "issuer",
                "clients",
                "add",
                "nightly",
                "--grant",
                "client_credentials",
                "--audience",
                "jwt-split-reports",
                "--scope",
                "reports:read",
                "--jwks-file",
                "-",
            ],
            input=jwks_json(key),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        form = client_credentials_form(
            "nightly", key, f"http://localhost:{ports['ISSUER_PORT']}", resource="jwt-split-reports"
        )
        token = requests.post(f"{issuer}/token", data=form, timeout=10).json()["access_token"]
        report = requests.get(f"{reports}/api/report", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert report.status_code == 200, report.text
        assert report.json()["profile_api"]["sub"] == "reports-api"
        assert (tmp_path / "reports" / "client-key.pem").stat().st_mode & 0o777 == 0o600
        # The reports API is the FastAPI app, under uvicorn workers: its OpenAPI document names the scheme.
        document = requests.get(f"{reports}/openapi.json", timeout=10).json()
        assert document["paths"]["/api/report"]["get"]["security"] == [{"bearerAuth": []}, {"dpopAuth": []}]
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=30)
        log.close()
