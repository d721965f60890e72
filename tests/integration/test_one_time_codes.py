"""One-time codes (TOTP, RFC 6238) at a real issuer (gunicorn on loopback), over HTTP.

A user enrolls on /account (the secret from the page, the first code computed as an
authenticator app would), then every login asks for a code after the password; the half-done
login is not a login and expires; wrong codes spend the password's budget and are audited;
the password grant refuses the user; `users reset-factors` takes the factor away.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pyotp
import pytest
import requests

from tests.support.metrics import delta, scrape
from tests.support.processes import GunicornService, issuer_process, log_events

LIMIT = 3
CODE_TTL = 3
PASSWORD = "correct horse battery"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'<output id="secret" class="secret">([A-Z2-7 ]+)</output>')
RECOVERY = re.compile(r"<li><code>([a-z2-7]{4}(?:-[a-z2-7]{4}){3})</code></li>")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    """One issuer, a small per-account limit, and a login that waits CODE_TTL seconds for its code."""
    root = tmp_path_factory.mktemp("totp")
    service = issuer_process(
        root,
        data_dir=root / "issuer-data",
        workers=1,
        env={
            "ISSUER_LOGIN_RATE_LIMIT": f"{LIMIT} per minute",
            "ISSUER_LOGIN_CODE_TTL": str(CODE_TTL),
        },
    )
    try:
        service.start().wait_answering()
        yield service
    finally:
        service.stop()


def _cli(issuer: GunicornService, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **issuer.env}
    return subprocess.run(
        [sys.executable, "-m", "issuer", *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def username(issuer: GunicornService) -> str:
    """A user of this test alone (limits and factors are per user)."""
    name = f"u{uuid.uuid4().hex[:10]}"
    added = _cli(issuer, "users", "add", name, "--scope", "profile", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    return name


def _csrf(page: requests.Response) -> str:
    found = CSRF_INPUT.search(page.text)
    assert found, page.text
    return found.group(1)


def _password(issuer: GunicornService, browser: requests.Session, username: str) -> requests.Response:
    form = browser.get(f"{issuer.url}/login")
    return browser.post(
        f"{issuer.url}/login",
        data={"csrf_token": _csrf(form), "username": username, "password": PASSWORD},
        allow_redirects=False,
    )


def _code(issuer: GunicornService, browser: requests.Session, code: str) -> requests.Response:
    form = browser.get(f"{issuer.url}/login/code")
    return browser.post(f"{issuer.url}/login/code", data={"csrf_token": _csrf(form), "code": code})


def _enroll(
    issuer: GunicornService, username: str, browser: requests.Session | None = None
) -> tuple[pyotp.TOTP, list[str]]:
    """Log in with the password, enroll on /account; return the authenticator and the recovery codes."""
    browser = browser or requests.Session()
    assert _password(issuer, browser, username).status_code == 200
    account = browser.get(f"{issuer.url}/account")
    assert "Set up one-time codes" in account.text
    setup = browser.post(f"{issuer.url}/account/totp", data={"csrf_token": _csrf(account)})
    assert setup.status_code == 200
    assert setup.headers["Cache-Control"] == "no-store"
    assert "<svg" in setup.text  # the QR code, inline
    found = SECRET.search(setup.text)
    assert found, setup.text
    totp = pyotp.TOTP(found.group(1).replace(" ", ""))
    done = browser.post(f"{issuer.url}/account/totp/confirm", data={"csrf_token": _csrf(setup), "code": totp.now()})
    assert done.status_code == 200, done.text
    codes = RECOVERY.findall(done.text)
    assert len(codes) == 10
    return totp, codes


def _next_code(totp: pyotp.TOTP) -> str:
    """A code not yet used: the next step's (accepted as one step of drift)."""
    return totp.at(time.time() + 30)


def test_after_enrolling_a_login_needs_the_code(issuer: GunicornService, username: str) -> None:
    totp, _ = _enroll(issuer, username)
    audit = [e for e in log_events(issuer.log()) if e.get("audit") and e.get("subject") == username]
    assert any(e["event"] == "factor.enrolled" for e in audit)

    browser = requests.Session()
    asked = _password(issuer, browser, username)
    assert asked.status_code == 303
    assert asked.headers["Location"].endswith("/login/code")
    # The password alone is no login: the account page sends the browser to log in.
    waiting = browser.get(f"{issuer.url}/account", allow_redirects=False)
    assert waiting.status_code == 302
    assert waiting.headers["Location"].endswith("/login")
    logged_in = _code(issuer, browser, _next_code(totp))  # and back to the account page, which asked
    assert logged_in.status_code == 200
    assert logged_in.url == f"{issuer.url}/account"
    assert f"Logged in as <strong>{username}</strong>" in logged_in.text
    assert "On since" in logged_in.text


def test_a_recovery_code_logs_in_once(issuer: GunicornService, username: str) -> None:
    _, codes = _enroll(issuer, username)
    first = requests.Session()
    _password(issuer, first, username)
    assert "logged in as" in _code(issuer, first, codes[0].upper()).text
    second = requests.Session()
    _password(issuer, second, username)
    assert "The code is incorrect or was already used." in _code(issuer, second, codes[0]).text
    events = [e["event"] for e in log_events(issuer.log()) if e.get("audit") and e.get("subject") == username]
    assert "recovery_code.used" in events


def test_wrong_codes_are_limited_and_audited(issuer: GunicornService, username: str) -> None:
    totp, _ = _enroll(issuer, username)
    browser = requests.Session()
    _password(issuer, browser, username)
    wrong = "000000" if totp.now() != "000000" else "111111"
    before = scrape(issuer.metrics_url)
    answers = [_code(issuer, browser, wrong).status_code for _ in range(LIMIT + 1)]
    assert answers == [200] * LIMIT + [429]
    after = scrape(issuer.metrics_url)
    counted = delta(before, after, "jwt_split_second_factor_checks_total", method="totp", result="failure")
    assert counted == LIMIT
    assert delta(before, after, "jwt_split_logins_total", result="failure") == LIMIT
    assert delta(before, after, "jwt_split_rate_limited_total", limit="password-account") == 1
    failed = [
        e
        for e in log_events(issuer.log())
        if e.get("audit") and e.get("event") == "login.failed" and e.get("subject") == username
    ]
    assert len(failed) == LIMIT
    assert all(e["reason"] == "wrong_code" for e in failed)
    # The budget is the account's: the password page is limited too now.
    assert _password(issuer, requests.Session(), username).status_code == 429


def test_the_waiting_login_expires(issuer: GunicornService, username: str) -> None:
    totp, _ = _enroll(issuer, username)
    browser = requests.Session()
    _password(issuer, browser, username)
    time.sleep(CODE_TTL + 1)
    answer = _code(issuer, browser, _next_code(totp))
    assert "Please log in again." in answer.text
    assert "logged in as" not in answer.text


def test_the_waiting_login_is_bound_to_its_browser(issuer: GunicornService, username: str) -> None:
    totp, _ = _enroll(issuer, username)
    _password(issuer, requests.Session(), username)
    other = requests.Session()
    answer = _code(issuer, other, _next_code(totp))
    assert "Please log in again." in answer.text
    assert "logged in as" not in answer.text


def test_the_password_grant_refuses_a_user_with_codes(issuer: GunicornService, username: str) -> None:
    token = {"grant_type": "password", "client_id": "cli", "username": username, "password": PASSWORD}
    assert requests.post(f"{issuer.url}/token", data=token, timeout=10).status_code == 200
    _enroll(issuer, username)
    refused = requests.post(f"{issuer.url}/token", data=token, timeout=10)
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "invalid_grant"
    assert "one-time code" in body["error_description"]
    assert "access_token" not in body


def test_removing_the_factor_needs_a_code(issuer: GunicornService, username: str) -> None:
    totp, recovery = _enroll(issuer, username)
    browser = requests.Session()
    _password(issuer, browser, username)
    _code(issuer, browser, _next_code(totp))
    account = browser.get(f"{issuer.url}/account")
    refused = browser.post(f"{issuer.url}/account/totp/remove", data={"csrf_token": _csrf(account), "code": "12345x"})
    assert "The code is incorrect" in refused.text
    assert "On since" in refused.text
    no_csrf = browser.post(f"{issuer.url}/account/totp/remove", data={"code": recovery[0]})
    assert no_csrf.status_code == 400
    assert "On since" in browser.get(f"{issuer.url}/account").text
    removed = browser.post(
        f"{issuer.url}/account/totp/remove", data={"csrf_token": _csrf(account), "code": recovery[0]}
    )
    assert "were removed" in removed.text
    assert "Set up one-time codes" in removed.text
    assert _password(issuer, requests.Session(), username).status_code == 200  # the password alone again


def test_a_password_only_session_cannot_remove_the_factor_it_enrolled(issuer: GunicornService, username: str) -> None:
    """F1: once the user has a factor, changing factors needs a login that proved it (`mfa`)."""
    browser = requests.Session()
    totp, recovery = _enroll(issuer, username, browser)  # a password login, fresh: enrolling is fine
    account = browser.get(f"{issuer.url}/account")
    refused = browser.post(
        f"{issuer.url}/account/totp/remove",
        data={"csrf_token": _csrf(account), "code": recovery[0]},
        allow_redirects=False,
    )
    assert refused.status_code == 303
    assert refused.headers["Location"].endswith("/login")
    assert "On since" in browser.get(f"{issuer.url}/account").text  # still on
    again = browser.post(f"{issuer.url}/account/totp", data={"csrf_token": _csrf(account)}, allow_redirects=False)
    assert again.status_code == 303  # nor start over with a new seed
    # Log in again, with the code: back to /account, and the removal passes.
    assert _password(issuer, browser, username).status_code == 303
    back = _code(issuer, browser, _next_code(totp))
    assert back.url == f"{issuer.url}/account"
    removed = browser.post(f"{issuer.url}/account/totp/remove", data={"csrf_token": _csrf(back), "code": recovery[0]})
    assert "were removed" in removed.text


def _refresh_token(issuer: GunicornService, username: str) -> str:
    grant = {"grant_type": "password", "client_id": "cli", "username": username, "password": PASSWORD}
    answer = requests.post(f"{issuer.url}/token", data=grant, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["refresh_token"])


def _refreshes(issuer: GunicornService, refresh_token: str) -> bool:
    grant = {"grant_type": "refresh_token", "client_id": "cli", "refresh_token": refresh_token}
    return requests.post(f"{issuer.url}/token", data=grant, timeout=10).status_code == 200


def _logged_in_with_code(issuer: GunicornService, username: str, code: str) -> requests.Session:
    browser = requests.Session()
    assert _password(issuer, browser, username).status_code == 303
    assert _code(issuer, browser, code).status_code == 200
    assert browser.get(f"{issuer.url}/account", allow_redirects=False).status_code == 200
    return browser


def _logged_out(issuer: GunicornService, browser: requests.Session) -> bool:
    return browser.get(f"{issuer.url}/account", allow_redirects=False).status_code == 302


def test_removing_the_factor_ends_the_users_other_sessions(issuer: GunicornService, username: str) -> None:
    """F4: whoever held a session (or tokens) from before keeps nothing once the factor is gone."""
    refresh_token = _refresh_token(issuer, username)  # from before the factor: a password grant's family
    totp, recovery = _enroll(issuer, username)
    other = _logged_in_with_code(issuer, username, recovery[1])
    mine = requests.Session()
    assert _password(issuer, mine, username).status_code == 303
    account = _code(issuer, mine, _next_code(totp))
    removed = mine.post(f"{issuer.url}/account/totp/remove", data={"csrf_token": _csrf(account), "code": recovery[0]})
    assert "were removed" in removed.text
    assert "other sessions" in removed.text
    assert _logged_out(issuer, other)
    assert not _logged_out(issuer, mine)  # the session that removed it goes on
    assert not _refreshes(issuer, refresh_token)


def test_the_operator_resets_a_users_factors(issuer: GunicornService, username: str) -> None:
    refresh_token = _refresh_token(issuer, username)
    totp, _ = _enroll(issuer, username)
    browser = _logged_in_with_code(issuer, username, _next_code(totp))
    reset = _cli(issuer, "users", "reset-factors", username)
    assert _logged_out(issuer, browser)  # F4: the multi-factor session ends with the factors
    assert not _refreshes(issuer, refresh_token)
    assert reset.returncode == 0, reset.stderr
    assert "one-time codes and recovery codes" in reset.stdout
    assert re.search(r"ended [1-9][0-9]* login session\(s\)", reset.stdout), reset.stdout
    assert '"event": "factor.removed"' in reset.stderr
    assert '"source": "cli"' in reset.stderr
    assert _password(issuer, requests.Session(), username).status_code == 200
    again = _cli(issuer, "users", "reset-factors", username)
    assert again.returncode == 0
    assert "nothing" in again.stdout
    assert _cli(issuer, "users", "reset-factors", "nobody-here").returncode != 0


def test_the_device_verification_page_needs_the_code_too(issuer: GunicornService, username: str) -> None:
    totp, _ = _enroll(issuer, username)
    started = requests.post(f"{issuer.url}/device_authorization", data={"client_id": "cli"}, timeout=10)
    assert started.status_code == 200, started.text
    user_code = started.json()["user_code"]
    browser = requests.Session()
    sent = browser.get(f"{issuer.url}/device", params={"user_code": user_code}, allow_redirects=False)
    assert sent.status_code == 302
    assert sent.headers["Location"].endswith("/login")
    asked = _password(issuer, browser, username)
    assert asked.status_code == 303
    assert asked.headers["Location"].endswith("/login/code")
    waiting = browser.get(f"{issuer.url}/device", allow_redirects=False)
    assert waiting.status_code == 302
    assert waiting.headers["Location"].endswith("/login")
    entry = _code(issuer, browser, _next_code(totp))
    assert entry.url.startswith(f"{issuer.url}/device")
    assert "Enter the code your device shows" in entry.text
