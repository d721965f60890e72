"""The compose backend: both services as real containers, driven like the loopback stack.

Each stack is its own compose project (`-p`), on free host ports, with a generated override
file for test settings; `close()` always runs `docker compose down -v --remove-orphans`.
Overlays such as compose.scale.yaml come between compose.yaml and that override (`files`).
Nothing here skips: without a working Docker the container tests fail with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.processes import answers, free_port, wait_until
from tests.support.stack import TEST_RESOURCE_ENV, Stack

REPO = Path(__file__).resolve().parents[2]
# compose.yaml's metrics ports, reachable on the compose network only (`expose`).
METRICS_PORTS = {"issuer": 9100, "resource": 9101, "reports": 9102}

# Run inside a service's container: print its metrics port's text exposition.
SCRAPE = """
import sys, urllib.request as u
with u.build_opener(u.ProxyHandler({})).open(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10) as response:
    sys.stdout.write(response.read().decode())
"""


def compose_available() -> str | None:
    """Return why Docker Compose cannot be used here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker client is not installed (run scripts/docker-setup)"
    for command in (["docker", "info"], ["docker", "compose", "version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            return f"`{' '.join(command)}` failed: {result.stderr.strip()[:300]} (run scripts/docker-setup)"
    return None


def build_images() -> None:
    """Build the images once per test session (later `up`s reuse them)."""
    subprocess.run(["docker", "compose", "-f", str(REPO / "compose.yaml"), "build"], check=True, timeout=900)


class ComposeStack(Stack):
    """The issuer and the resource as containers of a compose project of their own."""

    backend = "compose"

    def __init__(
        self,
        root: Path,
        *,
        issuer_env: Mapping[str, str] | None = None,
        resource_env: Mapping[str, str] | None = None,
        workers: int = 2,
        reports: bool = False,
        files: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare the project; `files` are overlays on compose.yaml, `env` extra variables for compose."""
        root.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self.with_reports = reports
        self.files = [REPO / "compose.yaml", *files]
        self.project = f"jwtsplit-test-{uuid.uuid4().hex[:8]}"
        issuer_port, resource_port, reports_port = free_port(), free_port(), free_port()
        self.public_issuer = f"http://localhost:{issuer_port}"
        self.issuer_url = f"http://127.0.0.1:{issuer_port}"
        self.resource_url = f"http://127.0.0.1:{resource_port}"
        self.reports_url = f"http://127.0.0.1:{reports_port}"
        self.env = {
            **os.environ,
            "ISSUER_PORT": str(issuer_port),
            "RESOURCE_PORT": str(resource_port),
            "REPORTS_PORT": str(reports_port),
            "WEB_CONCURRENCY": str(workers),
            **(env or {}),
        }
        override = {
            "services": {
                # As on loopback (tests/support/processes.py): the CLI's changes reach the next request.
                "issuer": {
                    "environment": {"ISSUER_REGISTRY_CACHE_TTL": "0", **(issuer_env or {})},
                    "healthcheck": {"interval": "1s"},
                },
                "resource": {
                    "environment": {"RESOURCE_JWKS_COOLDOWN": "1", **TEST_RESOURCE_ENV, **(resource_env or {})},
                    "healthcheck": {"interval": "1s"},
                },
                "reports": {"healthcheck": {"interval": "1s"}},
            }
        }
        self.override = root / "compose.test.yaml"
        self.override.write_text(json.dumps(override, indent=2))  # JSON is YAML
        self.started = False

    def command(self, *args: str) -> list[str]:
        """Return the `docker compose ARGS` command line of this project (to run in the background)."""
        files = (option for file in [*self.files, self.override] for option in ("-f", str(file)))
        return ["docker", "compose", "-p", self.project, *files, *args]

    def compose(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `docker compose` on this project."""
        result = subprocess.run(
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def up(self, timeout: int = 240) -> None:
        """Start every service of the project and wait until all are healthy."""
        self.started = True
        result = self.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", str(timeout), check=False)
        if result.returncode != 0:
            state = self.compose("ps", "-a", check=False).stdout
            logs = self.compose("logs", "--no-color", "--tail", "20", check=False).stdout
            raise AssertionError(f"docker compose up failed:\n{result.stderr}\n{state}\n{logs}")

    def start_issuer(self) -> None:
        """Start (or restart) the issuer container and wait until it answers."""
        self.started = True
        self.compose("up", "-d", "--no-build", "issuer")
        self._wait_for("issuer", f"{self.issuer_url}/healthz")

    def stop_issuer(self) -> None:
        """Stop the issuer container."""
        self.compose("stop", "issuer")

    def freeze_issuer(self) -> None:
        """Pause the issuer container: the kernel still accepts connections, nothing answers."""
        self.compose("pause", "issuer")

    def thaw_issuer(self) -> None:
        """Unpause the issuer container."""
        self.compose("unpause", "issuer")

    def start_resource(self) -> None:
        """Start the resource container and wait until it answers (ready or not)."""
        self.started = True
        self.compose("up", "-d", "--no-build", "--no-deps", "resource")
        self._wait_for("resource", f"{self.resource_url}/healthz")

    def start_reports(self) -> None:
        """Register the reports API (compose's `register` service runs first) and wait until it is ready."""
        self.started = True
        self.compose("up", "-d", "--no-build", "reports")
        self._wait_for("reports", f"{self.reports_url}/readyz")

    def _wait_for(self, service: str, url: str) -> None:
        try:
            wait_until(lambda: answers(url), timeout=60, what=f"the {service} container at {url}")
        except AssertionError as exc:
            state = self.compose("ps", "-a", check=False).stdout
            logs = self.compose("logs", "--no-color", "--tail", "40", service, check=False).stdout
            raise AssertionError(f"{exc}\n{state}\n{logs}") from None

    def close(self) -> None:
        """Remove the containers, the network and the volume."""
        if self.started:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)

    def issuer_cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run `python -m issuer ARGS` inside the issuer container."""
        return self.compose("exec", "-T", "issuer", "python", "-m", "issuer", *args, stdin=stdin, check=False)

    def issuer_logs(self) -> str:
        """Return the issuer container's output."""
        return self.compose("logs", "--no-color", "--no-log-prefix", "issuer").stdout

    def resource_logs(self) -> str:
        """Return the resource container's output."""
        return self.compose("logs", "--no-color", "--no-log-prefix", "resource").stdout

    def reports_logs(self) -> str:
        """Return the reports container's output."""
        return self.compose("logs", "--no-color", "--no-log-prefix", "reports").stdout

    def metrics_text(self, service: str) -> str:
        """Return what `service`'s metrics port serves, read inside its container (the port is not published)."""
        result = self.compose("exec", "-T", service, "python", "-c", SCRAPE, str(METRICS_PORTS[service]))
        return result.stdout

    def issuer_python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run Python code inside the issuer container."""
        return self.compose("exec", "-T", "issuer", "python", "-c", code, check=False)
