"""Drive the issuer's browser pages with a Flask test client, as a person with a browser would."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

DEMO_USERS = "alice:wonderland:profile admin;bob:builder:profile"
WEB_REDIRECT_URI = "http://localhost:8001/callback"  # the resource's callback at its default public URL

# RFC 7636 appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """Return the CSRF token of the (first) form on a page."""
    match = _CSRF_INPUT.search(html)
    assert match is not None, "the page has no form with a csrf_token"
    return match.group(1)


def log_in(client: FlaskClient, username: str = "alice", password: str = "wonderland") -> TestResponse:
    """Open the login form and submit it."""
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "username": username, "password": password})


def authorize_params(redirect_uri: str, /, **overrides: str | None) -> dict[str, str]:
    """Return a valid authorization request for the resource's web client; `None` drops a parameter."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "resource-web",
        "redirect_uri": redirect_uri,
        "scope": "profile",
        "state": "state-123",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **overrides,
    }
    return {name: value for name, value in params.items() if value is not None}


def query(response: TestResponse) -> dict[str, str]:
    """Return the query parameters of a redirect's Location, one value each."""
    return {name: values[0] for name, values in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def location_path(response: TestResponse) -> str:
    """Return the path a redirect points to."""
    return urlsplit(response.headers["Location"]).path


def follow_authorization(client: FlaskClient, url: str) -> TestResponse:
    """Open an authorization URL at the issuer, logging alice in if asked; return the final answer."""
    parts = urlsplit(url)
    response = client.get(parts.path, query_string=parts.query)
    if response.status_code == 302 and location_path(response) == "/login":
        response = log_in(client)
        assert response.status_code == 303, response.get_data(as_text=True)
        response = client.get(response.headers["Location"])
    return response


def get_code(client: FlaskClient, redirect_uri: str, /, **overrides: str | None) -> str:
    """Run the browser half of the code flow (logging alice in first if needed); return the code."""
    response = follow_authorization(client, "/authorize?" + urlencode(authorize_params(redirect_uri, **overrides)))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].startswith(redirect_uri + "?")
    return query(response)["code"]
