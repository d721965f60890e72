"""Running stacks for integration tests: both services as real gunicorn processes on loopback.

A stack is driven only over HTTP (and the issuer CLI, as an operator would); the compose
backend offers the same methods so the same test functions run against both deployments.
"""

from __future__ import annotations

import abc
import base64
import concurrent.futures
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.databases import fresh_database
from tests.support.processes import (
    count_events,
    free_port,
    issuer_process,
    pids_that_logged,
    reports_process,
    resource_process,
    stop_all,
    wait_until,
)
from tests.support.tokens import client_credentials_form, jwks_json

# The reports API's registration at the issuer, as an operator runs it (compose.yaml's
# `register` service and scripts/run-local run the same commands).
REPORTS_AUDIENCE = "jwt-split-reports"
# The browser and flow tests log in from one address (127.0.0.1) many times a minute on one
# stack: the resource's /callback limit per address (10 a minute) would refuse them. The limit
# itself is tested in tests/unit/resource/test_pages.py.
TEST_RESOURCE_ENV = {"RESOURCE_CALLBACK_RATE_LIMIT": "600 per minute"}
REPORTS_CLIENT = "reports-api"


def reports_registration(public_url: str, client_jwks_url: str) -> list[list[str]]:
    """Return the issuer CLI commands that register the reports API (also by its public URL) and its client."""
    return [
        ["apis", "add", REPORTS_AUDIENCE, "--scope", "reports:read", "--resource-uri", public_url, "--replace"],
        [
            "clients",
            "add",
            REPORTS_CLIENT,
            "--grant",
            "client_credentials",
            "--audience",
            "jwt-split-api",
            "--scope",
            "profile",
            "--jwks-uri",
            client_jwks_url,
            "--replace",
        ],
    ]


# Print the kid and PEM of the issuer's active key: what an attacker with the database and the
# key-encryption key would have. Only tests do this, to show what the verifier checks beyond
# the signature.
EXPORT_SIGNING_KEY = """
from cryptography.hazmat.primitives import serialization as s
from issuer.settings import IssuerSettings
settings = IssuerSettings.from_env()
key = settings.key_store(settings.database(), settings.load_kek()).signing_key()
pem = key.private_key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode()
print(key.kid + "\\n" + pem, end="")
"""


class Stack(abc.ABC):
    """What every backend offers: lifecycle, operator access and HTTP helpers."""

    backend = "abstract"
    public_issuer: str
    issuer_url: str
    resource_url: str
    reports_url: str
    with_reports: bool
    workers: int

    @abc.abstractmethod
    def __init__(
        self,
        root: Path,
        *,
        issuer_env: Mapping[str, str] | None = None,
        resource_env: Mapping[str, str] | None = None,
        workers: int = 2,
        reports: bool = False,
    ) -> None:
        """Prepare, without starting, a stack whose files live under `root` (with the reports API if asked)."""

    def start(self) -> Stack:
        """Start the services and wait until the APIs are ready."""
        self.start_issuer()
        self._start_apis()
        if self.with_reports:
            wait_until(self.all_reports_workers_hold_tokens, timeout=30, what="every reports worker's service token")
        wait_until(self.all_workers_hold_keys, timeout=30, what="every resource worker to load keys")
        return self

    def _start_apis(self) -> None:
        """Start the resource, then the reports API if the stack has it."""
        self.start_resource()
        if self.with_reports:
            self.start_reports()

    def all_reports_workers_hold_tokens(self) -> bool:
        """Return whether every reports worker has fetched its own service token (it does at start)."""
        return len(pids_that_logged(self.reports_logs(), "service token fetched")) >= self.workers

    def all_workers_hold_keys(self) -> bool:
        """Return whether every resource worker has logged loading the JWKS."""
        return len(pids_that_logged(self.resource_logs(), "jwks loaded")) >= self.workers

    @abc.abstractmethod
    def start_issuer(self) -> None:
        """Start (or restart) the issuer and wait until it answers."""

    @abc.abstractmethod
    def stop_issuer(self) -> None:
        """Stop the issuer (connections are then refused)."""

    @abc.abstractmethod
    def freeze_issuer(self) -> None:
        """Make the issuer accept connections but never answer."""

    @abc.abstractmethod
    def thaw_issuer(self) -> None:
        """Undo `freeze_issuer`."""

    @abc.abstractmethod
    def start_resource(self) -> None:
        """Start the resource and wait until it answers (ready or not)."""

    @abc.abstractmethod
    def start_reports(self) -> None:
        """Register the reports API and its client at the issuer, start it and wait until it is ready."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and remove everything."""

    @abc.abstractmethod
    def issuer_cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run `python -m issuer ARGS` where the issuer's data is, as an operator would."""

    def issuer_cli_ok(self, *args: str, stdin: str = "") -> str:
        """Run `python -m issuer ARGS` as `issuer_cli` does, asserting that it succeeds; return what it printed."""
        done = self.issuer_cli(*args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done.stdout

    @abc.abstractmethod
    def issuer_logs(self) -> str:
        """Return everything the issuer has logged."""

    @abc.abstractmethod
    def resource_logs(self) -> str:
        """Return everything the resource has logged."""

    @abc.abstractmethod
    def reports_logs(self) -> str:
        """Return everything the reports API has logged."""

    @abc.abstractmethod
    def issuer_python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run Python code where the issuer runs, with its settings (as `issuer_cli` does)."""

    # -- derived helpers ----------------------------------------------------------------------

    def active_private_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        """Return the issuer's signing key, unsealed from its database (to forge claims tests)."""
        result = self.issuer_python(EXPORT_SIGNING_KEY)
        assert result.returncode == 0, result.stderr
        kid, _, pem = result.stdout.partition("\n")
        key = serialization.load_pem_private_key(pem.encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return kid, key

    def jwks_fetches(self) -> int:
        """Return how many times the issuer has served the JWKS."""
        return count_events(self.issuer_logs(), "request", "/.well-known/jwks.json")

    def token(self, username: str = "alice", password: str = "wonderland", **params: str) -> dict[str, Any]:
        """Get tokens with the password grant, as the README's curl walk-through does."""
        response = requests.post(
            f"{self.issuer_url}/token",
            data={"grant_type": "password", "username": username, "password": password, **params},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def user_id(self, username: str) -> str:
        """Return a user's stable id (their `sub`), as `users list` shows it to an operator."""
        listed = self.issuer_cli("users", "list")
        assert listed.returncode == 0, listed.stderr
        for line in listed.stdout.splitlines():
            name, _, rest = line.partition("  id ")
            if name == username:
                return rest.split()[0]
        raise AssertionError(f"no user {username!r} in {listed.stdout!r}")

    def register_client(
        self, key: rsa.RSAPrivateKey, *args: str, prefix: str = "svc", client_id: str | None = None
    ) -> str:
        """Register a client_credentials client with the public half of `key` from the CLI; return its id.

        A new id unless `client_id` is given (with `--replace` in `args`, a registration changed).
        """
        client_id = client_id or f"{prefix}-{uuid.uuid4().hex[:8]}"
        added = self.issuer_cli(
            "clients",
            "add",
            client_id,
            "--grant",
            "client_credentials",
            "--jwks-file",
            "-",
            *args,
            stdin=jwks_json(key),
        )
        assert added.returncode == 0, added.stderr
        return client_id

    def service_token(self, client_id: str, key: rsa.RSAPrivateKey, **form: str) -> requests.Response:
        """Ask for a client-credentials token, signing in with `key` (private_key_jwt)."""
        data = client_credentials_form(client_id, key, self.public_issuer, **form)
        return requests.post(f"{self.issuer_url}/token", data=data, timeout=10)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """GET a resource path, with a bearer token if given."""
        return _get(f"{self.resource_url}{path}", token, **kwargs)

    def get_reports(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """GET a path of the reports API, with a bearer token if given."""
        return _get(f"{self.reports_url}{path}", token, **kwargs)


def _get(url: str, token: str | None, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, timeout=10, **kwargs)


class LoopbackStack(Stack):
    """The issuer and the resource as gunicorn processes on free loopback ports."""

    backend = "loopback"

    def __init__(
        self,
        root: Path,
        *,
        issuer_env: Mapping[str, str] | None = None,
        resource_env: Mapping[str, str] | None = None,
        workers: int = 2,
        reports: bool = False,
    ) -> None:
        self.root = root
        self.workers = workers
        self.with_reports = reports
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "issuer-data"
        resource_port = free_port()
        self.issuer = issuer_process(
            root,
            data_dir=self.data_dir,
            env={
                "ISSUER_WEB_REDIRECT_URIS": f"http://localhost:{resource_port}/callback",
                "ISSUER_WEB_POST_LOGOUT_REDIRECT_URIS": f"http://localhost:{resource_port}/logged-out",
                "ISSUER_AUDIENCE_RESOURCE_URIS": f"http://localhost:{resource_port}",
                **(issuer_env or {}),
            },
            workers=workers,
        )
        self.resource = resource_process(
            root,
            self.issuer,
            port=resource_port,
            env={"RESOURCE_JWKS_COOLDOWN": "1", **TEST_RESOURCE_ENV, **(resource_env or {})},
            workers=workers,
        )
        self.reports = reports_process(
            root, self.issuer, self.resource, data_dir=root / "reports-data", workers=workers
        )
        self.public_issuer = self.issuer.env["ISSUER_URL"]
        self.issuer_url = self.issuer.url
        self.resource_url = self.resource.url
        self.reports_url = self.reports.url

    # -- lifecycle ----------------------------------------------------------------------------

    def start_issuer(self) -> None:
        """Start the issuer and wait until it answers."""
        self.issuer.start().wait_answering()

    def stop_issuer(self) -> None:
        """Stop the issuer process (connections are then refused)."""
        self.issuer.stop()

    def freeze_issuer(self) -> None:
        """Make the issuer accept connections but never answer (SIGSTOP)."""
        self.issuer.signal(signal.SIGSTOP)

    def thaw_issuer(self) -> None:
        """Undo `freeze_issuer`."""
        self.issuer.signal(signal.SIGCONT)

    def start_resource(self) -> None:
        """Start the resource and wait until it answers (ready or not)."""
        self.resource.start().wait_answering()

    def _start_apis(self) -> None:
        """Start the resource and the reports API side by side: neither needs the other to start (CI time)."""
        if not self.with_reports:
            self.start_resource()
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            resource = pool.submit(self.start_resource)
            self.start_reports()
            resource.result()

    def start_reports(self) -> None:
        """Register the reports API and its client from the issuer CLI, start it, wait until it is ready."""
        public_url = self.reports.env["REPORTS_PUBLIC_URL"]
        commands = reports_registration(public_url, f"{self.reports.url}/client-jwks.json")
        # Side by side: neither registration needs the other, and each is a process start (CI time).
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(commands)) as pool:
            for result in pool.map(lambda command: self.issuer_cli(*command), commands):
                assert result.returncode == 0, result.stderr
        self.reports.start().wait_answering("/readyz", timeout=30)

    def close(self) -> None:
        """Stop everything."""
        stop_all([self.reports, self.resource, self.issuer])

    # -- operator access ------------------------------------------------------------------------

    def issuer_cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run `python -m issuer ARGS` against the issuer's data, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "issuer", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **self.issuer.env},
            timeout=60,
            check=False,
        )

    def issuer_logs(self) -> str:
        """Return everything the issuer has logged."""
        return self.issuer.log()

    def resource_logs(self) -> str:
        """Return everything the resource has logged."""
        return self.resource.log()

    def reports_logs(self) -> str:
        """Return everything the reports API has logged."""
        return self.reports.log()

    def issuer_python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run Python code against the issuer's data, with its environment."""
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, **self.issuer.env},
            timeout=60,
            check=False,
        )


class PostgresStack(LoopbackStack):
    """The loopback stack with the issuer on PostgreSQL: a database of its own on `server`, dropped at close.

    The key-encryption key and the session secret are then required (no data directory
    generates them), as in any PostgreSQL deployment.
    """

    backend = "postgresql"

    def __init__(self, root: Path, *, server: str, issuer_env: Mapping[str, str] | None = None, **options: Any) -> None:
        self._database = fresh_database(server)
        url = self._database.__enter__()
        env = {
            "ISSUER_DATABASE_URL": url,
            "ISSUER_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
            "ISSUER_SESSION_SECRET": secrets.token_urlsafe(48),
            **(issuer_env or {}),
        }
        super().__init__(root, issuer_env=env, **options)

    def close(self) -> None:
        """Stop everything, then drop the database."""
        try:
            super().close()
        finally:
            self._database.__exit__(None, None, None)


def module_stack(root: Path, **options: Any) -> Iterator[LoopbackStack]:
    """Yield a started loopback stack of a test module's own (`**options` as LoopbackStack's), closed after."""
    stack = LoopbackStack(root, **options)
    try:
        stack.start()
        yield stack
    finally:
        stack.close()
