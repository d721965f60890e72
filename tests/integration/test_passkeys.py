"""Passkeys at a real issuer (gunicorn on loopback) with a software authenticator speaking HTTP.

The ceremonies end to end as a browser runs them (options by a POST with the CSRF header, the
response in a form), then what a hostile or broken client sends: unreadable JSON, a response
to another challenge or from another origin, a replayed response, no user verification, a
counter that went back (a cloned authenticator). Each is a 400 (never a 500), audited, and
costs from the per-address budget of password failures. The Chromium run with a virtual
authenticator is tests/browser/test_passkeys.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.processes import GunicornService, issuer_process, log_events
from tests.support.webauthn import SoftAuthenticator

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
REFUSED = "The passkey could not be used to sign in."


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    """An issuer of one worker (its address counter is exact), limits high enough for every refusal here."""
    root = tmp_path_factory.mktemp("passkeys")
    service = issuer_process(
        root, data_dir=root / "issuer-data", workers=1, env={"ISSUER_ADDRESS_RATE_LIMIT": "1000 per minute"}
    )
    try:
        service.start().wait_answering()
        yield service
    finally:
        service.stop()


def _csrf(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match is not None, html
    return match.group(1)


def _logged_in(
    issuer: GunicornService,
    username: str = "alice",
    password: str = "wonderland",
    passkey: SoftAuthenticator | None = None,
) -> requests.Session:
    """A fresh login: with the password, or with the passkey (a user who has one cannot use the password alone)."""
    browser = requests.Session()
    if passkey is not None:
        token, options = _login_options(issuer, browser)
        answer = _sign_in(issuer, browser, token, passkey.get(options))
        assert answer.status_code == 200, answer.text
        assert f"You are logged in as {username}." in answer.text
        return browser
    token = _csrf(browser.get(f"{issuer.url}/login", timeout=10).text)
    answer = browser.post(
        f"{issuer.url}/login", data={"csrf_token": token, "username": username, "password": password}, timeout=30
    )
    assert "You are logged in as" in answer.text
    return browser


def _register(
    issuer: GunicornService, browser: requests.Session, authenticator: SoftAuthenticator, name: str
) -> requests.Response:
    token = _csrf(browser.get(f"{issuer.url}/account/passkeys", timeout=10).text)
    options = browser.post(f"{issuer.url}/account/passkeys/options", headers={"X-CSRFToken": token}, timeout=10)
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json())
    return browser.post(
        f"{issuer.url}/account/passkeys",
        data={"csrf_token": token, "name": name, "credential": credential},
        allow_redirects=False,
        timeout=10,
    )


def _login_options(issuer: GunicornService, browser: requests.Session) -> tuple[str, dict[str, Any]]:
    token = _csrf(browser.get(f"{issuer.url}/login", timeout=10).text)
    options = browser.post(f"{issuer.url}/login/passkey/options", headers={"X-CSRFToken": token}, timeout=10)
    assert options.status_code == 200, options.text
    assert options.headers["Cache-Control"] == "no-store"
    return token, options.json()


def _sign_in(issuer: GunicornService, browser: requests.Session, token: str, credential: str) -> requests.Response:
    return browser.post(
        f"{issuer.url}/login/passkey",
        data={"csrf_token": token, "credential": credential},
        allow_redirects=False,
        timeout=10,
    )


def _audit(issuer: GunicornService, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(issuer.log()) if e.get("audit") is True and e.get("event") == event]


def _latest_amr(issuer: GunicornService) -> str:
    database = Path(issuer.env["ISSUER_DATA_DIR"]) / "issuer.sqlite3"
    with sqlite3.connect(database) as conn:
        (amr,) = conn.execute("SELECT amr FROM login_sessions ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
    return str(amr)


@pytest.fixture(scope="module")
def alices_passkey(issuer: GunicornService) -> SoftAuthenticator:
    """Alice's device-bound passkey, registered from her account page."""
    authenticator = SoftAuthenticator(issuer.env["ISSUER_URL"])
    answer = _register(issuer, _logged_in(issuer), authenticator, "Laptop")
    assert answer.status_code == 303, answer.text
    assert answer.headers["Location"].endswith("/account/passkeys")
    return authenticator


@pytest.fixture(scope="module")
def bobs_passkey(issuer: GunicornService) -> SoftAuthenticator:
    """Bob's synced passkey (backup eligible), registered from his account page."""
    synced = SoftAuthenticator(issuer.env["ISSUER_URL"], backup_eligible=True)
    assert _register(issuer, _logged_in(issuer, "bob", "builder"), synced, "Phone").status_code == 303
    return synced


def test_registration_asks_for_a_discoverable_credential_with_user_verification(
    issuer: GunicornService, alices_passkey: SoftAuthenticator
) -> None:
    browser = _logged_in(issuer, passkey=alices_passkey)
    token = _csrf(browser.get(f"{issuer.url}/account/passkeys", timeout=10).text)
    options = browser.post(f"{issuer.url}/account/passkeys/options", headers={"X-CSRFToken": token}, timeout=10).json()
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["requireResidentKey"] is True
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["user"]["name"] == "alice"
    assert len(options["challenge"]) >= 43  # 32 random bytes


def test_a_passkey_signs_alice_in_without_her_password(
    issuer: GunicornService, alices_passkey: SoftAuthenticator
) -> None:
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    answer = _sign_in(issuer, browser, token, alices_passkey.get(options))
    assert answer.status_code == 200, answer.text
    assert "You are logged in as alice." in answer.text
    assert _latest_amr(issuer) == "hwk user mfa"
    assert any(e.get("passkey") and e.get("subject") == "alice" for e in _audit(issuer, "login.succeeded"))
    page = browser.get(f"{issuer.url}/account/passkeys", timeout=10).text
    assert "Laptop" in page
    assert "last used" in page


def test_a_synced_passkey_is_swk(issuer: GunicornService, bobs_passkey: SoftAuthenticator) -> None:
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    answer = _sign_in(issuer, browser, token, bobs_passkey.get(options))
    assert "You are logged in as bob." in answer.text
    assert _latest_amr(issuer) == "swk user mfa"


@pytest.mark.parametrize(
    "bend",
    [
        pytest.param({"origin": "http://evil.example"}, id="wrong-origin"),
        pytest.param({"origin": "http://localhost:1"}, id="wrong-port"),
        pytest.param({"challenge": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, id="wrong-challenge"),
        pytest.param({"user_verified": False}, id="no-user-verification"),
    ],
)
def test_a_bent_assertion_is_refused(
    issuer: GunicornService, alices_passkey: SoftAuthenticator, bend: dict[str, Any]
) -> None:
    before = len(_audit(issuer, "passkey.login_failed"))
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    answer = _sign_in(issuer, browser, token, alices_passkey.get(options, **bend))
    assert answer.status_code == 400
    assert REFUSED in answer.text
    assert browser.get(f"{issuer.url}/account/passkeys", allow_redirects=False, timeout=10).status_code == 302
    failed = _audit(issuer, "passkey.login_failed")[before:]
    assert [(e["reason"], e.get("subject")) for e in failed] == [("bad_response", "alice")]


@pytest.mark.parametrize(
    "credential",
    [
        "{not json",
        "[]",
        "null",
        json.dumps({"id": "x", "rawId": "x", "type": "public-key", "response": "nope"}),
        json.dumps({"id": 1, "rawId": "x", "type": "public-key", "response": {}}),
        json.dumps({"id": "!!!", "rawId": "!!!", "type": "public-key", "response": {"clientDataJSON": "%%"}}),
        "x" * 10000,  # longer than any response (8 KiB), shorter than the body limit (16 KiB, 413)
        "",
    ],
)
def test_unreadable_responses_are_400_never_500(issuer: GunicornService, credential: str) -> None:
    browser = requests.Session()
    token, _options = _login_options(issuer, browser)
    answer = _sign_in(issuer, browser, token, credential)
    assert answer.status_code == 400, answer.text
    assert REFUSED in answer.text


def test_an_unknown_credential_is_refused(issuer: GunicornService) -> None:
    stranger = SoftAuthenticator(issuer.env["ISSUER_URL"])
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    assert _sign_in(issuer, browser, token, stranger.get(options)).status_code == 400
    assert _audit(issuer, "passkey.login_failed")[-1]["reason"] == "unknown_credential"


def test_a_response_without_options_or_replayed_is_refused(
    issuer: GunicornService, alices_passkey: SoftAuthenticator
) -> None:
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    cookies = browser.cookies.copy()  # the session cookie holding the challenge, as an attacker would keep it
    assertion = alices_passkey.get(options)
    assert _sign_in(issuer, browser, token, assertion).status_code == 200
    replay = requests.Session()
    replay.cookies = cookies
    answer = _sign_in(issuer, replay, token, assertion)
    assert answer.status_code == 400  # the challenge was used up, though the cookie still holds it
    assert _audit(issuer, "passkey.login_failed")[-1]["reason"] == "no_challenge"
    fresh = requests.Session()
    fresh_token = _csrf(fresh.get(f"{issuer.url}/login", timeout=10).text)
    assert _sign_in(issuer, fresh, fresh_token, assertion).status_code == 400  # never asked for options


def test_options_need_the_csrf_header(issuer: GunicornService, alices_passkey: SoftAuthenticator) -> None:
    browser = requests.Session()
    browser.get(f"{issuer.url}/login", timeout=10)
    assert browser.post(f"{issuer.url}/login/passkey/options", timeout=10).status_code == 400
    logged_in = _logged_in(issuer, passkey=alices_passkey)
    assert logged_in.post(f"{issuer.url}/account/passkeys/options", timeout=10).status_code == 400
    assert requests.post(f"{issuer.url}/account/passkeys/options", timeout=10).status_code == 400


def test_a_counter_that_goes_back_is_a_cloned_authenticator(
    issuer: GunicornService, alices_passkey: SoftAuthenticator
) -> None:
    device = SoftAuthenticator(issuer.env["ISSUER_URL"])
    assert _register(issuer, _logged_in(issuer, passkey=alices_passkey), device, "Key").status_code == 303
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    assert _sign_in(issuer, browser, token, device.get(options, sign_count=10)).status_code == 200
    clone = requests.Session()
    token, options = _login_options(issuer, clone)
    answer = _sign_in(issuer, clone, token, device.get(options, sign_count=7))
    assert answer.status_code == 400
    assert REFUSED in answer.text
    (suspected,) = _audit(issuer, "passkey.clone_suspected")
    assert suspected["subject"] == "alice"
    # The real device goes on: its next count is above the stored 10, not above the clone's 7.
    browser = requests.Session()
    token, options = _login_options(issuer, browser)
    assert _sign_in(issuer, browser, token, device.get(options, sign_count=11)).status_code == 200


def test_registration_refuses_bad_responses_and_names(
    issuer: GunicornService, alices_passkey: SoftAuthenticator
) -> None:
    browser = _logged_in(issuer, passkey=alices_passkey)
    device = SoftAuthenticator(issuer.env["ISSUER_URL"])
    token = _csrf(browser.get(f"{issuer.url}/account/passkeys", timeout=10).text)
    url = f"{issuer.url}/account/passkeys"
    options = browser.post(f"{url}/options", headers={"X-CSRFToken": token}, timeout=10).json()
    for credential, name in [
        ("{not json", "A"),
        (device.create(options, origin="http://evil.example"), "A"),
        (device.create(options), ""),
        (device.create(options), "x" * 65),
    ]:
        browser.post(f"{url}/options", headers={"X-CSRFToken": token}, timeout=10)
        answer = browser.post(url, data={"csrf_token": token, "name": name, "credential": credential}, timeout=10)
        assert answer.status_code == 400, answer.text
    assert browser.post(url, data={"name": "A", "credential": "{}"}, timeout=10).status_code == 400  # no CSRF token
    assert not re.search(r">(A|x+)</h2>", browser.get(url, timeout=10).text)  # nothing was kept


def test_rename_and_remove_touch_only_ones_own_passkeys(
    issuer: GunicornService, alices_passkey: SoftAuthenticator, bobs_passkey: SoftAuthenticator
) -> None:
    alice = _logged_in(issuer, passkey=alices_passkey)
    device = SoftAuthenticator(issuer.env["ISSUER_URL"])
    assert _register(issuer, alice, device, "First key").status_code == 303
    page = alice.get(f"{issuer.url}/account/passkeys", timeout=10).text
    (passkey_id,) = re.findall(r'id="passkey-([0-9a-f]{32})">First key</h2>', page)  # not by order: same second
    token = _csrf(page)
    renamed = alice.post(
        f"{issuer.url}/account/passkeys/{passkey_id}/rename",
        data={"csrf_token": token, "name": "Renamed key"},
        timeout=10,
    )
    assert renamed.status_code == 200
    assert "Renamed key" in renamed.text
    assert "First key" not in renamed.text

    bob = _logged_in(issuer, "bob", passkey=bobs_passkey)
    bobs_token = _csrf(bob.get(f"{issuer.url}/account/passkeys", timeout=10).text)
    for action, form in [("rename", {"name": "Mine"}), ("remove", {})]:
        answer = bob.post(
            f"{issuer.url}/account/passkeys/{passkey_id}/{action}", data={"csrf_token": bobs_token, **form}, timeout=10
        )
        assert answer.status_code == 404

    elsewhere = _logged_in(issuer, passkey=alices_passkey)  # alice's other browser
    removed = alice.post(f"{issuer.url}/account/passkeys/{passkey_id}/remove", data={"csrf_token": token}, timeout=10)
    assert removed.status_code == 200
    assert "Renamed key" not in removed.text
    # F4: removing a factor ends the user's other sessions (a thief's that added the passkey too).
    assert elsewhere.get(f"{issuer.url}/account/passkeys", allow_redirects=False, timeout=10).status_code == 302
    assert alice.get(f"{issuer.url}/account/passkeys", allow_redirects=False, timeout=10).status_code == 200
    browser = requests.Session()
    login_token, options = _login_options(issuer, browser)
    assert _sign_in(issuer, browser, login_token, device.get(options)).status_code == 400  # removed: unknown
    events = [e["event"] for e in log_events(issuer.log()) if e.get("audit") and e.get("passkey") == passkey_id]
    assert events == ["passkey.registered", "passkey.renamed", "passkey.removed"]


def test_a_user_with_a_passkey_cannot_log_in_with_the_password_alone(
    issuer: GunicornService, alices_passkey: SoftAuthenticator
) -> None:
    """F1: a password-only session could change the factors (enroll codes, add or remove passkeys)."""
    browser = requests.Session()
    token = _csrf(browser.get(f"{issuer.url}/login", timeout=10).text)
    answer = browser.post(
        f"{issuer.url}/login", data={"csrf_token": token, "username": "alice", "password": "wonderland"}, timeout=30
    )
    assert answer.status_code == 200
    assert "This account signs in with a passkey" in answer.text
    assert "You are logged in" not in answer.text
    assert browser.get(f"{issuer.url}/account/passkeys", allow_redirects=False, timeout=10).status_code == 302
    refused = _audit(issuer, "login.failed")[-1]
    assert (refused["subject"], refused["reason"]) == ("alice", "passkey_required")
    grant = {"grant_type": "password", "client_id": "cli", "username": "alice", "password": "wonderland"}
    denied = requests.post(f"{issuer.url}/token", data=grant, timeout=30)
    assert denied.status_code == 400
    assert denied.json()["error"] == "invalid_grant"
    assert "passkey" in denied.json()["error_description"]
    assert _audit(issuer, "login.failed")[-1]["reason"] == "second_factor_required"


def test_the_account_page_needs_a_login(issuer: GunicornService) -> None:
    answer = requests.get(f"{issuer.url}/account/passkeys", allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/login")


def test_refused_passkey_logins_spend_the_address_budget(tmp_path: Path) -> None:
    service = issuer_process(
        tmp_path, data_dir=tmp_path / "issuer-data", workers=1, env={"ISSUER_ADDRESS_RATE_LIMIT": "3 per minute"}
    )
    try:
        service.start().wait_answering()
        statuses = []
        for _ in range(4):
            browser = requests.Session()
            token, _options = _login_options(service, browser)
            statuses.append(_sign_in(service, browser, token, "{not json").status_code)
        assert statuses == [400, 400, 400, 429]
        limited = browser.post(
            f"{service.url}/login", data={"csrf_token": token, "username": "alice", "password": "x"}, timeout=10
        )
        assert limited.status_code == 429  # the password form shares the per-address budget
    finally:
        service.stop()


def test_changing_passkeys_needs_a_recent_login_with_the_factor(tmp_path: Path) -> None:
    """F1/F2: a session changes factors only in the first ISSUER_FACTOR_CHANGE_MAX_AGE seconds, with `mfa` once there is one."""
    service = issuer_process(
        tmp_path, data_dir=tmp_path / "issuer-data", workers=1, env={"ISSUER_FACTOR_CHANGE_MAX_AGE": "4"}
    )
    try:
        service.start().wait_answering()
        url = f"{service.url}/account/passkeys"
        first = SoftAuthenticator(service.env["ISSUER_URL"])
        alice = _logged_in(service)  # the password: alice has no factor yet
        assert _register(service, alice, first, "First").status_code == 303  # a fresh login, no factor: fine
        # The same password-only session, now that alice has a passkey: no further change.
        token = _csrf(alice.get(url, timeout=10).text)
        options = alice.post(f"{url}/options", headers={"X-CSRFToken": token}, timeout=10)
        assert options.status_code == 401
        assert options.json()["error"] == "login_required"
        assert "log in again" in options.json()["error_description"]
        passkey_id = re.findall(r'id="passkey-([0-9a-f]{32})">First</h2>', alice.get(url, timeout=10).text)[0]
        removed = alice.post(
            f"{url}/{passkey_id}/remove", data={"csrf_token": token}, allow_redirects=False, timeout=10
        )
        assert removed.status_code == 303
        assert removed.headers["Location"].endswith("/login")
        assert "First" in alice.get(url, timeout=10).text  # still there

        # A passkey login is multi-factor: it may change them, and comes back to the passkeys page.
        browser = requests.Session()
        login_token, login_options = _login_options(service, browser)
        back = _sign_in(service, browser, login_token, first.get(login_options))
        assert back.status_code == 200
        second = SoftAuthenticator(service.env["ISSUER_URL"])
        assert _register(service, browser, second, "Second").status_code == 303
        # ... until its login is older than the limit.
        time.sleep(5)
        # The issuer closes a keep-alive connection idle for 5 s (gunicorn's keepalive): a request
        # sent on it as it closes is reset. Open a new one; the session keeps its cookies.
        browser.close()
        token = _csrf(browser.get(url, timeout=10).text)
        assert browser.post(f"{url}/options", headers={"X-CSRFToken": token}, timeout=10).status_code == 401
        renamed = browser.post(
            f"{url}/{passkey_id}/rename", data={"csrf_token": token, "name": "Evil"}, allow_redirects=False, timeout=10
        )
        assert renamed.status_code == 303
        assert renamed.headers["Location"].endswith("/login")
        # Logging in again (a passkey: alice's password alone no longer logs her in) returns to the passkeys page.
        login_token = _csrf(browser.get(f"{service.url}/login", timeout=10).text)
        login_options = browser.post(
            f"{service.url}/login/passkey/options", headers={"X-CSRFToken": login_token}, timeout=10
        ).json()
        again = _sign_in(service, browser, login_token, second.get(login_options))
        assert again.status_code == 303
        assert again.headers["Location"].endswith("/account/passkeys")
        page = browser.get(url, timeout=10).text
        assert "Evil" not in page
        token = _csrf(page)
        assert browser.post(f"{url}/options", headers={"X-CSRFToken": token}, timeout=10).status_code == 200
    finally:
        service.stop()


def test_login_options_are_limited_per_address(tmp_path: Path) -> None:
    """F6: each options request keeps a challenge row; an address may ask ISSUER_PASSKEY_OPTIONS_RATE_LIMIT times."""
    service = issuer_process(
        tmp_path,
        data_dir=tmp_path / "issuer-data",
        workers=1,
        env={"ISSUER_PASSKEY_OPTIONS_RATE_LIMIT": "3 per minute"},
    )
    try:
        service.start().wait_answering()
        browser = requests.Session()
        token = _csrf(browser.get(f"{service.url}/login", timeout=10).text)
        statuses = []
        for _ in range(4):
            answer = browser.post(f"{service.url}/login/passkey/options", headers={"X-CSRFToken": token}, timeout=10)
            statuses.append(answer.status_code)
        assert statuses == [200, 200, 200, 429]
        assert answer.json()["error"] == "too_many_requests"
        assert 0 < int(answer.headers["Retry-After"]) <= 61
        database = Path(service.env["ISSUER_DATA_DIR"]) / "issuer.sqlite3"
        with sqlite3.connect(database) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM passkey_challenges").fetchone()
        assert rows == 3  # the refused request kept nothing
    finally:
        service.stop()
