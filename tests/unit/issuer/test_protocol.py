"""Unit tests for issuer.protocol: one root for the issuer's OAuth errors, rendered by one handler three ways."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from issuer.client_auth import InvalidClient
from issuer.clients import Client
from issuer.protocol import AuthorizationError, ClientRedirect, OAuthError, PageError
from issuer.settings import IssuerSettings

ISSUER = "http://issuer.test"
REDIRECT = "http://rs.test/callback"
WEB = Client("web", frozenset({"authorization_code", "refresh_token"}), (REDIRECT, "http://rs.test/cb?tenant=7"))
CLI = Client("cli", frozenset({"password"}), (REDIRECT,))


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return issuer_settings


def _raised(app: Flask, error: Callable[[], Exception]) -> TestResponse:
    """Answer a request to a route that raises `error()`, through the app's own error handlers."""

    def fail() -> str:
        raise error()

    app.add_url_rule("/fail", "fail", fail)
    return app.test_client().get("/fail")


def _redirect(client: Client = WEB, redirect_uri: str = REDIRECT, state: str | None = "xyz") -> ClientRedirect:
    return ClientRedirect.registered(client, redirect_uri, state=state, iss=ISSUER)


def _query(response: TestResponse) -> dict[str, list[str]]:
    return parse_qs(urlsplit(response.headers["Location"]).query)


def test_oauth_error_renders_rfc6749_json_never_cached(app: Flask) -> None:
    response = _raised(app, lambda: OAuthError("the code is not known", error="invalid_grant"))
    assert response.status_code == 400
    assert response.json == {"error": "invalid_grant", "error_description": "the code is not known"}
    assert response.headers["Cache-Control"] == "no-store"
    assert "Location" not in response.headers


def test_oauth_error_keeps_its_status_and_headers(app: Flask) -> None:
    response = _raised(app, lambda: InvalidClient())
    assert response.status_code == 401
    assert response.json == {"error": "invalid_client", "error_description": "client authentication failed"}
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_invalid_client_is_an_oauth_error() -> None:
    assert isinstance(InvalidClient(), OAuthError)


def test_authorization_error_redirects_to_the_client_with_error_state_and_iss(app: Flask) -> None:
    response = _raised(app, lambda: AuthorizationError(_redirect(), "only code", error="unsupported_response_type"))
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT + "?")
    assert _query(response) == {
        "error": ["unsupported_response_type"],
        "error_description": ["only code"],
        "state": ["xyz"],
        "iss": [ISSUER],
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_authorization_error_without_state_sends_none(app: Flask) -> None:
    response = _raised(app, lambda: AuthorizationError(_redirect(state=None), "bad nonce"))
    assert _query(response) == {"error": ["invalid_request"], "error_description": ["bad nonce"], "iss": [ISSUER]}


def test_authorization_error_keeps_the_query_of_the_registered_redirect_uri(app: Flask) -> None:
    to = _redirect(redirect_uri="http://rs.test/cb?tenant=7")
    response = _raised(app, lambda: AuthorizationError(to, "no", error="login_required"))
    assert response.headers["Location"].startswith("http://rs.test/cb?tenant=7&")
    assert _query(response)["tenant"] == ["7"]
    assert _query(response)["error"] == ["login_required"]


def test_authorization_error_in_fragment_mode_puts_the_parameters_in_the_fragment(app: Flask) -> None:
    to = ClientRedirect(WEB, REDIRECT, "xyz", ISSUER, response_mode="fragment")
    response = _raised(app, lambda: AuthorizationError(to, "no"))
    location = urlsplit(response.headers["Location"])
    assert location.query == ""
    assert parse_qs(location.fragment)["error"] == ["invalid_request"]


@pytest.mark.parametrize(
    ("client", "redirect_uri", "heading"),
    [
        (None, REDIRECT, "Unknown application"),
        (CLI, REDIRECT, "Unknown application"),  # registered, but not for the code flow
        (WEB, "http://evil.test/callback", "Invalid redirect"),
        (WEB, REDIRECT + "/more", "Invalid redirect"),  # exact match only: no prefix
        (WEB, REDIRECT.upper(), "Invalid redirect"),
        (WEB, "", "Invalid redirect"),
    ],
)
def test_untrusted_client_or_redirect_uri_is_a_page_never_a_redirect(
    app: Flask, client: Client | None, redirect_uri: str, heading: str
) -> None:
    with pytest.raises(PageError) as raised:
        ClientRedirect.registered(client, redirect_uri, state="xyz", iss=ISSUER)
    response = _raised(app, lambda: raised.value)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert heading in response.get_data(as_text=True)


def test_page_error_renders_an_html_alert_with_its_status_and_headers(app: Flask) -> None:
    error = PageError("Too many attempts", "Wait 30 seconds.", status=429, headers={"Retry-After": "30"})
    response = _raised(app, lambda: error)
    html = response.get_data(as_text=True)
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert response.headers["Retry-After"] == "30"
    assert "Location" not in response.headers
    assert "<h1>Too many attempts</h1>" in html
    assert 'role="alert">Wait 30 seconds.</p>' in html
    assert "<form" not in html


def test_page_error_escapes_its_text(app: Flask) -> None:
    response = _raised(app, lambda: PageError("Cannot log out", "<script>alert(1)</script>"))
    html = response.get_data(as_text=True)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;" in html


def test_page_error_is_an_oauth_error_with_a_code_for_logs_and_metrics() -> None:
    error = PageError("Unknown application", "not registered", error="invalid_client")
    assert isinstance(error, OAuthError)
    assert (error.error, error.status, error.description) == ("invalid_client", 400, "not registered")
