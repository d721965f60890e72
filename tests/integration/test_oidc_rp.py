"""A third-party, OpenID Certified relying party (panva's openid-client) against a running stack.

The library does what any web application would: discovery, the authorization URL with PKCE and
a nonce, the code exchange with ID token validation, userinfo, refresh, RP-Initiated Logout.
The person at the browser is played by `requests` (the login form, its CSRF token, the
redirects). The error paths the library would hide are asserted over plain HTTP.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.support.oidc_rp import Refused, RelyingParty, register
from tests.support.stack import Stack

# The relying party's own addresses: registered at the issuer, never contacted (the browser
# stops at the redirect and hands its URL to the library).
REDIRECT_URI = "https://rp.example/callback"
POST_LOGOUT_REDIRECT_URI = "https://rp.example/logged-out"
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def _register(stack: Stack) -> RelyingParty:
    """Register a confidential code-flow client of the test's own from the issuer CLI."""
    return register(
        stack,
        "rp",
        *("--grant", "authorization_code", "--grant", "refresh_token", "--redirect-uri", REDIRECT_URI),
        *("--post-logout-redirect-uri", POST_LOGOUT_REDIRECT_URI),
    )


def _at_issuer(stack: Stack, url: str) -> str:
    """Return a URL at the public issuer as the test reaches it (the browser's cookies stay on one host)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == stack.public_issuer, url
    return f"{stack.issuer_url}{parts.path}?{parts.query}"


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _log_in(browser: requests.Session, stack: Stack, authorization_url: str) -> str:
    """Log alice in at the issuer as a person would; return the URL the issuer sends the browser back to."""
    answer = browser.get(_at_issuer(stack, authorization_url), allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    login = urlsplit(answer.headers["Location"])
    assert login.path == "/login"
    match = _CSRF_INPUT.search(browser.get(f"{stack.issuer_url}/login?{login.query}", timeout=10).text)
    assert match is not None
    form = {"csrf_token": match.group(1), "username": "alice", "password": "wonderland"}
    answer = browser.post(f"{stack.issuer_url}/login", data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 303, answer.text
    back = urlsplit(answer.headers["Location"])
    answer = browser.get(f"{stack.issuer_url}{back.path}?{back.query}", allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    callback: str = answer.headers["Location"]
    assert callback.startswith(REDIRECT_URI + "?"), callback
    return callback


def _begin(rp: RelyingParty, **extra: str) -> dict[str, Any]:
    """Have the library start a login: discovery, then the authorization URL with PKCE, nonce and state."""
    return rp.call("begin", redirect_uri=REDIRECT_URI, scope="openid profile email", **extra)


def _silently(stack: Stack, rp: RelyingParty, browser: requests.Session) -> tuple[dict[str, Any], str]:
    """Ask for a login with prompt=none in the browser; return the login begun and where the issuer answered."""
    begun = _begin(rp, prompt="none")
    answer = browser.get(_at_issuer(stack, begun["authorization_url"]), allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location: str = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    return begun, location


def _finish(rp: RelyingParty, begun: dict[str, Any], callback: str, **checks: str) -> dict[str, Any] | Refused:
    """Have the library finish the login `begun` at `callback`: code exchange, ID token checks, userinfo."""
    expected = {name: begun[name] for name in ("code_verifier", "nonce", "state")}
    return rp.run("callback", callback_url=callback, **{**expected, **checks})


def _logged_in(stack: Stack, rp: RelyingParty, browser: requests.Session) -> dict[str, Any]:
    """Log alice in at the library's request; return its answer (tokens, ID token claims, userinfo)."""
    begun = _begin(rp)
    done = _finish(rp, begun, _log_in(browser, stack, begun["authorization_url"]))
    assert not isinstance(done, Refused), done
    return done


@pytest.mark.deployment
def test_a_certified_relying_party_logs_in_refreshes_and_logs_out(stack: Stack) -> None:
    rp = _register(stack)
    begun = _begin(rp)
    metadata = begun["metadata"]
    assert metadata["issuer"] == stack.public_issuer
    assert metadata["end_session_endpoint"] == f"{stack.public_issuer}/logout"
    assert metadata["authorization_response_iss_parameter_supported"] is True
    authorization = _query(begun["authorization_url"])
    assert authorization["code_challenge_method"] == "S256"
    assert authorization["nonce"] == begun["nonce"]

    with requests.Session() as browser:
        callback = _log_in(browser, stack, begun["authorization_url"])
        assert _query(callback)["iss"] == stack.public_issuer  # RFC 9207, which the library checks too
        logged_in = _finish(rp, begun, callback)
        assert not isinstance(logged_in, Refused), logged_in
        claims = logged_in["claims"]
        alice = stack.user_id("alice")
        assert (claims["iss"], claims["aud"], claims["sub"]) == (stack.public_issuer, rp.client_id, alice)
        assert claims["nonce"] == begun["nonce"]
        assert claims["sid"]
        userinfo = logged_in["userinfo"]
        assert (userinfo["sub"], userinfo["name"], userinfo["email"]) == (alice, "Alice", "alice@example.com")
        assert stack.get("/api/me", logged_in["tokens"]["access_token"]).status_code == 200

        refreshed = rp.call("refresh", refresh_token=logged_in["tokens"]["refresh_token"])
        assert refreshed["tokens"]["id_token"] != logged_in["tokens"]["id_token"]
        again = refreshed["claims"]
        assert (again["sub"], again["aud"], again["auth_time"], again["sid"]) == (
            alice,
            rp.client_id,
            claims["auth_time"],
            claims["sid"],
        )
        assert stack.get("/api/me", refreshed["tokens"]["access_token"]).status_code == 200

        # While the session lasts, the browser logs in again without the form (prompt=none).
        begun, location = _silently(stack, rp, browser)
        silent = _finish(rp, begun, location)
        assert not isinstance(silent, Refused), silent
        assert (silent["claims"]["sid"], silent["claims"]["nonce"]) == (claims["sid"], begun["nonce"])

        logout = rp.call(
            "logout",
            id_token_hint=refreshed["tokens"]["id_token"],
            post_logout_redirect_uri=POST_LOGOUT_REDIRECT_URI,
            state="bye",
        )
        answer = browser.get(_at_issuer(stack, logout["end_session_url"]), allow_redirects=False, timeout=10)
        assert answer.status_code in (302, 303), answer.text
        assert answer.headers["Location"] == f"{POST_LOGOUT_REDIRECT_URI}?{urlencode({'state': 'bye'})}"

        # The session's refresh tokens are revoked (both logins'), and the browser has no session.
        for tokens in (refreshed["tokens"], silent["tokens"]):
            refused = rp.refusal("refresh", refresh_token=tokens["refresh_token"])
            assert refused.error == "invalid_grant", refused
        begun, location = _silently(stack, rp, browser)
        assert _query(location)["error"] == "login_required"


def test_prompt_none_without_a_session_redirects_with_login_required(stack: Stack) -> None:
    rp = _register(stack)
    with requests.Session() as browser:
        begun, location = _silently(stack, rp, browser)
    answered = _query(location)
    assert {name: answered.get(name) for name in ("error", "state", "iss")} == {
        "error": "login_required",
        "state": begun["state"],
        "iss": stack.public_issuer,
    }
    assert "code" not in answered
    # The library reads the same answer as the provider's refusal, once state and iss check out.
    refused = _finish(rp, begun, location)
    assert isinstance(refused, Refused), refused
    assert (refused.name, refused.error) == ("AuthorizationResponseError", "login_required")


def test_the_relying_party_refuses_an_id_token_with_another_nonce(stack: Stack) -> None:
    rp = _register(stack)
    begun = _begin(rp)
    with requests.Session() as browser:
        callback = _log_in(browser, stack, begun["authorization_url"])
    # The provider echoes the nonce it was sent; the relying party expects another one (as if
    # the response were replayed into another login of its own) and must refuse the ID token.
    refused = _finish(rp, begun, callback, nonce=begun["nonce"] + "-other")
    assert isinstance(refused, Refused), refused
    assert (refused.code, refused.claim) == ("OAUTH_JWT_CLAIM_COMPARISON_FAILED", "nonce"), refused
    assert refused.reason == 'unexpected ID Token "nonce" claim value'


def test_logout_to_an_unregistered_redirect_is_an_error_page_never_a_redirect(stack: Stack) -> None:
    rp = _register(stack)
    with requests.Session() as browser:
        logged_in = _logged_in(stack, rp, browser)
        logout = rp.call(
            "logout",
            id_token_hint=logged_in["tokens"]["id_token"],
            post_logout_redirect_uri="https://rp.example/elsewhere",
            state="bye",
        )
        answer = browser.get(_at_issuer(stack, logout["end_session_url"]), allow_redirects=False, timeout=10)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")


def test_an_id_token_is_refused_as_an_access_token_by_both_apis(stack: Stack) -> None:
    rp = _register(stack)
    with requests.Session() as browser:
        id_token = _logged_in(stack, rp, browser)["tokens"]["id_token"]
    for refused in (stack.get("/api/me", id_token), stack.get_reports("/api/report", id_token)):
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
