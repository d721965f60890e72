"""Unit tests for issuer.browser through Flask's test client: /authorize, /login and /logout."""

from __future__ import annotations

import base64
import dataclasses
import threading
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from issuer import create_app
from issuer.clients import Client
from issuer.settings import IssuerSettings
from tests.support.browsing import (
    CHALLENGE,
    DEMO_USERS,
    VERIFIER,
    authorize_params,
    csrf_token,
    get_code,
    location_path,
    log_in,
    query,
)
from tests.support.sql import rows

ISSUER = "http://issuer.test"
REDIRECT = "http://rs.test/callback"
LOGIN_FAILED = "The username or password is incorrect."


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return dataclasses.replace(
        issuer_settings, demo_users=DEMO_USERS, web_redirect_uris=(REDIRECT,), login_rate_limit="2 per minute"
    )


def _authorize(client: FlaskClient, **overrides: str | None) -> TestResponse:
    return client.get("/authorize", query_string=authorize_params(REDIRECT, **overrides))


def _exchange(client: FlaskClient, code: str, /, **overrides: str | None) -> TestResponse:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "resource-web",
        "code_verifier": VERIFIER,
        **overrides,
    }
    return client.post("/token", data={name: value for name, value in form.items() if value is not None})


def _assert_error_page(response: TestResponse, status: int, text: str) -> str:
    """Check a response is an HTML error page shown to the user, not a redirect anywhere."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html
    assert text in html
    return html


def _assert_client_error(response: TestResponse, error: str, state: str | None = "state-123") -> dict[str, str]:
    """Check a response sends the browser back to the client with an RFC 6749 4.1.2.1 error."""
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].startswith(REDIRECT + "?")
    params = query(response)
    assert params["error"] == error
    assert params["error_description"]
    assert params.get("state") == state
    assert params["iss"] == ISSUER
    assert "code" not in params
    return params


def _assert_json_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"] == error
    return body


def _session(client: FlaskClient) -> dict[str, Any]:
    with client.session_transaction() as session:
        return dict(session)


def _set_cookie(response: TestResponse, name: str) -> str:
    (header,) = [value for value in response.headers.getlist("Set-Cookie") if value.startswith(name + "=")]
    return header


# -- /authorize: client and redirect URI --------------------------------------------------


@pytest.mark.parametrize("client_id", ["stranger", "cli", None])
def test_authorize_for_unknown_or_non_web_client_shows_an_error_page(
    client: FlaskClient, client_id: str | None
) -> None:
    _assert_error_page(_authorize(client, client_id=client_id), 400, "not registered")


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://evil.test/callback", "http://rs.test/callback/", "http://rs.test/callback?x=1", "http://rs.test", None],
)
def test_authorize_with_unregistered_redirect_uri_shows_an_error_page_and_never_redirects(
    client: FlaskClient, redirect_uri: str | None
) -> None:
    response = _authorize(client, redirect_uri=redirect_uri, response_type="token")
    _assert_error_page(response, 400, "redirect address is not registered")


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_authorize_with_a_repeated_client_id_or_redirect_uri_shows_an_error_page(
    client: FlaskClient, name: str
) -> None:
    valid = authorize_params(REDIRECT)
    params = [*valid.items(), (name, valid[name])]
    response = client.get("/authorize", query_string=params)
    _assert_error_page(response, 400, "more than once")


@pytest.mark.parametrize("name", ["response_type", "scope", "code_challenge", "code_challenge_method"])
def test_authorize_with_another_repeated_parameter_returns_invalid_request(client: FlaskClient, name: str) -> None:
    """RFC 6749 4.1.2.1: with the redirect URI trusted, `invalid_request` (a parameter more than once) goes to the client."""
    valid = authorize_params(REDIRECT)
    params = [*valid.items(), (name, valid[name])]
    response = _assert_client_error(client.get("/authorize", query_string=params), "invalid_request")
    assert name in response["error_description"]


def test_authorize_with_a_repeated_state_returns_invalid_request_without_state(client: FlaskClient) -> None:
    params = [*authorize_params(REDIRECT).items(), ("state", "other")]
    response = client.get("/authorize", query_string=params)
    _assert_client_error(response, "invalid_request", None)
    assert "state=" not in response.headers["Location"]


# -- /authorize: errors returned to the client --------------------------------------------


@pytest.mark.parametrize("response_type", ["token", "code token", "id_token"])
def test_authorize_with_another_response_type_returns_unsupported_response_type(
    client: FlaskClient, response_type: str | None
) -> None:
    _assert_client_error(_authorize(client, response_type=response_type), "unsupported_response_type")


@pytest.mark.parametrize("response_type", ["", None])
def test_authorize_without_response_type_returns_invalid_request(
    client: FlaskClient, response_type: str | None
) -> None:
    """RFC 6749 4.1.2.1: a missing required parameter is `invalid_request`; 3.1: an empty one is missing."""
    params = _assert_client_error(_authorize(client, response_type=response_type), "invalid_request")
    assert "response_type" in params["error_description"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge": None},
        {"code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge": VERIFIER, "code_challenge_method": "plain"},
        {"code_challenge": CHALLENGE[:-1]},
        {"code_challenge": CHALLENGE + "A"},
        {"code_challenge": CHALLENGE[:-1] + "="},
    ],
    ids=["no-pkce", "no-challenge", "no-method", "plain", "plain-verifier", "short", "long", "padded"],
)
def test_authorize_without_s256_pkce_returns_invalid_request(
    client: FlaskClient, overrides: dict[str, str | None]
) -> None:
    params = _assert_client_error(_authorize(client, **overrides), "invalid_request")
    assert "PKCE" in params["error_description"]


def test_authorize_with_malformed_scope_returns_invalid_scope(client: FlaskClient) -> None:
    _assert_client_error(_authorize(client, scope='profile "admin"'), "invalid_scope")


def test_authorize_error_without_state_has_no_state(client: FlaskClient) -> None:
    _assert_client_error(_authorize(client, state=None, response_type="token"), "unsupported_response_type", None)


def test_authorize_error_redirect_is_not_cached(client: FlaskClient) -> None:
    assert _authorize(client, response_type="token").headers["Cache-Control"] == "no-store"


def test_authorize_with_no_grantable_scope_returns_invalid_scope(client: FlaskClient) -> None:
    log_in(client, "bob", "builder")
    _assert_client_error(_authorize(client, scope="admin"), "invalid_scope")


# -- /authorize: logging in first ---------------------------------------------------------


def test_authorize_when_logged_out_sends_the_browser_to_login_and_remembers_the_request(client: FlaskClient) -> None:
    response = _authorize(client)
    assert response.status_code == 302
    assert location_path(response) == "/login"
    assert _session(client)["authorize"] == authorize_params(REDIRECT)
    assert "the jwt-split resource" in client.get("/login").get_data(as_text=True)


def test_login_continues_the_remembered_request_with_a_303(client: FlaskClient) -> None:
    _authorize(client)
    response = log_in(client)
    assert response.status_code == 303
    assert location_path(response) == "/authorize"
    assert query(response) == authorize_params(REDIRECT)


def test_code_flow_redirects_back_with_code_state_and_issuer(client: FlaskClient) -> None:
    _authorize(client)
    response = client.get(log_in(client).headers["Location"])
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT + "?")
    assert response.headers["Cache-Control"] == "no-store"
    params = query(response)
    assert set(params) == {"code", "state", "iss"}
    assert (params["state"], params["iss"]) == ("state-123", ISSUER)
    assert len(params["code"]) >= 43
    assert "authorize" not in _session(client)


def test_logged_in_user_gets_a_code_without_logging_in_again(client: FlaskClient) -> None:
    first = get_code(client, REDIRECT)
    response = _authorize(client, state="second")
    assert response.status_code == 302
    params = query(response)
    assert params["state"] == "second"
    assert params["code"] != first


def test_login_page_when_logged_in_with_a_pending_request_continues_it(client: FlaskClient) -> None:
    log_in(client)
    with client.session_transaction() as session:
        session["authorize"] = authorize_params(REDIRECT)
    response = client.get("/login")
    assert response.status_code == 302
    assert location_path(response) == "/authorize"


# -- /token with the code -----------------------------------------------------------------


def test_code_is_exchanged_for_tokens_with_the_verifier(client: FlaskClient, app: Flask) -> None:
    response = _exchange(client, get_code(client, REDIRECT, scope="profile admin billing"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "admin profile"
    assert body["refresh_token"]
    key = app.extensions["issuer"].keys.signing_key().private_key.public_key()
    claims = jwt.decode(body["access_token"], key, algorithms=["RS256"], audience="jwt-split-api", issuer=ISSUER)
    assert (claims["preferred_username"], claims["client_id"], claims["scope"]) == (
        "alice",
        "resource-web",
        "admin profile",
    )


def test_code_without_scope_grants_every_scope_of_the_user(client: FlaskClient) -> None:
    assert _exchange(client, get_code(client, REDIRECT, scope=None)).get_json()["scope"] == "admin profile"


def test_reused_code_is_invalid_grant(client: FlaskClient) -> None:
    code = get_code(client, REDIRECT)
    assert _exchange(client, code).status_code == 200
    body = _assert_json_error(_exchange(client, code), 400, "invalid_grant")
    assert "already used" in body["error_description"]


def test_reused_code_revokes_the_refresh_token_issued_for_it(client: FlaskClient) -> None:
    code = get_code(client, REDIRECT)
    refresh_token = _exchange(client, code).get_json()["refresh_token"]
    _exchange(client, code)
    response = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "resource-web"}
    )
    _assert_json_error(response, 400, "invalid_grant")


def test_wrong_verifier_is_invalid_grant(client: FlaskClient) -> None:
    body = _assert_json_error(
        _exchange(client, get_code(client, REDIRECT), code_verifier="x" * 43), 400, "invalid_grant"
    )
    assert "code_verifier" in body["error_description"]


def test_malformed_verifier_is_invalid_grant(client: FlaskClient) -> None:
    _assert_json_error(_exchange(client, get_code(client, REDIRECT), code_verifier="short"), 400, "invalid_grant")


def test_other_redirect_uri_at_the_token_endpoint_is_invalid_grant(client: FlaskClient) -> None:
    code = get_code(client, REDIRECT)
    _assert_json_error(_exchange(client, code, redirect_uri="http://evil.test/callback"), 400, "invalid_grant")


@pytest.mark.parametrize("missing", ["code", "redirect_uri", "code_verifier"])
def test_code_grant_without_a_required_parameter_is_invalid_request(client: FlaskClient, missing: str) -> None:
    body = _assert_json_error(_exchange(client, get_code(client, REDIRECT), **{missing: None}), 400, "invalid_request")
    assert missing in body["error_description"]


def test_code_grant_without_client_id_is_invalid_request(client: FlaskClient) -> None:
    body = _assert_json_error(_exchange(client, get_code(client, REDIRECT), client_id=None), 400, "invalid_request")
    assert "client_id" in body["error_description"]


def test_code_grant_without_client_id_issues_no_tokens(client: FlaskClient) -> None:
    response = _exchange(client, get_code(client, REDIRECT), client_id=None)
    assert response.status_code == 400
    assert "access_token" not in response.get_json()


def test_code_grant_of_a_client_authenticated_by_basic_needs_no_client_id(app: Flask, client: FlaskClient) -> None:
    # RFC 6749 4.1.3: client_id is required only of a client that does not authenticate; a
    # certified relying party (openid-client) sends client_secret_basic and no client_id.
    secret = "s" * 32
    app.extensions["issuer"].clients.add(
        Client("partner", frozenset({"authorization_code"}), (REDIRECT,)), secret=secret, allow_insecure_redirect=True
    )
    code = get_code(client, REDIRECT, client_id="partner")
    basic = base64.b64encode(f"partner:{secret}".encode()).decode()
    response = client.post(
        "/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["access_token"]


def test_code_for_the_web_client_cannot_be_redeemed_by_the_cli_client(client: FlaskClient) -> None:
    _assert_json_error(_exchange(client, get_code(client, REDIRECT), client_id="cli"), 400, "unauthorized_client")


# -- /login -------------------------------------------------------------------------------


def test_login_without_a_pending_request_says_who_is_logged_in(client: FlaskClient) -> None:
    response = log_in(client)
    assert response.status_code == 200
    assert "You are logged in as alice." in response.get_data(as_text=True)
    assert _session(client)["sid"]


def test_login_without_csrf_token_shows_a_security_token_error(client: FlaskClient) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": "wonderland"})
    _assert_error_page(response, 400, "security token")
    assert "sid" not in _session(client)


def test_login_with_a_forged_csrf_token_is_refused(client: FlaskClient) -> None:
    client.get("/login")
    response = client.post("/login", data={"csrf_token": "forged", "username": "alice", "password": "wonderland"})
    _assert_error_page(response, 400, "security token")


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "not-her-password"), ("mallory", "wonderland"), ("alice", ""), ("", "x")]
)
def test_failed_login_shows_one_generic_message_and_starts_no_session(
    client: FlaskClient, username: str, password: str
) -> None:
    response = log_in(client, username, password)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert LOGIN_FAILED in html
    assert "not-her-password" not in html
    assert "sid" not in _session(client)
    assert location_path(_authorize(client)) == "/login"


def test_failed_login_keeps_the_pending_request(client: FlaskClient) -> None:
    _authorize(client)
    log_in(client, "alice", "wrong-password")
    response = log_in(client)
    assert response.status_code == 303
    assert location_path(response) == "/authorize"


def test_login_replaces_the_session_it_started_in(client: FlaskClient) -> None:
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    log_in(client)
    assert "planted" not in _session(client)


def test_login_is_rate_limited_per_account(client: FlaskClient) -> None:
    assert log_in(client, "alice", "guess-1").status_code == 200
    assert log_in(client, "alice", "guess-2").status_code == 200
    response = log_in(client, "alice", "wonderland")
    _assert_error_page(response, 429, "Too many login attempts")
    assert 1 <= int(response.headers["Retry-After"]) <= 61  # the window, rounded up to whole seconds
    assert "sid" not in _session(client)


def test_login_rate_limit_of_one_account_leaves_others_alone(client: FlaskClient) -> None:
    for guess in ("guess-1", "guess-2", "guess-3"):
        log_in(client, "alice", guess)
    assert "You are logged in as bob." in log_in(client, "bob", "builder").get_data(as_text=True)


def test_login_rate_limit_ignores_the_case_of_the_name(client: FlaskClient) -> None:
    log_in(client, "alice", "guess-1")
    log_in(client, "ALICE", "guess-2")
    assert log_in(client, " Alice ", "guess-3").status_code == 429


def test_password_grant_is_rate_limited_per_account_with_json(client: FlaskClient) -> None:
    def password_grant(username: str, password: str) -> TestResponse:
        return client.post("/token", data={"grant_type": "password", "username": username, "password": password})

    _assert_json_error(password_grant("alice", "guess-1"), 400, "invalid_grant")
    _assert_json_error(password_grant("alice", "guess-2"), 400, "invalid_grant")
    response = password_grant("alice", "wonderland")
    _assert_json_error(response, 429, "too_many_requests")
    assert response.mimetype == "application/json"
    assert 1 <= int(response.headers["Retry-After"]) <= 61  # the window, rounded up to whole seconds
    assert password_grant("bob", "builder").status_code == 200


def test_code_grants_are_not_counted_against_the_account_limit(client: FlaskClient) -> None:
    for _ in range(3):
        assert _exchange(client, get_code(client, REDIRECT)).status_code == 200


def _from(app: Flask, address: str) -> FlaskClient:
    """A browser at another client address."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_successful_logins_do_not_count_against_the_limit(client: FlaskClient) -> None:
    for _ in range(5):
        assert "You are logged in as alice." in log_in(client).get_data(as_text=True)


def test_successful_password_grants_do_not_count_against_the_limit(client: FlaskClient) -> None:
    for _ in range(5):
        response = client.post("/token", data={"grant_type": "password", "username": "alice", "password": "wonderland"})
        assert response.status_code == 200


def test_failures_from_one_address_do_not_lock_the_account_out_elsewhere(app: Flask) -> None:
    attacker, owner = _from(app, "192.0.2.66"), _from(app, "192.0.2.10")
    for guess in ("guess-1", "guess-2", "guess-3", "guess-4", "guess-5"):
        log_in(attacker, "alice", guess)
    assert log_in(attacker, "alice", "wonderland").status_code == 429
    assert "You are logged in as alice." in log_in(owner).get_data(as_text=True)
    grant = {"grant_type": "password", "username": "alice", "password": "wonderland"}
    assert owner.post("/token", data=grant).status_code == 200


def test_failures_through_the_form_and_the_token_endpoint_share_one_count(client: FlaskClient) -> None:
    log_in(client, "alice", "guess-1")
    client.post("/token", data={"grant_type": "password", "username": "alice", "password": "guess-2"})
    assert log_in(client).status_code == 429


def _refresh(client: FlaskClient, refresh_token: str) -> TestResponse:
    form = {"grant_type": "refresh_token", "client_id": "resource-web", "refresh_token": refresh_token}
    return client.post("/token", data=form)


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token"])
def test_junk_exchanges_from_one_address_spend_no_budget_others_share(app: Flask, grant: str) -> None:
    """The resource's back channel relays every browser's code exchange and refresh from one address."""
    back_channel = _from(app, "198.51.100.7")
    for _ in range(40):  # more than ISSUER_ADDRESS_RATE_LIMIT's 30 a minute
        junk = _exchange(back_channel, "junk") if grant == "authorization_code" else _refresh(back_channel, "junk")
        _assert_json_error(junk, 400, "invalid_grant")
    tokens = _exchange(back_channel, get_code(app.test_client(), REDIRECT))
    assert tokens.status_code == 200
    assert _refresh(back_channel, tokens.get_json()["refresh_token"]).status_code == 200


def _redeem_twice_at_once(app: Flask, code: str) -> list[TestResponse]:
    barrier = threading.Barrier(2)
    answers: list[TestResponse] = []

    def redeem() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(_exchange(client, code))

    threads = [threading.Thread(target=redeem) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_redemptions_of_one_code_leave_no_token_alive(app: Flask) -> None:
    """The second redemption must find the first one's refresh token to revoke it, every time."""
    browser = app.test_client()
    for _ in range(40):
        answers = _redeem_twice_at_once(app, get_code(browser, REDIRECT))
        assert sorted(answer.status_code for answer in answers) == [200, 400]
        (winner,) = [answer for answer in answers if answer.status_code == 200]
        _assert_json_error(_refresh(app.test_client(), winner.get_json()["refresh_token"]), 400, "invalid_grant")


# -- users deleted and sessions ended -----------------------------------------------------


def test_deleting_a_user_ends_their_browser_session(client: FlaskClient, app: Flask) -> None:
    log_in(client)
    assert _authorize(client).headers["Location"].startswith(REDIRECT + "?")
    app.extensions["issuer"].users.delete("alice")
    assert location_path(_authorize(client)) == "/login"


def test_a_new_user_with_a_deleted_users_name_inherits_no_session(client: FlaskClient, app: Flask) -> None:
    log_in(client)
    users = app.extensions["issuer"].users
    users.delete("alice")
    users.add("alice", "another-password", "profile")
    assert location_path(_authorize(client)) == "/login"


def test_issuer_logout_revokes_the_refresh_tokens_of_that_session(client: FlaskClient) -> None:
    tokens = _exchange(client, get_code(client, REDIRECT)).get_json()
    token = csrf_token(client.get("/logout").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 200
    _assert_json_error(_refresh(client, tokens["refresh_token"]), 400, "invalid_grant")


def test_issuer_logout_leaves_other_sessions_tokens_alone(app: Flask) -> None:
    mine, theirs = app.test_client(), app.test_client()
    kept = _exchange(theirs, get_code(theirs, REDIRECT)).get_json()["refresh_token"]
    log_in(mine)
    mine.post("/logout", data={"csrf_token": csrf_token(mine.get("/logout").get_data(as_text=True))})
    assert _refresh(app.test_client(), kept).status_code == 200


# -- /logout ------------------------------------------------------------------------------


def test_logout_page_when_logged_out_says_so_without_a_form(client: FlaskClient) -> None:
    response = client.get("/logout")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "You are not logged in." in html
    assert "<form" not in html


def test_logout_page_when_logged_in_asks_with_a_post_form(client: FlaskClient) -> None:
    log_in(client)
    response = client.get("/logout")
    html = response.get_data(as_text=True)
    assert "End your session at the issuer?" in html
    assert 'method="post" action="/logout"' in html
    assert csrf_token(html)


def test_get_logout_does_not_log_out(client: FlaskClient) -> None:
    log_in(client)
    client.get("/logout")
    assert _authorize(client).headers["Location"].startswith(REDIRECT + "?")


def test_logout_ends_the_session_at_the_issuer_not_only_in_the_cookie(client: FlaskClient) -> None:
    log_in(client)
    cookie = client.get_cookie("issuer_session")
    assert cookie is not None
    token = csrf_token(client.get("/logout").get_data(as_text=True))
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 200
    assert "You have been logged out." in response.get_data(as_text=True)
    assert location_path(_authorize(client)) == "/login"
    client.set_cookie("issuer_session", cookie.value)  # a copy of the cookie from before logging out
    assert location_path(_authorize(client)) == "/login"


def test_logout_post_without_csrf_token_is_refused(client: FlaskClient) -> None:
    log_in(client)
    _assert_error_page(client.post("/logout"), 400, "security token")
    assert _authorize(client).headers["Location"].startswith(REDIRECT + "?")


def test_revoking_the_refresh_token_of_a_browser_login_ends_the_login_session(client: FlaskClient) -> None:
    tokens = _exchange(client, get_code(client, REDIRECT)).get_json()
    assert _authorize(client).headers["Location"].startswith(REDIRECT + "?")
    assert (
        client.post("/revoke", data={"token": tokens["refresh_token"], "client_id": "resource-web"}).status_code == 200
    )
    assert location_path(_authorize(client)) == "/login"


def test_revoking_a_rotated_refresh_token_still_ends_the_login_session(client: FlaskClient) -> None:
    first = _exchange(client, get_code(client, REDIRECT)).get_json()["refresh_token"]
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first, "client_id": "resource-web"}
    )
    assert refreshed.status_code == 200
    client.post("/revoke", data={"token": refreshed.get_json()["refresh_token"], "client_id": "resource-web"})
    assert location_path(_authorize(client)) == "/login"


def test_revoking_a_password_grant_token_leaves_the_browser_logged_in(client: FlaskClient) -> None:
    log_in(client)
    tokens = client.post("/token", data={"grant_type": "password", "username": "alice", "password": "wonderland"})
    client.post("/revoke", data={"token": tokens.get_json()["refresh_token"], "client_id": "cli"})
    assert _authorize(client).headers["Location"].startswith(REDIRECT + "?")


# -- headers and cookies ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/logout", "/authorize?client_id=stranger"])
def test_html_pages_carry_the_security_headers(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in csp.split("; ")}
    assert directives["form-action"] == ["'self'", "http://rs.test"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["default-src"] == ["'none'"]
    if path == "/login":  # the passkey button's script file (issuer.passkeys), nothing inline
        assert directives["script-src"] == directives["connect-src"] == ["'self'"]
    else:
        assert "script-src" not in directives
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_session_cookie_is_httponly_and_samesite_lax(client: FlaskClient) -> None:
    cookie = _set_cookie(client.get("/login"), "issuer_session")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes


def test_session_cookie_is_secure_when_the_issuer_url_is_https(settings: IssuerSettings) -> None:
    https = create_app(dataclasses.replace(settings, url="https://issuer.test")).test_client()
    cookie = _set_cookie(https.get("/login", base_url="https://issuer.test"), "issuer_session")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert {"secure", "httponly", "samesite=lax"} <= set(attributes)


def test_redirect_back_to_the_client_uses_the_issuer_url_from_settings(settings: IssuerSettings) -> None:
    https = create_app(dataclasses.replace(settings, url="https://issuer.test")).test_client()
    response = https.get("/authorize", query_string=authorize_params(REDIRECT, response_type="token"))
    assert response.status_code == 302
    assert query(response)["iss"] == "https://issuer.test"


# -- metadata -----------------------------------------------------------------------------


def test_metadata_advertises_the_code_flow_with_s256_only(client: FlaskClient) -> None:
    document = client.get("/.well-known/oauth-authorization-server").get_json()
    assert document["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert "authorization_code" in document["grant_types_supported"]


def test_authorize_for_a_named_api_gives_a_code_for_that_api(app: Flask, client: FlaskClient) -> None:
    app.extensions["issuer"].apis.add("orders-api", "profile orders:read")
    tokens = _exchange(client, get_code(client, REDIRECT, resource="orders-api")).get_json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["aud"], claims["scope"]) == ("orders-api", "profile")


def test_authorize_for_an_api_named_by_its_resource_uri_gives_a_code_for_its_audience(
    app: Flask, client: FlaskClient
) -> None:
    app.extensions["issuer"].apis.add("orders-api", "profile orders:read", ["http://localhost:8002"])
    code = get_code(client, REDIRECT, resource="http://localhost:8002")
    assert rows(app.extensions["issuer"].database, "SELECT audience FROM authorization_codes") == [
        {"audience": "orders-api"}
    ]
    tokens = _exchange(client, code).get_json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["aud"], claims["scope"]) == ("orders-api", "profile")


def test_authorize_for_a_resource_uri_the_client_may_not_use_redirects_with_invalid_target(
    app: Flask, client: FlaskClient
) -> None:
    app.extensions["issuer"].apis.add("orders-api", "profile", ["http://localhost:8002"])
    app.extensions["issuer"].clients.replace(
        Client("partner", frozenset({"authorization_code"}), (REDIRECT,), audiences=frozenset({"jwt-split-api"})),
        allow_insecure_redirect=True,
    )
    log_in(client)
    response = _authorize(client, client_id="partner", resource="http://localhost:8002")
    assert query(response)["error"] == "invalid_target"


def test_authorize_for_an_unknown_api_redirects_with_invalid_target(client: FlaskClient) -> None:
    log_in(client)
    response = _authorize(client, resource="https://evil.example/")
    assert query(response)["error"] == "invalid_target"


def test_the_login_page_lets_its_form_end_at_the_asking_clients_origin(app: Flask, client: FlaskClient) -> None:
    app.extensions["issuer"].clients.add(
        Client("partner", frozenset({"authorization_code"}), ("https://partner.example/cb",))
    )
    response = client.get(
        "/authorize", query_string=authorize_params("https://partner.example/cb", client_id="partner")
    )
    assert location_path(response) == "/login"
    page_csp = client.get("/login").headers["Content-Security-Policy"]
    assert "form-action 'self' https://partner.example" in page_csp
    assert (
        "form-action 'self' https://partner.example"
        not in app.test_client().get("/login").headers["Content-Security-Policy"]
    )
