"""The audit trail of a real issuer (gunicorn on loopback) and of the operator's CLI (a subprocess).

One scripted run produces every event type: logins and failures at /token and at the login
form, a rate limit, a refresh-token reuse, a code redeemed twice, a revocation, a logout, a client
authentication failure, a replayed client assertion, device authorizations approved and
denied, and
the users, clients, APIs and keys commands. Each audit line must match
docs/audit-event.schema.json, and no password, token, code, secret or key used in the run may
appear in any line the issuer or the CLI wrote.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import requests

from shared import audit
from shared.pkce import s256
from tests.support.processes import GunicornService, free_port, issuer_process, log_events, wait_until
from tests.support.schema import audit_schema, errors
from tests.support.stack import EXPORT_SIGNING_KEY
from tests.support.tokens import ASSERTION_TYPE, assertion_claims, jwks_json, kid_of, new_rsa_key, sign
from tests.support.webauthn import SoftAuthenticator

CLIENT_ID = "resource-web"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
KID = re.compile(r"^([A-Za-z0-9_-]{43})  (\w+)", re.MULTILINE)
PROXY_CLIENT = "203.0.113.9"  # the address a trusted proxy (loopback, here) says it forwards for
GUESSER = "198.51.100.4"  # the address the rate-limited guesses come from


@dataclass
class Run:
    """What the scripted run did: the lines written, the secrets used, the ids to find lines by."""

    issuer: GunicornService
    cli_output: list[str] = field(default_factory=list)  # the CLI's stderr, one string per command
    secrets: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # step -> the X-Request-ID sent

    def trail(self) -> list[dict[str, Any]]:
        """Return every audit line, from the issuer and from the CLI."""
        text = self.issuer.log() + "\n".join(self.cli_output)
        return [entry for entry in log_events(text) if entry.get("audit") is True]

    def of(self, step: str) -> list[dict[str, Any]]:
        """Return the audit lines of the request sent for `step`."""
        return [entry for entry in self.trail() if entry.get("request_id") == self.ids[step]]

    def headers(self, step: str, **extra: str) -> dict[str, str]:
        """Return headers naming this step's request, so its lines can be found."""
        self.ids[step] = f"audit-{step}-{secrets.token_hex(4)}"
        return {"X-Request-ID": self.ids[step], **extra}

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run `python -m issuer ARGS` as the operator would, keeping its stderr."""
        result = subprocess.run(
            [sys.executable, "-m", "issuer", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **self.issuer.env},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        self.cli_output.append(result.stderr)
        return result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("audit")
    issuer = issuer_process(
        root,
        data_dir=root / "issuer-data",
        workers=1,  # the rate limits count in each worker's memory: one worker, one count
        env={
            "ISSUER_WEB_REDIRECT_URIS": f"http://localhost:{free_port()}/callback",
            "ISSUER_LOGIN_RATE_LIMIT": "3 per minute",
            "ISSUER_ADDRESS_RATE_LIMIT": "1000 per minute",
            "ISSUER_REFRESH_REUSE_GRACE": "0",
            "ISSUER_TRUSTED_PROXIES": "127.0.0.1/32",
        },
    )
    try:
        issuer.start().wait_answering()
        recorded = Run(issuer)
        _drive(recorded)
        yield recorded
    finally:
        issuer.stop()


def _token(run: Run, step: str, headers: dict[str, str] | None = None, **form: str) -> requests.Response:
    return requests.post(
        f"{run.issuer.url}/token", data=form, headers={**run.headers(step), **(headers or {})}, timeout=10
    )


def _drive(run: Run) -> None:
    """Produce every event, recording every secret used."""
    run.secrets += ["wonderland", "builder", "wrong password 42", "a-password-typed-as-a-name"]
    ok = _token(run, "password-ok", grant_type="password", username="alice", password="wonderland")
    assert ok.status_code == 200, ok.text
    run.secrets += [ok.json()["access_token"], ok.json()["refresh_token"]]
    bad = _token(
        run,
        "password-bad",
        {"X-Forwarded-For": PROXY_CLIENT},
        grant_type="password",
        username="bob",
        password="wrong password 42",
    )
    assert bad.status_code == 400
    nobody = _token(
        run, "password-nobody", grant_type="password", username="a-password-typed-as-a-name", password="builder"
    )
    assert nobody.status_code == 400

    for attempt in range(4):
        guess = _token(
            run,
            f"guess-{attempt}",
            {"X-Forwarded-For": GUESSER},
            grant_type="password",
            username="bob",
            password="wrong password 42",
        )
    assert guess.status_code == 429

    first = ok.json()["refresh_token"]
    refreshed = _token(run, "refresh", grant_type="refresh_token", refresh_token=first)
    assert refreshed.status_code == 200, refreshed.text
    run.secrets += [refreshed.json()["access_token"], refreshed.json()["refresh_token"]]
    reused = _token(run, "refresh-reuse", grant_type="refresh_token", refresh_token=first)
    assert reused.status_code == 400

    other = _token(run, "password-bob", grant_type="password", username="bob", password="builder")
    run.secrets += [other.json()["access_token"], other.json()["refresh_token"]]
    revoked = requests.post(
        f"{run.issuer.url}/revoke",
        data={"token": other.json()["refresh_token"], "client_id": "cli"},
        headers=run.headers("revoke"),
        timeout=10,
    )
    assert revoked.status_code == 200

    _browser(run)
    _device(run)
    _passkeys(run)
    _commands(run)
    _factors(run)
    run.secrets += _secrets_at_rest(run.issuer)


def _browser(run: Run) -> None:
    """Log in at the form (once wrong), redeem codes (one twice), revoke one login's token, log out another."""
    redirect_uri = run.issuer.env["ISSUER_WEB_REDIRECT_URIS"]
    with requests.Session() as browser:

        def authorize() -> tuple[str, str]:
            verifier = secrets.token_urlsafe(48)
            params = {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": redirect_uri,
                "state": "s-1",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
            }
            answer = browser.get(f"{run.issuer.url}/authorize", params=params, allow_redirects=False, timeout=10)
            return answer.headers["Location"], verifier

        def login(step: str, password: str) -> requests.Response:
            form = browser.get(f"{run.issuer.url}/login", timeout=10).text
            match = CSRF_INPUT.search(form)
            assert match is not None
            data = {"csrf_token": match.group(1), "username": "alice", "password": password}
            return browser.post(
                f"{run.issuer.url}/login", data=data, headers=run.headers(step), allow_redirects=False, timeout=10
            )

        def code() -> tuple[str, str]:
            location, verifier = authorize()
            query = parse_qs(urlsplit(location).query)
            assert "code" in query, location
            run.secrets += [query["code"][0], verifier]
            return query["code"][0], verifier

        def redeem(step: str, pair: tuple[str, str]) -> requests.Response:
            return _token(
                run,
                step,
                grant_type="authorization_code",
                code=pair[0],
                code_verifier=pair[1],
                redirect_uri=redirect_uri,
                client_id=CLIENT_ID,
            )

        location, _ = authorize()
        assert urlsplit(location).path == "/login"
        assert login("form-bad", "wrong password 42").status_code == 200
        assert login("form-ok", "wonderland").status_code == 303
        first = redeem("code", code())
        assert first.status_code == 200, first.text
        twice = code()
        assert redeem("code-once", twice).status_code == 200
        assert redeem("code-twice", twice).status_code == 400
        run.secrets += [first.json()["access_token"], first.json()["refresh_token"]]
        gone = requests.post(
            f"{run.issuer.url}/revoke",
            data={"token": first.json()["refresh_token"], "client_id": CLIENT_ID},
            headers=run.headers("revoke-web"),
            timeout=10,
        )
        assert gone.status_code == 200

        assert login("form-again", "wonderland").status_code == 200  # no pending request now: a page
        third = redeem("code-third", code())
        run.secrets += [third.json()["access_token"], third.json()["refresh_token"]]
        run.secrets += [cookie.value for cookie in browser.cookies if cookie.value]
        page = browser.get(f"{run.issuer.url}/logout", timeout=10).text
        match = CSRF_INPUT.search(page)
        assert match is not None
        done = browser.post(
            f"{run.issuer.url}/logout", data={"csrf_token": match.group(1)}, headers=run.headers("logout"), timeout=10
        )
        assert done.status_code == 200
        assert "logged out" in done.text


def _device(run: Run) -> None:
    """Start two device authorizations (RFC 8628): one approved and exchanged, one denied."""
    with requests.Session() as browser:
        form = browser.get(f"{run.issuer.url}/login", timeout=10).text
        match = CSRF_INPUT.search(form)
        assert match is not None
        data = {"csrf_token": match.group(1), "username": "alice", "password": "wonderland"}
        assert browser.post(f"{run.issuer.url}/login", data=data, timeout=10).status_code == 200
        for step, action in (("device-approve", "approve"), ("device-deny", "deny")):
            started = requests.post(
                f"{run.issuer.url}/device_authorization",
                data={"client_id": "cli", "scope": "profile"},
                headers=run.headers(f"{step}-start"),
                timeout=10,
            ).json()
            run.secrets += [started["device_code"], started["user_code"], started["user_code"].replace("-", "")]
            entry = browser.get(f"{run.issuer.url}/device", timeout=10).text
            match = CSRF_INPUT.search(entry)
            assert match is not None
            confirm = browser.post(
                f"{run.issuer.url}/device",
                data={"csrf_token": match.group(1), "user_code": started["user_code"]},
                timeout=10,
            )
            match = CSRF_INPUT.search(confirm.text)
            assert match is not None, confirm.text
            decided = browser.post(
                f"{run.issuer.url}/device/decision",
                data={"csrf_token": match.group(1), "user_code": started["user_code"], "action": action},
                headers=run.headers(step),
                timeout=10,
            )
            assert decided.status_code == 200, decided.text
            polled = _token(
                run,
                f"{step}-poll",
                grant_type="urn:ietf:params:oauth:grant-type:device_code",
                device_code=started["device_code"],
                client_id="cli",
            )
            if action == "approve":
                assert polled.status_code == 200, polled.text
                run.secrets += [polled.json()["access_token"], polled.json()["refresh_token"]]
            else:
                assert polled.json()["error"] == "access_denied"


def _passkeys(run: Run) -> None:
    """Register, rename, sign in with and remove a passkey; a refused sign-in; a cloned counter."""
    url = run.issuer.url
    device = SoftAuthenticator(run.issuer.env["ISSUER_URL"])

    def token(browser: requests.Session, path: str) -> str:
        match = CSRF_INPUT.search(browser.get(f"{url}{path}", timeout=10).text)
        assert match is not None
        return match.group(1)

    def sign_in(step: str, **bend: Any) -> requests.Response:
        with requests.Session() as browser:
            csrf = token(browser, "/login")
            options = browser.post(f"{url}/login/passkey/options", headers={"X-CSRFToken": csrf}, timeout=10).json()
            credential = device.get(options, **bend)
            run.secrets.append(json.loads(credential)["response"]["signature"])
            return browser.post(
                f"{url}/login/passkey",
                data={"csrf_token": csrf, "credential": credential},
                headers=run.headers(step),
                allow_redirects=False,
                timeout=10,
            )

    with requests.Session() as alice:
        csrf = token(alice, "/login")
        alice.post(f"{url}/login", data={"csrf_token": csrf, "username": "alice", "password": "wonderland"}, timeout=10)
        csrf = token(alice, "/account/passkeys")
        options = alice.post(f"{url}/account/passkeys/options", headers={"X-CSRFToken": csrf}, timeout=10).json()
        form = {"csrf_token": csrf, "name": "Laptop", "credential": device.create(options)}
        registered = alice.post(f"{url}/account/passkeys", data=form, headers=run.headers("passkey-add"), timeout=10)
        assert registered.status_code == 200, registered.text
        passkey_id = re.findall(r"/account/passkeys/([0-9a-f]{32})/rename", registered.text)[0]
    # Changing a factor of a user who has one needs a login with it: alice signs in with the passkey.
    with requests.Session() as alice:
        csrf = token(alice, "/login")
        options = alice.post(f"{url}/login/passkey/options", headers={"X-CSRFToken": csrf}, timeout=10).json()
        signed_in = alice.post(
            f"{url}/login/passkey", data={"csrf_token": csrf, "credential": device.get(options)}, timeout=10
        )
        assert signed_in.status_code == 200, signed_in.text
        csrf = token(alice, "/account/passkeys")
        alice.post(
            f"{url}/account/passkeys/{passkey_id}/rename",
            data={"csrf_token": csrf, "name": "Work laptop"},
            headers=run.headers("passkey-rename"),
            timeout=10,
        )
        assert sign_in("passkey-ok", sign_count=5).status_code == 200
        assert sign_in("passkey-bad", origin="http://evil.example").status_code == 400
        assert sign_in("passkey-clone", sign_count=3).status_code == 400
        removed = alice.post(
            f"{url}/account/passkeys/{passkey_id}/remove",
            data={"csrf_token": csrf},
            headers=run.headers("passkey-remove"),
            timeout=10,
        )
        assert removed.status_code == 200


def _commands(run: Run) -> None:
    """Change users, clients, APIs and keys from the CLI."""
    password = "carol's long password 9"
    client_secret = secrets.token_urlsafe(32)
    run.secrets += [password, client_secret]
    run.cli("users", "add", "carol", stdin=password + "\n")
    run.cli("users", "update", "carol", "--scope", "profile admin", "--name", "Carol")
    run.cli("users", "delete", "carol")
    grant = ["--grant", "client_credentials"]
    run.cli("clients", "add", "nightly", *grant, "--secret-stdin", stdin=client_secret + "\n")
    wrong = "a-wrong-client-secret-" + secrets.token_hex(8)
    basic = base64.b64encode(f"nightly:{wrong}".encode()).decode()
    run.secrets += [wrong, basic]
    refused = _token(run, "client-wrong-secret", {"Authorization": f"Basic {basic}"}, grant_type="client_credentials")
    assert refused.status_code == 401
    run.cli("clients", "add", "nightly", *grant, "--secret-stdin", "--replace", stdin=client_secret + "\n")
    run.cli("clients", "delete", "nightly")
    run.cli("apis", "add", "audit-api", "--scope", "read")
    run.cli("apis", "add", "audit-api", "--scope", "read write", "--replace")
    run.cli("apis", "delete", "audit-api")
    first = KID.search(run.cli("keys", "list").stdout)
    assert first is not None
    assert first.group(2) == "active"
    run.cli("keys", "rotate")
    run.cli("keys", "rotate", "--now")
    run.ids["first-kid"] = first.group(1)
    run.cli("keys", "retire", first.group(1))
    _assertions(run)


def _factors(run: Run) -> None:
    """Enroll one-time codes, fail a code, log in with a recovery code, meet the password grant's refusal, reset."""
    password = "dave's long password 7"
    run.secrets.append(password)
    run.cli("users", "add", "dave", stdin=password + "\n")
    with requests.Session() as browser:

        def form(path: str, step: str, **data: str) -> requests.Response:
            page = browser.get(f"{run.issuer.url}{path}", timeout=10).text
            match = CSRF_INPUT.search(page)
            assert match is not None
            return browser.post(
                f"{run.issuer.url}{path}",
                data={"csrf_token": match.group(1), **data},
                headers=run.headers(step),
                timeout=10,
            )

        form("/login", "dave-password", username="dave", password=password)
        account = browser.get(f"{run.issuer.url}/account", timeout=10).text
        match = CSRF_INPUT.search(account)
        assert match is not None
        setup = browser.post(f"{run.issuer.url}/account/totp", data={"csrf_token": match.group(1)}, timeout=10).text
        seed = re.search(r'<output id="secret" class="secret">([A-Z2-7 ]+)</output>', setup)
        csrf = CSRF_INPUT.search(setup)
        assert seed is not None
        assert csrf is not None
        run.secrets += [seed.group(1), seed.group(1).replace(" ", "")]
        totp = pyotp.TOTP(seed.group(1).replace(" ", ""))
        done = browser.post(
            f"{run.issuer.url}/account/totp/confirm",
            data={"csrf_token": csrf.group(1), "code": totp.now()},
            headers=run.headers("factor-enrolled"),
            timeout=10,
        ).text
        recovery = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", done)
        assert len(recovery) == 10
        run.secrets += recovery
    with requests.Session() as browser:
        login = browser.get(f"{run.issuer.url}/login", timeout=10).text
        match = CSRF_INPUT.search(login)
        assert match is not None
        browser.post(
            f"{run.issuer.url}/login",
            data={"csrf_token": match.group(1), "username": "dave", "password": password},
            timeout=10,
        )
        wrong = "000000" if totp.now() != "000000" else "111111"
        for step, code in (("code-wrong", wrong), ("code-recovery", recovery[0])):
            page = browser.get(f"{run.issuer.url}/login/code", timeout=10).text
            match = CSRF_INPUT.search(page)
            assert match is not None
            browser.post(
                f"{run.issuer.url}/login/code",
                data={"csrf_token": match.group(1), "code": code},
                headers=run.headers(step),
                timeout=10,
            )
    refused = _token(run, "password-needs-code", grant_type="password", username="dave", password=password)
    assert refused.status_code == 400
    run.cli("users", "reset-factors", "dave")


def _assertions(run: Run) -> None:
    """Register a private_key_jwt client and present one of its assertions twice."""
    key = new_rsa_key()
    grant = ["--grant", "client_credentials", "--scope", "profile"]
    run.cli("clients", "add", "audit-svc", *grant, "--jwks-file", "-", stdin=jwks_json(key))
    assertion = sign(assertion_claims("audit-svc", run.issuer.env["ISSUER_URL"]), key, kid=kid_of(key), typ=None)
    run.secrets += [assertion]
    for step, status in (("assertion", 200), ("assertion-replayed", 401)):
        answer = _token(
            run, step, grant_type="client_credentials", client_assertion_type=ASSERTION_TYPE, client_assertion=assertion
        )
        assert answer.status_code == status, answer.text


def _secrets_at_rest(issuer: GunicornService) -> list[str]:
    """Return the cookie secret, the key-encryption key and lines of the active private key."""
    data_dir = Path(issuer.env["ISSUER_DATA_DIR"])
    found = [(data_dir / "session-secret").read_text().strip(), (data_dir / "key-encryption-key").read_text().strip()]
    exported = subprocess.run(
        [sys.executable, "-c", EXPORT_SIGNING_KEY],
        capture_output=True,
        text=True,
        env={**os.environ, **issuer.env},
        timeout=60,
        check=True,
    )
    return found + [line for line in exported.stdout.splitlines()[1:] if not line.startswith("-----")][1:4]


# -- the tests ---------------------------------------------------------------------------------


def test_every_event_type_is_produced_and_every_line_matches_the_schema(run: Run) -> None:
    trail = run.trail()
    assert {entry["event"] for entry in trail} == set(audit.EVENTS)
    invalid = {json.dumps(entry): errors(entry, audit_schema()) for entry in trail}
    assert {line: why for line, why in invalid.items() if why} == {}
    assert all(entry["msg"] == entry["event"] for entry in trail)


def test_logins_name_the_user_the_client_and_the_address(run: Run) -> None:
    (ok,) = run.of("password-ok")
    assert (ok["event"], ok["subject"], ok["client"], ok["endpoint"]) == (
        "login.succeeded",
        "alice",
        "cli",
        "oauth.token",
    )
    assert (ok["source"], ok["address"]) == ("http", "127.0.0.1")
    assert re.fullmatch("[0-9a-f]{32}", ok["subject_id"])
    (bad,) = run.of("password-bad")
    assert (bad["event"], bad["subject"], bad["client"]) == ("login.failed", "bob", "cli")
    assert bad["address"] == PROXY_CLIENT  # behind a trusted proxy: the address it forwards for
    (form_bad,) = run.of("form-bad")
    assert (form_bad["event"], form_bad["subject"], form_bad["client"], form_bad["endpoint"]) == (
        "login.failed",
        "alice",
        CLIENT_ID,
        "browser.login",
    )
    (form_ok,) = run.of("form-ok")
    assert (form_ok["event"], form_ok["subject"], form_ok["client"]) == ("login.succeeded", "alice", CLIENT_ID)
    (again,) = run.of("form-again")
    assert again["event"] == "login.succeeded"
    assert "client" not in again  # the form alone: no application asked


def test_passkey_events_name_the_user_and_the_passkey_never_the_credential(run: Run) -> None:
    (added,) = run.of("passkey-add")
    (renamed,) = run.of("passkey-rename")
    removed, *ended = run.of("passkey-remove")
    assert "session.ended" in {e["event"] for e in ended}  # alice's other sessions end with the factor (F4)
    assert [added["event"], renamed["event"], removed["event"]] == [
        "passkey.registered",
        "passkey.renamed",
        "passkey.removed",
    ]
    assert {e["passkey"] for e in (added, renamed, removed)} == {added["passkey"]}
    (ok,) = run.of("passkey-ok")
    assert (ok["event"], ok["subject"], ok["passkey"], ok["endpoint"]) == (
        "login.succeeded",
        "alice",
        added["passkey"],
        "passkeys.login",
    )
    (bad,) = run.of("passkey-bad")
    assert (bad["event"], bad["reason"], bad["subject"]) == ("passkey.login_failed", "bad_response", "alice")
    (clone,) = run.of("passkey-clone")
    assert (clone["event"], clone["subject"], clone["passkey"]) == (
        "passkey.clone_suspected",
        "alice",
        added["passkey"],
    )


def test_a_name_that_is_nobody_s_is_never_written(run: Run) -> None:
    (nobody,) = run.of("password-nobody")
    assert nobody["event"] == "login.failed"
    assert "subject" not in nobody
    assert "a-password-typed-as-a-name" not in run.issuer.log()


def test_a_rate_limit_hit_names_the_limit_the_account_and_the_guessing_address(run: Run) -> None:
    assert [entry["event"] for attempt in range(3) for entry in run.of(f"guess-{attempt}")] == ["login.failed"] * 3
    (hit,) = run.of("guess-3")
    assert (hit["event"], hit["limit"], hit["subject"], hit["address"]) == (
        "rate_limit.hit",
        "password-account",
        "bob",
        GUESSER,
    )


def test_refresh_reuse_names_the_family_revoked_and_how_many_tokens(run: Run) -> None:
    (reuse,) = run.of("refresh-reuse")
    assert (reuse["event"], reuse["subject"], reuse["client"]) == ("refresh.reuse_detected", "alice", "cli")
    assert reuse["tokens"] == 2  # the token presented again and its successor
    assert re.fullmatch("[0-9a-f]{32}", reuse["family"])


def test_a_revocation_names_the_user_client_and_family(run: Run) -> None:
    (revoked,) = run.of("revoke")
    assert (revoked["event"], revoked["subject"], revoked["client"], revoked["tokens"]) == (
        "token.revoked",
        "bob",
        "cli",
        1,
    )
    web = {entry["event"]: entry for entry in run.of("revoke-web")}
    assert set(web) == {"token.revoked", "session.ended"}  # a browser login's token: its session goes too
    assert (web["token.revoked"]["client"], web["session.ended"]["subject"]) == (CLIENT_ID, "alice")


def test_a_code_redeemed_twice_is_reported_with_what_was_revoked(run: Run) -> None:
    (reuse,) = run.of("code-twice")
    assert (reuse["event"], reuse["client"], reuse["tokens"]) == ("code.reuse_detected", CLIENT_ID, 1)
    assert re.fullmatch("[0-9a-f]{32}", reuse["family"])


def test_logout_ends_the_session_and_revokes_its_tokens(run: Run) -> None:
    lines = {entry["event"]: entry for entry in run.of("logout")}
    assert set(lines) == {"session.ended", "token.revoked"}
    assert (lines["session.ended"]["subject"], lines["session.ended"]["endpoint"]) == ("alice", "browser.logout")
    assert lines["token.revoked"]["tokens"] == 1


def test_client_authentication_failures_and_replays_name_the_client_and_the_reason(run: Run) -> None:
    (wrong,) = run.of("client-wrong-secret")
    assert (wrong["event"], wrong["client"], wrong["reason"]) == ("client.auth_failed", "nightly", "wrong_secret")
    (replayed,) = run.of("assertion-replayed")
    assert (replayed["event"], replayed["client"], replayed["endpoint"]) == (
        "client.assertion_replayed",
        "audit-svc",
        "oauth.token",
    )


def test_the_cli_writes_its_changes_as_source_cli_with_the_operator(run: Run) -> None:
    cli = [entry for entry in run.trail() if entry["source"] == "cli"]
    assert [(entry["event"], entry.get("subject") or entry.get("client") or entry.get("api")) for entry in cli[:9]] == [
        ("user.created", "carol"),
        ("user.changed", "carol"),
        ("user.deleted", "carol"),
        ("client.created", "nightly"),
        ("client.changed", "nightly"),
        ("client.deleted", "nightly"),
        ("api.created", "audit-api"),
        ("api.changed", "audit-api"),
        ("api.deleted", "audit-api"),
    ]
    assert cli[1]["changes"] == ["name", "scope"]
    assert {entry["service"] for entry in cli} == {"issuer-cli"}
    assert all(entry["actor"] and "address" not in entry for entry in cli)
    keys = [(entry["event"], entry["kid"]) for entry in cli if entry["event"].startswith("key.")]
    staged = keys[0][1]
    assert keys == [
        ("key.staged", staged),
        ("key.activated", staged),
        ("key.retiring", run.ids["first-kid"]),
        ("key.retired", run.ids["first-kid"]),
    ]


def test_second_factor_events_name_the_user_and_the_reason(run: Run) -> None:
    (enrolled,) = run.of("factor-enrolled")
    assert (enrolled["event"], enrolled["subject"], enrolled["endpoint"]) == (
        "factor.enrolled",
        "dave",
        "account.confirm",
    )
    (wrong,) = run.of("code-wrong")
    assert (wrong["event"], wrong["subject"], wrong["reason"]) == ("login.failed", "dave", "wrong_code")
    used = run.of("code-recovery")
    assert [entry["event"] for entry in used] == ["recovery_code.used", "login.succeeded"]
    (refused,) = run.of("password-needs-code")
    assert (refused["event"], refused["reason"], refused["client"]) == (
        "login.failed",
        "second_factor_required",
        "cli",
    )
    (reset,) = [entry for entry in run.trail() if entry["event"] == "factor.removed"]
    assert (reset["source"], reset["subject"]) == ("cli", "dave")
    assert "actor" in reset


def test_the_issuer_reports_what_it_does_on_its_own_as_source_system(run: Run) -> None:
    system = [
        (entry["event"], entry.get("kid") or entry.get("subject") or entry.get("client") or entry.get("api"))
        for entry in run.trail()
        if entry["source"] == "system"
    ]
    assert ("key.activated", run.ids["first-kid"]) in system  # the first key, made at start
    assert {("user.created", "alice"), ("user.created", "bob"), ("client.created", "cli")} <= set(system)
    assert ("api.created", "jwt-split-api") in system


def test_no_line_holds_a_password_token_code_or_secret(run: Run) -> None:
    everything = run.issuer.log() + "\n".join(run.cli_output)
    leaked = [secret[:12] + "..." for secret in run.secrets if secret and secret in everything]
    assert leaked == []
    assert "PRIVATE KEY" not in everything
    assert len(run.secrets) > 25  # the run did use them


def test_key_steps_that_fall_due_are_source_system(tmp_path: Path) -> None:
    """Automatic rotation every 3 s, activation at once: staged, activated, retiring by the system.

    The retirement that falls due once the retiring key's tokens have expired (30 s at least)
    is checked as the system's by test_rotation.py's retiring-key test (CI time).
    """
    issuer = issuer_process(
        tmp_path,
        data_dir=tmp_path / "issuer-data",
        workers=1,
        env={
            "ISSUER_KEY_ROTATION_DAYS": str(3 / 86400),
            "ISSUER_KEY_ACTIVATION_DELAY": "0",
            "ISSUER_JWKS_MAX_AGE": "0",
            "ISSUER_ACCESS_TOKEN_TTL": "30",
            "ISSUER_KEY_RETIRE_GRACE": "0",
        },
    )

    def steps() -> set[str]:
        # Serving the JWKS re-reads the key store, which makes the steps that are due.
        requests.get(f"{issuer.url}/.well-known/jwks.json", headers={"X-Request-ID": "audit-jwks"}, timeout=10)
        trail = [entry for entry in log_events(issuer.log()) if entry.get("audit") is True]
        assert all(errors(entry, audit_schema()) == [] for entry in trail)
        return {entry["event"] for entry in trail if entry["event"].startswith("key.") and entry["source"] == "system"}

    try:
        issuer.start().wait_answering()
        wait_until(lambda: steps() >= {"key.staged", "key.activated", "key.retiring"}, timeout=30, interval=0.5)
    finally:
        issuer.stop()
    steps_in_requests = [
        entry for entry in log_events(issuer.log()) if entry.get("audit") is True and entry.get("request_id")
    ]
    assert steps_in_requests  # noticed while serving the JWKS, yet not the requester's doing:
    assert all(entry["source"] == "system" and "address" not in entry for entry in steps_in_requests)


def test_an_unreadable_active_key_is_reported_as_unreadable_whatever_the_log_level(tmp_path: Path) -> None:
    data_dir = tmp_path / "issuer-data"
    # At WARNING the access lines go quiet; the audit trail does not.
    issuer = issuer_process(tmp_path, data_dir=data_dir, workers=1, env={"ISSUER_LOG_LEVEL": "WARNING"})
    try:
        issuer.start().wait_answering()
        with contextlib.closing(sqlite3.connect(data_dir / "issuer.sqlite3")) as conn, conn:
            kid, blob = conn.execute("SELECT kid, private_key FROM signing_keys WHERE state = 'active'").fetchone()
            damaged = blob[:-1] + bytes([blob[-1] ^ 1])  # its GCM tag no longer verifies
            conn.execute("UPDATE signing_keys SET private_key = ? WHERE kid = ?", (damaged, kid))
        answer = requests.post(
            f"{issuer.url}/token",
            data={"grant_type": "password", "username": "alice", "password": "wonderland"},
            headers={"X-Request-ID": "audit-damaged"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    finally:
        issuer.stop()
    steps = [
        entry for entry in log_events(issuer.log()) if entry.get("request_id") == "audit-damaged" and entry.get("audit")
    ]
    assert all(errors(entry, audit_schema()) == [] for entry in steps)
    replaced = {entry["event"]: entry for entry in steps if entry["event"].startswith("key.")}
    assert set(replaced) == {"key.activated", "key.retiring"}
    assert replaced["key.retiring"]["kid"] == kid
    assert not [entry for entry in log_events(issuer.log()) if entry.get("logger") == "access"]
    assert replaced["key.activated"]["kid"] != kid
    assert all((entry["reason"], entry["source"]) == ("unreadable", "system") for entry in replaced.values())
