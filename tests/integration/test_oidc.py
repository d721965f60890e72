"""OpenID Connect over HTTP against a running stack: the code flow with PKCE and nonce, the ID token, /userinfo,
and RP-initiated logout."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from shared.pkce import s256
from tests.support.stack import Stack

CLIENT_ID = "resource-web"
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def _redirect_uri(stack: Stack) -> str:
    """Return the web client's registered redirect URI: the resource's callback at its public address."""
    return f"http://localhost:{urlsplit(stack.resource_url).port}/callback"


def _public(stack: Stack, path: str) -> str:
    """Return an address at the resource's public origin (its web client registered it)."""
    return f"http://localhost:{urlsplit(stack.resource_url).port}{path}"


def _authorize_params(stack: Stack, verifier: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": _redirect_uri(stack),
        "scope": "openid profile email",
        "state": "s-1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        **extra,
    }


def _query(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def _code_flow(
    stack: Stack,
    nonce: str,
    browser: requests.Session | None = None,
    username: str = "alice",
    password: str = "wonderland",
) -> dict[str, Any]:
    """Log a user in through /authorize and /login as a browser would (in `browser`, kept); return /token's answer."""
    verifier = secrets.token_urlsafe(48)
    redirect_uri = _redirect_uri(stack)
    params = _authorize_params(stack, verifier, nonce=nonce)
    with contextlib.ExitStack() as closing:
        browser = browser or closing.enter_context(requests.Session())
        answer = browser.get(f"{stack.issuer_url}/authorize", params=params, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        assert urlsplit(answer.headers["Location"]).path == "/login"
        form = browser.get(f"{stack.issuer_url}/login", timeout=10).text
        match = _CSRF_INPUT.search(form)
        assert match is not None
        login = {"csrf_token": match.group(1), "username": username, "password": password}
        answer = browser.post(f"{stack.issuer_url}/login", data=login, allow_redirects=False, timeout=10)
        assert answer.status_code == 303, answer.text
        back = urlsplit(answer.headers["Location"])
        answer = browser.get(f"{stack.issuer_url}{back.path}?{back.query}", allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(redirect_uri + "?")
    query = _query(location)
    assert query["state"] == "s-1"
    form_data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": redirect_uri,
        "client_id": CLIENT_ID,
        "code_verifier": verifier,
    }
    response = requests.post(f"{stack.issuer_url}/token", data=form_data, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.deployment
def test_the_code_flow_gives_an_id_token_and_userinfo_and_the_api_refuses_the_id_token(stack: Stack) -> None:
    nonce = secrets.token_urlsafe(16)
    tokens = _code_flow(stack, nonce)
    discovery = requests.get(f"{stack.issuer_url}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["issuer"] == stack.public_issuer
    jwks = jwt.PyJWKClient(discovery["jwks_uri"].replace(stack.public_issuer, stack.issuer_url))
    key = jwks.get_signing_key_from_jwt(tokens["id_token"])
    claims = jwt.decode(
        tokens["id_token"], key.key, algorithms=["RS256"], audience=CLIENT_ID, issuer=stack.public_issuer
    )
    assert jwt.get_unverified_header(tokens["id_token"])["typ"] == "JWT"
    alice = stack.user_id("alice")
    assert claims["sub"] == alice  # the stable id (OpenID Connect Core 1.0 section 2), never the name
    assert not {"name", "email", "preferred_username"} & set(claims)  # minimal: those are at /userinfo
    assert claims["nonce"] == nonce
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert claims["auth_time"] <= claims["iat"]

    userinfo_url = discovery["userinfo_endpoint"].replace(stack.public_issuer, stack.issuer_url)
    info = requests.get(userinfo_url, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == alice
    assert info.json()["preferred_username"] == "alice"
    assert info.json()["email"] == "alice@example.com"
    assert info.json()["name"] == "Alice"

    # The access token still works at the API; the ID token, presented as one, never does.
    assert stack.get("/api/me", tokens["access_token"]).status_code == 200
    refused = stack.get("/api/me", tokens["id_token"])
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"
    assert refused.json()["error_description"] == "the token type must be at+jwt"  # refused for its typ first
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def _userinfo(stack: Stack, access_token: str) -> requests.Response:
    return requests.get(f"{stack.issuer_url}/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10)


def test_a_new_user_with_a_deleted_users_name_is_someone_else(stack: Stack) -> None:
    """OpenID Connect Core 1.0 section 2: `sub` is never reassigned, so the name is never the `sub`."""
    name = f"dinah{secrets.token_hex(4)}"  # a user of this test's own: the shared stack keeps alice and bob

    def add(password: str, *profile: str) -> None:
        added = stack.issuer_cli("users", "add", name, *profile, stdin=f"{password}\n")
        assert added.returncode == 0, added.stderr

    add("first rabbit hole", "--name", "Dinah", "--email", "dinah@example.com")
    first = _code_flow(stack, secrets.token_urlsafe(16), username=name, password="first rabbit hole")
    first_sub = jwt.decode(first["id_token"], options={"verify_signature": False})["sub"]
    assert first_sub == stack.user_id(name) != name
    assert stack.issuer_cli("users", "delete", name).returncode == 0
    add("another rabbit hole", "--name", "Dinah Two", "--email", "two@example.com")

    # The first person's access token, still within its lifetime, reads nothing of the newcomer's.
    assert _userinfo(stack, first["access_token"]).status_code == 401
    # Their refresh token mints nothing for the newcomer.
    refused = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID},
        timeout=10,
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")

    second = _code_flow(stack, secrets.token_urlsafe(16), username=name, password="another rabbit hole")
    second_sub = jwt.decode(second["id_token"], options={"verify_signature": False})["sub"]
    assert second_sub != first_sub
    assert second_sub == stack.user_id(name)
    info = _userinfo(stack, second["access_token"]).json()
    assert (info["sub"], info["name"], info["email"]) == (second_sub, "Dinah Two", "two@example.com")
    assert stack.issuer_cli("users", "delete", name).returncode == 0


def test_rp_initiated_logout_ends_the_session_and_its_refresh_tokens(stack: Stack) -> None:
    discovery = requests.get(f"{stack.issuer_url}/.well-known/openid-configuration", timeout=10).json()
    end_session = discovery["end_session_endpoint"].replace(stack.public_issuer, stack.issuer_url)
    logged_out = _public(stack, "/logged-out")
    with requests.Session() as browser:
        tokens = _code_flow(stack, secrets.token_urlsafe(16), browser)

        # An unregistered return address: an error page, never a redirect, and nothing ends.
        refused = browser.get(
            end_session,
            params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "http://evil.test/"},
            allow_redirects=False,
            timeout=10,
        )
        assert refused.status_code == 400, refused.text
        assert "Location" not in refused.headers

        # The hint names this browser's session: it ends at once and the browser goes back with state.
        answer = browser.get(
            end_session,
            params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": logged_out, "state": "bye-1"},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 302, answer.text
        assert answer.headers["Location"] == f"{logged_out}?state=bye-1"

        # The session is over: prompt=none says so, and its refresh token is refused.
        verifier = secrets.token_urlsafe(48)
        silent = browser.get(
            f"{stack.issuer_url}/authorize",
            params=_authorize_params(stack, verifier, prompt="none"),
            allow_redirects=False,
            timeout=10,
        )
        assert silent.status_code == 302, silent.text
        assert _query(silent.headers["Location"])["error"] == "login_required"
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLIENT_ID}
    response = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
