"""The password limits of a real issuer (gunicorn on loopback) under concurrent guessing.

Each password check is charged before it runs, so however many guesses arrive at once, no more
checks run than the limit allows: `ISSUER_LOGIN_RATE_LIMIT` in each worker with the counters in
memory, and in all workers together with the counters in Redis (docs/security.md). The checks
are counted twice: by the answers (a refused password, not a 429) and by the issuer's
`login.failed` audit lines. Each test guesses at names of its own, so no count is shared with
another test, even in the session's one Redis.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.processes import GunicornService, issuer_process, log_events
from tests.support.threads import together

GUESSES = 32
LIMIT = 5
WORKERS = 2
WRONG = "wrong password 42"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
LOGIN_FAILED = "The username or password is incorrect."

Guess = Callable[[requests.Session, str], requests.Response]


@pytest.fixture(scope="module", params=["memory", "redis"])
def issuer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    """An issuer of two workers with four threads each, counting in memory, then in Redis."""
    storage = request.getfixturevalue("redis_server") if request.param == "redis" else "memory://"
    root = tmp_path_factory.mktemp(f"limits-{request.param}")
    service = issuer_process(
        root,
        data_dir=root / "issuer-data",
        workers=WORKERS,
        env={
            "ISSUER_LOGIN_RATE_LIMIT": f"{LIMIT} per minute",
            "ISSUER_ADDRESS_RATE_LIMIT": "100000 per minute",  # the per-account limit is the one counted
            "ISSUER_RATE_LIMIT_STORAGE": storage,
        },
    )
    try:
        service.start().wait_answering()
        yield service
    finally:
        service.stop()


def _bound(issuer: GunicornService) -> int:
    """Return the documented bound: the limit in each worker in memory, the limit for all in Redis."""
    return LIMIT if issuer.env["ISSUER_RATE_LIMIT_STORAGE"].startswith("redis://") else LIMIT * WORKERS


def _audited_failures(issuer: GunicornService, tag: str) -> int:
    """Return how many `login.failed` lines the requests tagged `tag` (in their request ids) wrote."""
    return sum(
        1
        for entry in log_events(issuer.log())
        if entry.get("audit") is True and entry.get("event") == "login.failed" and tag in entry.get("request_id", "")
    )


def _all_at_once(sessions: list[requests.Session], guess: Guess, tag: str) -> list[requests.Response]:
    """Send one guess from each session, all released by one barrier; return the answers."""
    queue = [(session, f"{tag}-{i}") for i, session in enumerate(sessions)]
    answers = together(len(sessions), lambda: guess(*queue.pop()))
    responses = [answer for answer in answers if isinstance(answer, requests.Response)]
    assert len(responses) == len(sessions), answers
    return responses


def test_concurrent_password_grants_make_at_most_the_documented_number_of_checks(issuer: GunicornService) -> None:
    name = f"nobody-{secrets.token_hex(4)}"  # unknown: checked against the dummy hash, at the same cost

    def guess(session: requests.Session, request_id: str) -> requests.Response:
        form = {"grant_type": "password", "username": name, "password": WRONG}
        return session.post(f"{issuer.url}/token", data=form, headers={"X-Request-ID": request_id}, timeout=60)

    statuses = sorted(
        answer.status_code for answer in _all_at_once([requests.Session() for _ in range(GUESSES)], guess, name)
    )
    checked = statuses.count(400)
    assert checked + statuses.count(429) == GUESSES, statuses
    assert LIMIT <= checked <= _bound(issuer), statuses
    assert _audited_failures(issuer, name) == checked


def test_concurrent_login_forms_make_at_most_the_documented_number_of_checks(issuer: GunicornService) -> None:
    name = f"nobody-{secrets.token_hex(4)}"
    sessions = [requests.Session() for _ in range(GUESSES)]
    tokens: dict[int, str] = {}
    for session in sessions:  # each browser opens the form first: a session cookie and a CSRF token
        match = CSRF_INPUT.search(session.get(f"{issuer.url}/login", timeout=10).text)
        assert match is not None
        tokens[id(session)] = match.group(1)

    def guess(session: requests.Session, request_id: str) -> requests.Response:
        form = {"csrf_token": tokens[id(session)], "username": name, "password": WRONG}
        return session.post(f"{issuer.url}/login", data=form, headers={"X-Request-ID": request_id}, timeout=60)

    answers = _all_at_once(sessions, guess, name)
    checked = sum(1 for answer in answers if answer.status_code == 200 and LOGIN_FAILED in answer.text)
    limited = sum(1 for answer in answers if answer.status_code == 429)
    assert checked + limited == GUESSES, [answer.status_code for answer in answers]
    assert LIMIT <= checked <= _bound(issuer)
    assert _audited_failures(issuer, name) == checked


def test_a_correct_password_is_not_charged(issuer: GunicornService) -> None:
    name, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    added = subprocess.run(
        [sys.executable, "-m", "issuer", "users", "add", name],
        input=password,
        capture_output=True,
        text=True,
        env={**os.environ, **issuer.env},
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr

    def attempt(session: requests.Session, secret: str) -> int:
        form = {"grant_type": "password", "username": name, "password": secret}
        return session.post(f"{issuer.url}/token", data=form, timeout=30).status_code

    # One connection, so one worker: the one whose budget the successes went through.
    with requests.Session() as session:
        assert [attempt(session, password) for _ in range(2 * LIMIT)] == [200] * (2 * LIMIT)
        assert [attempt(session, WRONG) for _ in range(LIMIT)] == [400] * LIMIT
        assert attempt(session, WRONG) == 429
