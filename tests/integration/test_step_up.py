"""What a login proved, in the tokens (RFC 8176 `amr`, `acr`, `auth_time`), `acr_values` at /authorize, and the
resource's RFC 9470 step-up: over HTTP against a running stack (issuer, resource, real database)."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import requests

from shared.pkce import s256
from tests.support.sessions import PASSWORD_AND_CODE, session_cookie
from tests.support.stack import Stack
from tests.support.tokens import new_rsa_key

CLIENT_ID = "resource-web"
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def _claims(stack: Stack, token: str, audience: str | None = None) -> dict[str, Any]:
    keys = jwt.PyJWKClient(f"{stack.issuer_url}/.well-known/jwks.json")
    key = keys.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=stack.public_issuer,
        options={"verify_aud": audience is not None},
    )
    return claims


def _redirect_uri(stack: Stack) -> str:
    return f"http://localhost:{urlsplit(stack.resource_url).port}/callback"


def _issuer_url(stack: Stack, location: str) -> str:
    """Return a Location at the issuer's public URL as this test reaches it."""
    parts = urlsplit(location)
    return f"{stack.issuer_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def _authorize(browser: requests.Session, stack: Stack, verifier: str, **extra: str) -> requests.Response:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": _redirect_uri(stack),
        "scope": "openid profile admin",
        "state": "s-1",
        "nonce": "n-1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        **extra,
    }
    return browser.get(f"{stack.issuer_url}/authorize", params=params, allow_redirects=False, timeout=10)


def _log_in(browser: requests.Session, stack: Stack, username: str = "alice", password: str = "wonderland") -> str:
    """Fill in the issuer's login form (the browser was sent there); return where the login sends it back."""
    form = browser.get(f"{stack.issuer_url}/login", timeout=10).text
    match = _CSRF_INPUT.search(form)
    assert match is not None, form
    login = {"csrf_token": match.group(1), "username": username, "password": password}
    posted = browser.post(f"{stack.issuer_url}/login", data=login, allow_redirects=False, timeout=10)
    assert posted.status_code == 303, posted.text
    return _issuer_url(stack, posted.headers["Location"])


def _code(answer: requests.Response, stack: Stack) -> str:
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(_redirect_uri(stack) + "?"), location
    return parse_qs(urlsplit(location).query)["code"][0]


def _exchange(stack: Stack, code: str, verifier: str) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _redirect_uri(stack),
        "client_id": CLIENT_ID,
        "code_verifier": verifier,
    }
    answer = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _password_login(browser: requests.Session, stack: Stack) -> dict[str, Any]:
    """Log alice in with her password through the code flow; return the tokens."""
    verifier = secrets.token_urlsafe(48)
    answer = _authorize(browser, stack, verifier)
    assert answer.status_code == 302, answer.text
    assert urlsplit(answer.headers["Location"]).path == "/login"
    back = _log_in(browser, stack)
    return _exchange(stack, _code(browser.get(back, allow_redirects=False, timeout=10), stack), verifier)


def _set_issuer_session(browser: requests.Session, value: str) -> None:
    (cookie,) = [cookie for cookie in browser.cookies if cookie.name == "issuer_session"]
    browser.cookies.set("issuer_session", value, domain=cookie.domain, path=cookie.path)


# -- the issuer's tokens and metadata ------------------------------------------------------------


def test_the_metadata_names_the_acr_levels_and_the_login_claims(stack: Stack) -> None:
    document = requests.get(f"{stack.issuer_url}/.well-known/openid-configuration", timeout=10).json()
    assert document["acr_values_supported"] == ["single-factor", "multi-factor"]
    assert {"acr", "amr", "auth_time"} <= set(document["claims_supported"])


def test_a_browser_logins_tokens_and_their_refreshes_say_what_it_proved_and_when(stack: Stack) -> None:
    before = int(time.time())
    with requests.Session() as browser:
        tokens = _password_login(browser, stack)
    access, identity = _claims(stack, tokens["access_token"]), _claims(stack, tokens["id_token"], CLIENT_ID)
    for claims in (access, identity):
        assert (claims["amr"], claims["acr"]) == (["pwd"], "single-factor")
        assert before - 1 <= claims["auth_time"] <= claims["iat"]
    time.sleep(1.1)  # a refresh keeps the login's time, not its own
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLIENT_ID}
    refreshed = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10).json()
    for token, audience in ((refreshed["access_token"], None), (refreshed["id_token"], CLIENT_ID)):
        claims = _claims(stack, token, audience)
        assert (claims["amr"], claims["acr"], claims["auth_time"]) == (["pwd"], "single-factor", access["auth_time"])
        assert claims["iat"] > access["auth_time"]


def test_the_password_grant_says_pwd_now_and_a_clients_own_token_says_nothing_of_a_login(stack: Stack) -> None:
    rsa_key = new_rsa_key()
    before = int(time.time())
    claims = _claims(stack, stack.token()["access_token"])
    assert (claims["amr"], claims["acr"]) == (["pwd"], "single-factor")
    assert before - 1 <= claims["auth_time"] <= int(time.time()) + 1
    client_id = stack.register_client(rsa_key, "--scope", "profile")
    answer = stack.service_token(client_id, rsa_key)
    assert answer.status_code == 200, answer.text
    assert not {"amr", "acr", "auth_time"} & set(_claims(stack, answer.json()["access_token"]))


def test_acr_values_above_the_sessions_level_forces_a_fresh_login_whose_token_says_what_it_reached(
    stack: Stack,
) -> None:
    with requests.Session() as browser:
        first = _claims(stack, _password_login(browser, stack)["access_token"])
        # Known levels only: an unknown one is ignored (acr_values is voluntary), so no login is asked.
        verifier = secrets.token_urlsafe(48)
        _code(_authorize(browser, stack, verifier, acr_values="urn:example:gold single-factor"), stack)
        malformed = _authorize(browser, stack, verifier, acr_values="multi-factor\x01")
        assert parse_qs(urlsplit(malformed.headers["Location"]).query)["error"] == ["invalid_request"]

        time.sleep(1.1)
        verifier = secrets.token_urlsafe(48)
        asked = _authorize(browser, stack, verifier, acr_values="multi-factor")
        assert asked.status_code == 302
        assert urlsplit(asked.headers["Location"]).path == "/login"
        # alice has no second factor: her password is all the login can prove, and the token says so.
        back = _log_in(browser, stack)
        tokens = _exchange(stack, _code(browser.get(back, allow_redirects=False, timeout=10), stack), verifier)
        claims = _claims(stack, tokens["access_token"])
        assert (claims["acr"], claims["amr"]) == ("single-factor", ["pwd"])
        assert claims["auth_time"] > first["auth_time"]  # a fresh login, a new session

        # A session whose login proved two factors meets the request at once: a code, no login page.
        _set_issuer_session(browser, session_cookie(stack, "alice"))
        verifier = secrets.token_urlsafe(48)
        code = _code(_authorize(browser, stack, verifier, acr_values="multi-factor"), stack)
        tokens = _exchange(stack, code, verifier)
    for token, audience in ((tokens["access_token"], None), (tokens["id_token"], CLIENT_ID)):
        claims = _claims(stack, token, audience)
        assert (claims["acr"], claims["amr"]) == ("multi-factor", list(PASSWORD_AND_CODE))


# -- the resource's step-up ----------------------------------------------------------------------


def _follow(browser: requests.Session, url: str, expected: int = 302) -> str:
    answer = browser.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == expected, answer.text
    return str(answer.headers["Location"])


def test_the_resource_steps_the_login_up_once_and_then_shows_the_admin_answer(stack: Stack) -> None:
    public = stack.resource_url.replace("127.0.0.1", "localhost")  # the registered redirect URI's host
    with requests.Session() as browser:
        # A password login at the resource, as its "Log in" link makes it.
        at_issuer = _follow(browser, f"{public}/login")
        assert "acr_values" not in at_issuer
        assert urlsplit(_follow(browser, _issuer_url(stack, at_issuer))).path == "/login"
        callback = _follow(browser, _log_in(browser, stack))
        assert _follow(browser, callback, 303) == "/"
        assert 'id="admin-link"' in browser.get(f"{public}/", timeout=10).text

        # The API refuses the token for its login; the page sends the browser for a stronger one.
        cookies = {name: browser.cookies.get(name) for name in ("rs_access", "rs_dpop")}
        refused = stack.get("/api/admin", cookies=cookies)
        assert (refused.status_code, refused.json()["error"]) == (401, "insufficient_user_authentication")
        step_up = _follow(browser, f"{public}/admin")
        query = parse_qs(urlsplit(step_up).query)
        assert urlsplit(step_up).path == "/authorize"
        assert query["acr_values"] == ["multi-factor"]
        assert {"state", "nonce", "code_challenge", "dpop_jkt"} <= set(query)
        assert "max_age" not in query
        # The issuer asks for a fresh login; alice has only her password: the page says to enroll a factor.
        assert urlsplit(_follow(browser, _issuer_url(stack, step_up))).path == "/login"
        callback = _follow(browser, _log_in(browser, stack))
        assert _follow(browser, callback, 303) == "/admin?stepped_up=1"
        page = browser.get(f"{public}/admin?stepped_up=1", allow_redirects=False, timeout=10)
        assert page.status_code == 403, page.text  # no second attempt: no loop
        assert 'id="admin-enroll"' in page.text
        assert f'href="{stack.public_issuer}/account"' in page.text

        # Once her issuer session proved two factors, the next visit's step-up needs no form at all.
        _set_issuer_session(browser, session_cookie(stack, "alice"))
        step_up = _follow(browser, f"{public}/admin")
        callback = _follow(browser, _issuer_url(stack, step_up))
        assert callback.startswith(f"{public}/callback?")
        assert _follow(browser, callback, 303) == "/admin?stepped_up=1"
        page = browser.get(f"{public}/admin?stepped_up=1", allow_redirects=False, timeout=10)
        assert page.status_code == 200, page.text
        assert '<dd id="admin-message">welcome, administrator</dd>' in page.text
        assert '<dd id="admin-acr">multi-factor</dd>' in page.text
        # The session's new token passes /api/admin too (with the session's DPoP key, from the cookie).
        cookies = {name: browser.cookies.get(name) for name in ("rs_access", "rs_dpop")}
        assert stack.get("/api/admin", cookies=cookies).status_code == 200


def test_a_user_without_the_admin_scope_is_told_so_without_a_step_up(stack: Stack) -> None:
    public = stack.resource_url.replace("127.0.0.1", "localhost")
    with requests.Session() as browser:
        at_issuer = _follow(browser, f"{public}/login")
        _follow(browser, _issuer_url(stack, at_issuer))
        callback = _follow(browser, _log_in(browser, stack, "bob", "builder"))
        assert _follow(browser, callback, 303) == "/"
        page = browser.get(f"{public}/admin", allow_redirects=False, timeout=10)
    assert page.status_code == 403, page.text
    assert 'id="admin-no-scope"' in page.text
