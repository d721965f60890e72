"""`users delete` while the user's refresh tokens are being used, on PostgreSQL with two issuer workers.

A refresh locks its token's row, then inserts the next token, whose foreign key locks the
user's row (FOR KEY SHARE); a delete locks the user's row, then its cascade the refresh
tokens' rows: the opposite order. The operator's delete must succeed (the device-code poll
got its lock order fixed for the same reason) and the user's tokens must end with it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.stack import REPORTS_AUDIENCE, PostgresStack

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def postgres_stack(postgres_server: str, tmp_path: Path) -> Iterator[PostgresStack]:
    """A stack with the reports API, its issuer on PostgreSQL with two workers."""
    stack = PostgresStack(tmp_path / "stack", server=postgres_server, reports=True)
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def _refresh_storm(stack: PostgresStack, app: str, username: str, stop: threading.Event, tokens: list[str]) -> None:
    """Get tokens with the password grant, then refresh them over and over, until `stop`."""
    session = requests.Session()
    refresh: str | None = None
    while not stop.is_set():
        if refresh is None:
            form = {"grant_type": "password", "username": username, "password": PASSWORD, "resource": REPORTS_AUDIENCE}
        else:
            form = {"grant_type": "refresh_token", "refresh_token": refresh}
        response = session.post(f"{stack.issuer_url}/token", data={"client_id": app, **form}, timeout=30)
        if response.status_code == 200:
            refresh = response.json()["refresh_token"]
            tokens.append(response.json()["access_token"])
        else:
            refresh = None
            time.sleep(0.05)


def test_a_user_is_deleted_while_their_refresh_tokens_are_being_used(postgres_stack: PostgresStack) -> None:
    stack = postgres_stack
    public = stack.reports.env["REPORTS_PUBLIC_URL"]
    stack.issuer_cli_ok(
        "apis", "add", REPORTS_AUDIENCE, "--scope", "reports:read", "--resource-uri", public, "--replace"
    )
    app = f"app-{uuid.uuid4().hex[:6]}"
    stack.issuer_cli_ok("clients", "add", app, "--grant", "password", "--grant", "refresh_token")
    for _ in range(2):  # before the fix, 5 rounds of 6 deadlocked
        username = f"u{uuid.uuid4().hex[:6]}"
        stack.issuer_cli_ok("users", "add", username, "--scope", "reports:read", stdin=PASSWORD + "\n")
        stop = threading.Event()
        tokens: list[str] = []
        threads = [threading.Thread(target=_refresh_storm, args=(stack, app, username, stop, tokens)) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            # Today: "Error: cannot use the database at ...: DeadlockDetected" (exit 1) in most
            # rounds; the user stays, and so do their tokens.
            deleted = stack.issuer_cli("users", "delete", username)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert deleted.returncode == 0, deleted.stderr
        assert tokens, "no token was issued before the delete"
        time.sleep(3)  # the reports API's status lists refresh
        assert stack.get_reports("/api/caller", tokens[-1]).status_code == 401
