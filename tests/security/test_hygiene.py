"""Secrets hygiene and username enumeration, measured on real services.

A whole session (password grant, refresh, revocation, a browser-style login through the
authorization code flow, failures) runs against both services; their logs and their metrics
must then hold no password, token, refresh token, code, cookie secret or key material.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient

import issuer
from issuer.settings import IssuerSettings
from tests.support.processes import log_events
from tests.support.stack import LoopbackStack, module_stack

JWT_SHAPE = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{20,}")


@pytest.fixture(scope="module")
def session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    yield from module_stack(tmp_path_factory.mktemp("hygiene"))


def _browser_login(stack: LoopbackStack, username: str, password: str) -> requests.Session:
    """Log in through the resource's /login, the issuer's form and the callback, as a browser would."""
    browser = requests.Session()
    resource = stack.resource_url.replace("127.0.0.1", "localhost")
    form = browser.get(f"{resource}/login", timeout=10)
    assert form.url.startswith(stack.public_issuer)
    match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert match is not None
    done = browser.post(
        f"{stack.public_issuer}/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
        timeout=10,
    )
    assert done.url == f"{resource}/", done.text
    assert f"Hello, {username}" in done.text
    return browser


def test_logs_hold_no_secret_after_a_whole_session(session_stack: LoopbackStack) -> None:
    stack = session_stack
    secrets: list[str] = ["wonderland", "builder", "wrong password 42"]

    tokens = stack.token("alice", "wonderland")
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    refreshed = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        timeout=10,
    ).json()
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    assert stack.get("/api/me", refreshed["access_token"]).status_code == 200
    requests.post(
        f"{stack.issuer_url}/revoke", data={"token": refreshed["refresh_token"], "client_id": "cli"}, timeout=10
    )
    failed = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "password", "username": "bob", "password": "wrong password 42"},
        timeout=10,
    )
    assert failed.status_code == 400
    # A password typed into the name box: the audit trail names only users that exist.
    mistyped = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "password", "username": "alice-hunter2-typed-here", "password": "wonderland"},
        timeout=10,
    )
    assert mistyped.status_code == 400
    secrets.append("alice-hunter2-typed-here")
    assert stack.get("/api/me", tokens["access_token"] + "x").status_code == 401

    browser = _browser_login(stack, "bob", "builder")
    secrets += [cookie.value for cookie in browser.cookies if cookie.value]
    secrets.append((stack.data_dir / "session-secret").read_text().strip())
    secrets.append((stack.data_dir / "key-encryption-key").read_text().strip())
    _, key = stack.active_private_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    body = [line for line in pem.decode().splitlines() if not line.startswith("-----")]
    secrets += body[1:4]  # a few lines of the private key itself

    logs = stack.issuer_logs() + stack.resource_logs()
    assert '"msg": "issued access token"' in logs  # the logs did record the session
    # The metrics' labels are a fixed, small set: nothing a client sent or a secret reaches them.
    metrics = (
        requests.get(stack.issuer.metrics_url, timeout=10).text
        + requests.get(stack.resource.metrics_url, timeout=10).text
    )
    assert 'jwt_split_logins_total{result="failure"}' in metrics  # they did count the session
    assert "jwt_split_token_verifications_total" in metrics
    assert not JWT_SHAPE.search(metrics)
    assert [secret[:12] + "..." for secret in secrets if secret and secret in metrics] == []
    assert "alice" not in metrics  # usernames are no label either
    assert "bob" not in metrics
    trail = {entry["event"] for entry in log_events(logs) if entry.get("audit") is True}
    assert {"login.succeeded", "login.failed", "token.revoked"} <= trail  # and its audit trail
    assert "PRIVATE KEY" not in logs
    assert not JWT_SHAPE.search(logs)
    leaked = [secret[:12] + "..." for secret in secrets if secret and secret in logs]
    assert leaked == []


def test_errors_never_echo_what_was_sent(session_stack: LoopbackStack) -> None:
    marker = "eyJtarker" + "Q" * 40
    for response in (
        session_stack.get("/api/me", f"{marker}.{marker}.{marker}"),
        requests.post(
            f"{session_stack.issuer_url}/token",
            data={"grant_type": "refresh_token", "refresh_token": marker},
            timeout=10,
        ),
        requests.post(f"{session_stack.issuer_url}/token", data={"grant_type": marker}, timeout=10),
    ):
        assert 400 <= response.status_code < 500
        assert marker not in response.text
        assert marker not in str(response.headers)


def test_the_issuer_data_directory_and_every_file_in_it_are_private(session_stack: LoopbackStack) -> None:
    """Password hashes, sealed keys, the key-encryption key and the cookie secret: owner only."""
    data_dir = session_stack.data_dir
    names = {path.name for path in data_dir.iterdir()}
    assert {"issuer.sqlite3", "key-encryption-key", "session-secret"} <= names
    for path in [data_dir, *data_dir.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


@pytest.fixture
def full_cost_client(tmp_path: Path) -> FlaskClient:
    """The issuer with its production argon2 cost and rate limits out of the way."""
    app = issuer.create_app(
        IssuerSettings(
            data_dir=tmp_path / "issuer",
            demo_users="alice:wonderland:profile",
            login_rate_limit="100000 per minute",
            address_rate_limit="100000 per minute",
        )
    )
    return app.test_client()


def _attempt(client: FlaskClient, username: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = client.post("/token", data={"grant_type": "password", "username": username, "password": "guess1234"})
    elapsed = time.perf_counter() - started
    return elapsed, response.get_data(as_text=True)


def test_unknown_and_known_users_fail_alike_in_message_and_time(full_cost_client: FlaskClient) -> None:
    known: list[float] = []
    unknown: list[float] = []
    bodies = set()
    for index in range(25):  # interleaved, so drift on the machine hits both alike
        elapsed, body = _attempt(full_cost_client, "alice")
        known.append(elapsed)
        bodies.add(body)
        elapsed, body = _attempt(full_cost_client, f"nobody{index}")
        unknown.append(elapsed)
        bodies.add(body)
    assert len(bodies) == 1, bodies
    ratio = statistics.median(unknown) / statistics.median(known)
    # An unknown name still costs a full argon2 check; skipping it would make this ratio ~0.01.
    assert 0.6 < ratio < 1.6, (statistics.median(known), statistics.median(unknown))
