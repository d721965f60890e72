"""The device authorization grant (RFC 8628) against a running issuer: every MUST of the poll, and the page.

The person at the browser is played by `requests` (the login form, its CSRF token, the code
entry and the approval); tests/browser/test_device.py does it in Chromium with a third-party client.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import StackFactory
from tests.support.dpop import make_proof, thumbprint
from tests.support.stack import Stack

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


def _csrf(html: str) -> str:
    match = _CSRF_INPUT.search(html)
    assert match is not None, html
    return match.group(1)


def _authorize_device(stack: Stack, **form: str) -> requests.Response:
    return requests.post(f"{stack.issuer_url}/device_authorization", data={"client_id": "cli", **form}, timeout=10)


def _start(stack: Stack, **form: str) -> dict[str, Any]:
    response = _authorize_device(stack, **form)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def _poll(
    stack: Stack, device_code: str, client_id: str = "cli", headers: dict[str, str] | None = None
) -> requests.Response:
    data = {"grant_type": DEVICE_CODE, "device_code": device_code, "client_id": client_id}
    return requests.post(f"{stack.issuer_url}/token", data=data, headers=headers, timeout=10)


def _error(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    error: str = response.json()["error"]
    return error


def _at_issuer(stack: Stack, url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == stack.public_issuer, url
    return f"{stack.issuer_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def browser_logged_in(
    stack: Stack, url: str, username: str = "alice", password: str = "wonderland"
) -> tuple[requests.Session, str]:
    """Open a verification URL, log in on the way; return the browser and the code entry page."""
    browser = requests.Session()
    login = browser.get(_at_issuer(stack, url), timeout=10)
    assert urlsplit(login.url).path == "/login", login.url
    entry = browser.post(
        f"{stack.issuer_url}/login",
        data={"csrf_token": _csrf(login.text), "username": username, "password": password},
        timeout=10,
    )
    assert entry.status_code == 200, entry.text
    assert urlsplit(entry.url).path == "/device"
    return browser, entry.text


def answer(
    stack: Stack, started: dict[str, Any], action: str, username: str = "alice", password: str = "wonderland"
) -> str:
    """Log in through `verification_uri_complete`, confirm the code and approve or deny; return the last page."""
    browser, entry = browser_logged_in(stack, started["verification_uri_complete"], username, password)
    assert started["user_code"] in entry  # prefilled: the user confirms it (RFC 8628 section 5.4)
    confirm = browser.post(
        f"{stack.issuer_url}/device", data={"csrf_token": _csrf(entry), "user_code": started["user_code"]}, timeout=10
    )
    assert confirm.status_code == 200, confirm.text
    assert "the command line" in confirm.text
    assert ('value="approve"' in confirm.text) == (username == "alice")
    decided = browser.post(
        f"{stack.issuer_url}/device/decision",
        data={"csrf_token": _csrf(confirm.text), "user_code": started["user_code"], "action": action},
        timeout=10,
    )
    assert decided.status_code == 200, decided.text
    return decided.text


@pytest.mark.deployment
def test_device_authorization_answers_the_codes_and_where_to_go(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    assert USER_CODE.fullmatch(started["user_code"])
    assert len(started["device_code"]) >= 43
    assert started["verification_uri"] == f"{stack.public_issuer}/device"
    assert started["verification_uri_complete"].startswith(f"{stack.public_issuer}/device?user_code=")
    assert started["expires_in"] == 600
    assert started["interval"] == 5


def test_metadata_names_the_endpoint_and_the_grant(stack: Stack) -> None:
    for document in ("oauth-authorization-server", "openid-configuration"):
        metadata = requests.get(f"{stack.issuer_url}/.well-known/{document}", timeout=10).json()
        assert metadata["device_authorization_endpoint"] == f"{stack.public_issuer}/device_authorization"
        assert DEVICE_CODE in metadata["grant_types_supported"]


def test_poll_is_pending_then_slow_down_adds_five_seconds(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    assert _error(_poll(stack, started["device_code"])) == "authorization_pending"
    slow = _poll(stack, started["device_code"])
    assert _error(slow) == "slow_down"
    assert "10 seconds" in slow.json()["error_description"]


def test_approved_device_gets_tokens_once(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    page = answer(stack, started, "approve")
    assert "Device approved" in page
    tokens = _poll(stack, started["device_code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "profile"
    assert "refresh_token" in body
    assert stack.get("/api/me", body["access_token"]).status_code == 200
    again = _poll(stack, started["device_code"])
    assert _error(again) == "invalid_grant"
    refreshed = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": "cli"},
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    # The approval's browser login speaks in the device's token, and its family records that
    # login (not the session: the device's logout must not end the browser's), so each refresh
    # says the same (OpenID Connect Core 1.0 section 12.2).
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["amr"], claims["acr"]) == (["pwd"], "single-factor")
    assert claims["auth_time"] <= claims["iat"]
    renewed = jwt.decode(refreshed.json()["access_token"], options={"verify_signature": False})
    assert (renewed["amr"], renewed["acr"], renewed["auth_time"]) == (["pwd"], "single-factor", claims["auth_time"])


def test_access_token_of_a_device_carries_a_status_list_index(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    answer(stack, started, "approve")
    body = _poll(stack, started["device_code"]).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert "idx" in claims["status"]["status_list"]
    assert claims["client_id"] == "cli"
    assert claims["preferred_username"] == "alice"


def test_a_device_polling_with_a_dpop_proof_gets_tokens_bound_to_its_key(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    started = _start(stack, scope="profile")
    answer(stack, started, "approve")
    proof = make_proof(key, "POST", f"{stack.public_issuer}/token")
    tokens = _poll(stack, started["device_code"], headers={"DPoP": proof})
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["token_type"] == "DPoP"
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": thumbprint(key)}
    # A public client's refresh token is bound too (RFC 9449 section 5): no proof, nothing.
    refreshed = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"], "client_id": "cli"},
        timeout=10,
    )
    assert refreshed.status_code == 400


def test_a_device_reaches_an_api_registered_to_require_dpop_by_polling_with_a_proof(stack: Stack) -> None:
    # RFC 8628 has the device prove nothing at /device_authorization: the proof comes with the poll
    # that gets the token (RFC 9449 section 5), so that is where a DPoP-only API is enforced.
    audience = f"dpop-api-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("apis", "add", audience, "--scope", "profile", "--require-dpop")
    assert added.returncode == 0, added.stderr
    started = _start(stack, scope="profile", resource=audience)
    answer(stack, started, "approve")
    refused = _poll(stack, started["device_code"])
    assert _error(refused) == "invalid_dpop_proof"
    assert "DPoP-bound" in refused.json()["error_description"]
    key = ec.generate_private_key(ec.SECP256R1())
    tokens = _poll(
        stack, started["device_code"], headers={"DPoP": make_proof(key, "POST", f"{stack.public_issuer}/token")}
    )
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == audience
    assert claims["cnf"] == {"jkt": thumbprint(key)}


def test_denied_device_gets_access_denied(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    assert "Device denied" in answer(stack, started, "deny")
    assert _error(_poll(stack, started["device_code"])) == "access_denied"


def test_user_with_none_of_the_scopes_cannot_approve(stack: Stack) -> None:
    started = _start(stack, scope="admin")
    # bob has profile only: the page offers no "Allow", and an approval sent anyway is a denial.
    page = answer(stack, started, "approve", "bob", "builder")
    assert "none of the permissions" in page
    assert _error(_poll(stack, started["device_code"])) == "access_denied"


def test_unknown_device_code_is_invalid_grant(stack: Stack) -> None:
    assert _error(_poll(stack, "not-a-device-code-" + uuid.uuid4().hex)) == "invalid_grant"


def test_another_client_cannot_poll_a_device_code(stack: Stack) -> None:
    client_id = f"dev-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("clients", "add", client_id, "--grant", DEVICE_CODE, "--grant", "refresh_token")
    assert added.returncode == 0, added.stderr
    started = _start(stack, scope="profile")
    answer(stack, started, "approve")
    assert _error(_poll(stack, started["device_code"], client_id)) == "invalid_grant"
    assert _poll(stack, started["device_code"]).status_code == 200  # the rightful client still can


DEVICE_CLIENT_GRANTS = ("--grant", DEVICE_CODE, "--grant", "refresh_token")


def _confirmed_for_a_new_client(stack: Stack) -> tuple[str, dict[str, Any], requests.Session, str]:
    """Register a device client, start its request, log in and confirm the code; return what the decision needs."""
    client_id = f"dev-{uuid.uuid4().hex[:8]}"
    assert stack.issuer_cli("clients", "add", client_id, *DEVICE_CLIENT_GRANTS).returncode == 0
    started = _start(stack, client_id=client_id, scope="profile")
    browser, entry = browser_logged_in(stack, started["verification_uri_complete"])
    confirm = browser.post(
        f"{stack.issuer_url}/device", data={"csrf_token": _csrf(entry), "user_code": started["user_code"]}, timeout=10
    )
    return client_id, started, browser, confirm.text


def _decide(stack: Stack, browser: requests.Session, page: str, user_code: str) -> str:
    decided = browser.post(
        f"{stack.issuer_url}/device/decision",
        data={"csrf_token": _csrf(page), "user_code": user_code, "action": "approve"},
        timeout=10,
    )
    return decided.text


def _register_again(stack: Stack, client_id: str) -> None:
    assert stack.issuer_cli("clients", "delete", client_id).returncode == 0
    assert stack.issuer_cli("clients", "add", client_id, *DEVICE_CLIENT_GRANTS).returncode == 0


def test_a_client_registered_again_inherits_no_approved_device_code(stack: Stack) -> None:
    client_id, started, browser, page = _confirmed_for_a_new_client(stack)
    assert "Device approved" in _decide(stack, browser, page, started["user_code"])
    _register_again(stack, client_id)
    assert _error(_poll(stack, started["device_code"], client_id)) == "invalid_grant"


def test_client_without_the_grant_type_is_refused(stack: Stack) -> None:
    response = _authorize_device(stack, client_id="resource-web", scope="profile")
    assert _error(response) == "unauthorized_client"


def test_no_scope_of_the_api_is_invalid_scope(stack: Stack) -> None:
    assert _error(_authorize_device(stack, scope="email")) == "invalid_scope"
    assert _error(_authorize_device(stack, scope="profile", resource="https://nothing.example")) == "invalid_target"


def test_unknown_client_is_invalid_client(stack: Stack) -> None:
    response = _authorize_device(stack, client_id="nobody-" + uuid.uuid4().hex[:6])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_wrong_user_code_is_refused_and_the_typing_is_normalised(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    browser, entry = browser_logged_in(stack, started["verification_uri"])
    wrong = browser.post(
        f"{stack.issuer_url}/device", data={"csrf_token": _csrf(entry), "user_code": "BBBB-BBBB"}, timeout=10
    )
    assert wrong.status_code == 400
    assert "not valid" in wrong.text
    typed = started["user_code"].replace("-", " ").lower()
    confirm = browser.post(
        f"{stack.issuer_url}/device", data={"csrf_token": _csrf(wrong.text), "user_code": typed}, timeout=10
    )
    assert confirm.status_code == 200
    assert "Allow this device?" in confirm.text


def test_forms_need_their_csrf_token(stack: Stack) -> None:
    started = _start(stack, scope="profile")
    browser, _ = browser_logged_in(stack, started["verification_uri"])
    refused = browser.post(f"{stack.issuer_url}/device", data={"user_code": started["user_code"]}, timeout=10)
    assert refused.status_code == 400
    assert "Form expired" in refused.text
    refused = browser.post(
        f"{stack.issuer_url}/device/decision", data={"user_code": started["user_code"], "action": "approve"}, timeout=10
    )
    assert refused.status_code == 400
    assert _error(_poll(stack, started["device_code"])) == "authorization_pending"


@pytest.fixture
def short_lived(make_stack: StackFactory) -> Stack:
    return make_stack(issuer_env={"ISSUER_DEVICE_CODE_TTL": "5", "ISSUER_PASSWORD_GRANT": "false"}).start()


def test_expired_device_code_is_expired_token(short_lived: Stack) -> None:
    started = _start(short_lived, scope="profile")
    assert started["expires_in"] == 5
    time.sleep(6)
    assert _error(_poll(short_lived, started["device_code"])) == "expired_token"


def test_password_grant_can_be_turned_off(short_lived: Stack) -> None:
    response = requests.post(
        f"{short_lived.issuer_url}/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": "cli"},
        timeout=10,
    )
    assert _error(response) == "unsupported_grant_type"
    metadata = requests.get(f"{short_lived.issuer_url}/.well-known/oauth-authorization-server", timeout=10).json()
    assert "password" not in metadata["grant_types_supported"]


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "device-login"


def test_device_login_script_prints_the_token_once_approved(stack: Stack) -> None:
    """The README's first step: the command shows the code, the user approves, the token comes out."""
    command = [sys.executable, str(SCRIPT), "--issuer", stack.issuer_url, "--scope", "profile"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        assert running.stderr is not None
        shown = running.stderr.readline()
        match = USER_CODE.search(shown)
        assert match is not None, shown
        started = {
            "verification_uri_complete": f"{stack.public_issuer}/device?user_code={match[0]}",
            "user_code": match[0],
        }
        answer(stack, started, "approve")
        out, err = running.communicate(timeout=60)
    assert running.returncode == 0, err
    token = out.strip()
    assert stack.get("/api/me", token).status_code == 200


def test_guessing_user_codes_is_limited(short_lived: Stack) -> None:
    started = _start(short_lived, scope="profile")
    browser, entry = browser_logged_in(short_lived, started["verification_uri"])
    statuses = []
    for _ in range(8):
        response = browser.post(
            f"{short_lived.issuer_url}/device", data={"csrf_token": _csrf(entry), "user_code": "BBBB-BBBB"}, timeout=10
        )
        statuses.append(response.status_code)
    assert statuses[0] == 400
    assert 429 in statuses, statuses  # ISSUER_LOGIN_RATE_LIMIT: 5 failures a minute from one address
    assert "Retry-After" in response.headers


def test_device_authorizations_are_limited_per_address(make_stack: StackFactory) -> None:
    # Anyone may start one for a public client, and each is a row kept until it expires: one address
    # may not fill the issuer's database (RFC 8628 section 5.2's polling aside, nothing else bounds it).
    stack = make_stack(issuer_env={"ISSUER_DEVICE_AUTHORIZATION_RATE_LIMIT": "3 per minute"}).start()
    answers = [_authorize_device(stack, scope="profile") for _ in range(20)]
    assert {a.status_code for a in answers} == {200, 429}
    # Counted per worker with the default in-memory storage (Redis shares them): at most 3 each.
    assert sum(a.status_code == 200 for a in answers) <= 3 * stack.workers
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_code_spent_by_its_clients_deletion_cannot_be_approved(stack: Stack) -> None:
    # The page must not say "Device approved" (nor audit an approval) for a code no poll can redeem.
    client_id, started, browser, page = _confirmed_for_a_new_client(stack)
    _register_again(stack, client_id)
    assert "Device approved" not in _decide(stack, browser, page, started["user_code"])
    assert _error(_poll(stack, started["device_code"], client_id)) == "invalid_grant"


def test_a_device_approved_by_a_login_that_has_ended_since_gets_nothing(stack: Stack) -> None:
    """Approved, then the approving login ended (`users reset-factors` ends all of a user's): the poll is refused."""
    started = _start(stack, scope="profile")
    assert "Device approved" in answer(stack, started, "approve")
    reset = stack.issuer_cli("users", "reset-factors", "alice")
    assert reset.returncode == 0, reset.stderr
    refused = _poll(stack, started["device_code"])
    assert _error(refused) == "invalid_grant"
    assert refused.json()["error_description"] == "the login this grant came from has ended"
