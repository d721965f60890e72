"""Unit tests for issuer.reauth's guard of the seven views that change a user's factors, through Flask's test client.

What each view answers a browser with no login, and one whose login is older than
`ISSUER_FACTOR_CHANGE_MAX_AGE`: the status, the `Location`, the JSON body and where the
login comes back to, exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from issuer import extensions
from issuer.db import login_sessions
from issuer.reauth import RELOGIN
from issuer.settings import IssuerSettings
from tests.support.browsing import DEMO_USERS, csrf_token, location_path, log_in

FORMS = [
    ("/account/totp", "account"),
    ("/account/totp/confirm", "account"),
    ("/account/totp/remove", "account"),
    ("/account/passkeys", "passkeys"),
    ("/account/passkeys/nope/rename", "passkeys"),
    ("/account/passkeys/nope/remove", "passkeys"),
]


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return dataclasses.replace(issuer_settings, demo_users=DEMO_USERS)


def _token(client: FlaskClient) -> str:
    return csrf_token(client.get("/login").get_data(as_text=True))


def _post(client: FlaskClient, path: str) -> TestResponse:
    return client.post(path, data={"csrf_token": _token(client), "code": "123456", "name": "Key"})


def _options(client: FlaskClient) -> TestResponse:
    return client.post("/account/passkeys/options", headers={"X-CSRFToken": _token(client)})


def _session(client: FlaskClient) -> dict[str, Any]:
    with client.session_transaction() as session:
        return dict(session)


def _age_logins(app: Flask) -> None:
    """Make every login session older than the factor-change limit."""
    with extensions.of(app).database.transaction() as conn:
        conn.execute(update(login_sessions).values(created_at=login_sessions.c.created_at - 3600))


@pytest.mark.parametrize(("path", "page"), FORMS)
def test_a_factor_change_form_sends_a_browser_with_no_login_to_log_in(
    client: FlaskClient, path: str, page: str
) -> None:
    response = _post(client, path)
    if page == "account":  # the account page's forms answer as the page does, and come back to it
        assert response.status_code == 302
        assert _session(client)["after_login"] == "account"
    else:
        assert response.status_code == 303
        assert "after_login" not in _session(client)
    assert response.headers["Location"] == "/login"


def test_the_registration_options_answer_a_browser_with_no_login_401(client: FlaskClient) -> None:
    response = _options(client)
    assert response.status_code == 401
    assert response.get_json() == {"error": "login_required", "error_description": "log in to add a passkey"}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("path", "page"), FORMS)
def test_a_factor_change_form_sends_an_old_login_to_log_in_again_and_back(
    app: Flask, client: FlaskClient, path: str, page: str
) -> None:
    assert log_in(client).status_code == 200
    _age_logins(app)
    response = _post(client, path)
    assert response.status_code == 303
    assert location_path(response) == "/login"
    assert _session(client)["after_login"] == page


def test_the_registration_options_answer_an_old_login_401(app: Flask, client: FlaskClient) -> None:
    assert log_in(client).status_code == 200
    _age_logins(app)
    response = _options(client)
    assert response.status_code == 401
    assert response.get_json() == {"error": "login_required", "error_description": RELOGIN}
    assert "passkey_challenge" not in _session(client)


def test_a_fresh_login_passes_the_guard(client: FlaskClient) -> None:
    assert log_in(client).status_code == 200
    assert _options(client).status_code == 200
    started = _post(client, "/account/totp")
    assert started.status_code == 200
    assert "QR code" in started.get_data(as_text=True)
