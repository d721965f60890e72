"""Device-grant polls racing `users update --scope` and `users delete` on PostgreSQL.

A poll that spent its device code holding only the code's row read its user unlocked
(`oauth._narrowed` through `users.get_by_id`), unlike the password grant (`users.locked`) and
the refresh and code grants (their row read joined to the user's, FOR UPDATE). A narrowing that
committed between that read and the poll's commit found no status-list row of the new family
to end, and the poll then committed a token with the scope just taken away, which the reports
API accepted for its lifetime; and a user's deletion deadlocked with the polls of their codes.
A poll now holds the user's row first (issuer.device_codes); these tests failed before (an
attacker's pass, 2026-12-07). SQLite's one writer orders the two anyway.

The narrowing is `UserStore.update`, the CLI's `users update --scope`, run where the issuer runs
at a moment chosen in advance, so that the polls can be spread around its commit.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.sessions import session_cookie
from tests.support.stack import REPORTS_AUDIENCE, PostgresStack

PASSWORD = "correct horse battery staple 42"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
CODES = 40  # approved device codes per round
ROUNDS = 2  # each round caught the race (6 to 14 tokens of 120 escaped) before the fix
SPREAD = 0.4  # seconds over which a round's polls are sent, centred on the narrowing
POLLERS = 8
REVOCATION_REACHES_THE_APIS = 4.0
CHANGE_AT = """
import time
from issuer.settings import IssuerSettings
from issuer.users import UserStore
settings = IssuerSettings.from_env()
store = UserStore(settings.database(), settings.password_hasher())
while time.time() < {at!r}:
    time.sleep(0.001)
{change}
"""
NARROW = "store.update({user!r}, scope='reports:write')"
DELETE = "store.delete({user!r})"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def postgres_stack(postgres_server: str, tmp_path: Path) -> Iterator[PostgresStack]:
    """A stack with the reports API, its issuer on PostgreSQL with two workers; device codes asked for freely."""
    stack = PostgresStack(
        tmp_path / "stack",
        server=postgres_server,
        reports=True,
        issuer_env={"ISSUER_DEVICE_AUTHORIZATION_RATE_LIMIT": "10000 per minute"},
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def _browser_of(stack: PostgresStack, username: str) -> requests.Session:
    """Return a browser logged in at the issuer as `username` (a login session made where the issuer runs)."""
    browser = requests.Session()
    browser.get(f"{stack.issuer_url}/device", timeout=10)  # the issuer's cookie, to replace
    (cookie,) = [cookie for cookie in browser.cookies if cookie.name == "issuer_session"]
    value = session_cookie(stack, username, ("pwd",))
    browser.cookies.set("issuer_session", value, domain=cookie.domain, path=cookie.path)
    return browser


def _approved_device_codes(stack: PostgresStack, browser: requests.Session, count: int) -> list[str]:
    """Start `count` device authorizations of the command line for both reports scopes; approve each."""
    codes = []
    for _ in range(count):
        started = requests.post(
            f"{stack.issuer_url}/device_authorization",
            data={"client_id": "cli", "resource": REPORTS_AUDIENCE, "scope": "reports:read reports:write"},
            timeout=10,
        )
        assert started.status_code == 200, started.text
        user_code = started.json()["user_code"]
        page = browser.get(f"{stack.issuer_url}/device", params={"user_code": user_code}, timeout=10)
        match = _CSRF.search(page.text)
        assert match is not None, page.text
        decided = browser.post(
            f"{stack.issuer_url}/device/decision",
            data={"csrf_token": match.group(1), "user_code": user_code, "action": "approve"},
            timeout=10,
        )
        assert "Device approved" in decided.text, decided.text
        codes.append(started.json()["device_code"])
    return codes


def _poll_around(stack: PostgresStack, codes: list[str], at: float) -> list[tuple[int, dict[str, Any]]]:
    """Poll each code once, the polls spread over SPREAD seconds around `at`; return every answer's status and body."""
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def poller(mine: list[tuple[int, str]]) -> None:
        session = requests.Session()
        for i, code in mine:
            time.sleep(max(0.0, at - SPREAD / 2 + SPREAD * i / len(codes) - time.time()))
            answer = session.post(
                f"{stack.issuer_url}/token",
                data={"grant_type": DEVICE_CODE, "client_id": "cli", "device_code": code},
                timeout=15,
            )
            with lock:
                answers.append((answer.status_code, answer.json()))

    threads = [
        threading.Thread(target=poller, args=([(i, c) for i, c in enumerate(codes) if i % POLLERS == k],))
        for k in range(POLLERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _register_reports_scopes(stack: PostgresStack) -> None:
    stack.issuer_cli_ok(
        "apis",
        "add",
        REPORTS_AUDIENCE,
        "--scope",
        "reports:read reports:write",
        "--resource-uri",
        stack.reports.env["REPORTS_PUBLIC_URL"],
        "--replace",
    )


def _race(stack: PostgresStack, change: str) -> tuple[str, list[dict[str, Any]], subprocess.CompletedProcess[str]]:
    """Approve CODES device codes of a new user, then poll them around `change` (Python, `store` the user store)."""
    user = f"u{uuid.uuid4().hex[:8]}"
    stack.issuer_cli_ok("users", "add", user, "--scope", "reports:read reports:write", stdin=PASSWORD + "\n")
    codes = _approved_device_codes(stack, _browser_of(stack, user), CODES)
    at = time.time() + 2.5  # the change's process starts meanwhile
    changed: list[subprocess.CompletedProcess[str]] = []

    def make_change() -> None:
        changed.append(stack.issuer_python(CHANGE_AT.format(at=at, change=change.format(user=user))))

    changing = threading.Thread(target=make_change)
    changing.start()
    answers = _poll_around(stack, codes, at)
    changing.join()
    assert len(answers) == len(codes)
    return user, [body for status, body in answers if status == 200], changed[0]


def _accepted_with_read(stack: PostgresStack, issued: list[dict[str, Any]]) -> list[str]:
    """Return the scopes of the tokens holding reports:read that the reports API still accepts."""
    return [
        body["scope"]
        for body in issued
        if "reports:read" in body["scope"].split()
        and stack.get_reports("/api/caller", body["access_token"]).status_code == 200
    ]


def test_device_tokens_issued_while_the_users_scope_is_narrowed_end(postgres_stack: PostgresStack) -> None:
    stack = postgres_stack
    _register_reports_scopes(stack)
    escaped: list[str] = []
    raced = 0
    for _ in range(ROUNDS + 2):  # on a loaded machine the change may start after every poll: that round does not count
        _, issued, narrowed = _race(stack, NARROW)
        assert narrowed.returncode == 0, narrowed.stderr
        assert len(issued) == CODES
        time.sleep(REVOCATION_REACHES_THE_APIS)
        escaped += _accepted_with_read(stack, issued)  # tokens issued before the narrowing end too
        raced += any(body["scope"] == "reports:write" for body in issued)  # the narrowing committed among the polls
        if raced == ROUNDS:
            break
    assert escaped == [], f"{len(escaped)} device tokens kept reports:read after the user lost it"
    assert raced == ROUNDS, "the narrowing did not commit during the polls"


def test_a_users_deletion_while_their_device_codes_are_polled_succeeds(postgres_stack: PostgresStack) -> None:
    """`users delete` (UserStore.delete) racing the polls of the user's approved device codes deadlocks, and loses.

    A poll holds its device code's row and inserts the new refresh token, whose key on the
    user waits for the deletion; the deletion's cascade to `device_codes` waits for the poll's
    row: PostgreSQL breaks the deadlock after a second by failing the deletion (in 5 of the 6
    rounds tried). The operator's `users delete` then says "cannot use the database ...:
    DeadlockDetected", and the user and their tokens stay.
    """
    stack = postgres_stack
    _register_reports_scopes(stack)
    for _ in range(ROUNDS):
        user, issued, deleted = _race(stack, DELETE)
        assert deleted.returncode == 0, deleted.stderr[-500:]
        assert user not in stack.issuer_cli("users", "list").stdout
        time.sleep(REVOCATION_REACHES_THE_APIS)
        assert _accepted_with_read(stack, issued) == []
