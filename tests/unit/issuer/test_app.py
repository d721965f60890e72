"""Unit tests for the issuer app through Flask's test client: token, revoke and discovery endpoints."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import socket
import stat
import threading
import time
import types
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from issuer import create_app
from issuer.clients import Client
from issuer.kek import KEK_FILE_NAME
from issuer.keys import KeyStore
from issuer.settings import IssuerSettings
from jwt_verifier.jose import load_verification_key
from jwt_verifier.verifier import Verifier
from shared.logs import JsonFormatter
from tests.support.browsing import VERIFIER, authorize_params, get_code, location_path
from tests.support.fakes import JwksServer
from tests.support.sql import rows
from tests.support.tokens import assertion_claims, jwks_json, kid_of, new_rsa_key, sign

DEMO_USERS = "alice:wonderland:profile admin;bob:builder:profile"


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return dataclasses.replace(issuer_settings, demo_users=DEMO_USERS, jwks_max_age=123)


def _token(client: FlaskClient, **form: str) -> TestResponse:
    return client.post("/token", data=form)


def _login(client: FlaskClient, username: str = "alice", password: str = "wonderland", **form: str) -> TestResponse:
    return _token(client, grant_type="password", username=username, password=password, **form)


def _assert_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"] == error
    assert body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    return body


def _refresh_token(response: TestResponse) -> str:
    value: str = response.get_json()["refresh_token"]
    return value


def _jwks_verifier(client: FlaskClient, settings: IssuerSettings) -> Verifier:
    keys = dict(load_verification_key(jwk) for jwk in client.get("/.well-known/jwks.json").get_json()["keys"])

    class Keys:
        def get(self, kid: str) -> Any:
            return keys[kid]

    return Verifier(Keys(), issuer=settings.url, audience=settings.audience)


# -- password grant -----------------------------------------------------------------------


def test_password_grant_issues_tokens_that_verify_against_the_jwks(
    client: FlaskClient, settings: IssuerSettings
) -> None:
    response = _login(client)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl
    assert body["scope"] == "admin profile"
    claims = _jwks_verifier(client, settings).verify(body["access_token"])
    assert (claims["preferred_username"], claims["scope"], claims["client_id"]) == ("alice", "admin profile", "cli")
    assert claims["sub"] == client.application.extensions["issuer"].users.get("alice").id  # the stable id
    assert claims["iss"] == "http://issuer.test"


def test_success_is_never_cached(client: FlaskClient) -> None:
    response = _login(client)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_access_token_is_signed_by_the_active_key(app: Flask, client: FlaskClient) -> None:
    token = _login(client).get_json()["access_token"]
    keys: KeyStore = app.extensions["issuer"].keys
    assert jwt.get_unverified_header(token)["kid"] == keys.signing_key().kid


def test_requested_scope_is_narrowed_to_what_the_user_may_have(client: FlaskClient) -> None:
    assert _login(client, scope="profile").get_json()["scope"] == "profile"
    assert _login(client, scope="profile billing").get_json()["scope"] == "profile"
    assert _login(client, username="bob", password="builder", scope="profile admin").get_json()["scope"] == "profile"


def test_scope_nobody_may_have_is_invalid_scope(client: FlaskClient) -> None:
    _assert_error(_login(client, username="bob", password="builder", scope="admin"), 400, "invalid_scope")


def test_malformed_scope_is_invalid_scope(client: FlaskClient) -> None:
    _assert_error(_login(client, scope='profile "admin"'), 400, "invalid_scope")


def test_wrong_password_is_invalid_grant(client: FlaskClient) -> None:
    body = _assert_error(_login(client, password="wrong-password"), 400, "invalid_grant")
    assert body["error_description"] == "the username or password is incorrect"


def test_unknown_user_is_invalid_grant_with_the_same_description(client: FlaskClient) -> None:
    body = _assert_error(_login(client, username="mallory"), 400, "invalid_grant")
    assert body["error_description"] == "the username or password is incorrect"


@pytest.mark.parametrize("missing", ["username", "password"])
def test_missing_credentials_are_invalid_request(client: FlaskClient, missing: str) -> None:
    form = {"grant_type": "password", "username": "alice", "password": "wonderland"}
    del form[missing]
    body = _assert_error(_token(client, **form), 400, "invalid_request")
    assert missing in body["error_description"]


def test_wrong_content_type_is_invalid_request(client: FlaskClient) -> None:
    response = client.post("/token", json={"grant_type": "password", "username": "alice", "password": "wonderland"})
    body = _assert_error(response, 400, "invalid_request")
    assert "application/x-www-form-urlencoded" in body["error_description"]


def test_duplicated_parameter_is_invalid_request(client: FlaskClient) -> None:
    response = client.post(
        "/token",
        data="grant_type=password&username=alice&username=bob&password=wonderland",
        content_type="application/x-www-form-urlencoded",
    )
    body = _assert_error(response, 400, "invalid_request")
    assert "'username' was sent more than once" in body["error_description"]


@pytest.mark.parametrize("path", ["/token", "/revoke"])
def test_a_repeated_parameter_is_named(client: FlaskClient, path: str) -> None:
    body = "grant_type=password&client_id=cli&token=a&token=b&username=alice&password=wonderland"
    response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
    description = _assert_error(response, 400, "invalid_request")["error_description"]
    assert "'token' was sent more than once" in description


@pytest.mark.parametrize("path", ["/token", "/revoke"])
def test_a_form_without_content_type_is_told_so(client: FlaskClient, path: str) -> None:
    environ = {"CONTENT_TYPE": ""}
    response = client.post(path, data=b"grant_type=password&client_id=cli&token=a", environ_overrides=environ)
    description = _assert_error(response, 400, "invalid_request")["error_description"]
    assert "no Content-Type" in description
    assert "application/x-www-form-urlencoded" in description


def test_missing_grant_type_is_invalid_request(client: FlaskClient) -> None:
    body = _assert_error(_token(client, username="alice", password="wonderland"), 400, "invalid_request")
    assert "grant_type" in body["error_description"]


def test_unsupported_grant_type(client: FlaskClient) -> None:
    _assert_error(
        _token(client, grant_type="urn:ietf:params:oauth:grant-type:saml2-bearer"), 400, "unsupported_grant_type"
    )


def test_unsupported_grant_type_description_is_truncated(client: FlaskClient) -> None:
    body = _assert_error(_token(client, grant_type="x" * 5000), 400, "unsupported_grant_type")
    assert len(body["error_description"]) < 200


def test_unknown_client_is_401_invalid_client(client: FlaskClient) -> None:
    response = _login(client, client_id="stranger")
    _assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")  # RFC 9110 section 15.5.2


def test_client_not_allowed_the_grant_is_unauthorized_client(app: Flask, client: FlaskClient) -> None:
    app.extensions["issuer"].clients.add(Client("login-only", frozenset({"password"})))
    _assert_error(
        _token(client, grant_type="refresh_token", refresh_token="x", client_id="login-only"),
        400,
        "unauthorized_client",
    )


def test_oversized_body_is_413_json(client: FlaskClient, settings: IssuerSettings) -> None:
    response = _login(client, padding="x" * (settings.max_body_bytes + 1))
    _assert_error(response, 413, "request_too_large")


def test_get_on_token_endpoint_is_405_json(client: FlaskClient) -> None:
    response = client.get("/token")
    _assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    _assert_error(client.get("/admin.php"), 404, "not_found")


# -- refresh grant ------------------------------------------------------------------------


def test_refresh_grant_rotates_the_refresh_token(client: FlaskClient, settings: IssuerSettings) -> None:
    first = _refresh_token(_login(client))
    response = _token(client, grant_type="refresh_token", refresh_token=first)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["refresh_token"] != first
    assert body["scope"] == "admin profile"
    assert _jwks_verifier(client, settings).verify(body["access_token"])["preferred_username"] == "alice"


def test_reused_refresh_token_is_invalid_grant_and_kills_its_successor(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _refresh_token(_login(client))
    second = _refresh_token(_token(client, grant_type="refresh_token", refresh_token=first))
    later = time.time() + 31  # past the reuse grace
    monkeypatch.setattr("issuer.tokens.time", types.SimpleNamespace(time=lambda: later))
    _assert_error(_token(client, grant_type="refresh_token", refresh_token=first), 400, "invalid_grant")
    body = _assert_error(_token(client, grant_type="refresh_token", refresh_token=second), 400, "invalid_grant")
    assert "revoked" in body["error_description"]


def test_a_retried_refresh_gets_the_same_refresh_token_and_logs_nobody_out(client: FlaskClient) -> None:
    first = _refresh_token(_login(client))
    answer = _token(client, grant_type="refresh_token", refresh_token=first)
    retry = _token(client, grant_type="refresh_token", refresh_token=first)  # the first answer was lost
    assert retry.status_code == 200
    assert _refresh_token(retry) == _refresh_token(answer)
    assert retry.get_json()["access_token"] != answer.get_json()["access_token"]
    assert _token(client, grant_type="refresh_token", refresh_token=_refresh_token(retry)).status_code == 200


def test_two_tabs_refreshing_at_once_both_succeed(app: Flask, client: FlaskClient) -> None:
    first = _refresh_token(_login(client))
    barrier = threading.Barrier(2)
    answers: list[TestResponse] = []

    def tab() -> None:
        own = app.test_client()
        barrier.wait()
        answers.append(_token(own, grant_type="refresh_token", refresh_token=first))

    tabs = [threading.Thread(target=tab) for _ in range(2)]
    for thread in tabs:
        thread.start()
    for thread in tabs:
        thread.join()
    assert [answer.status_code for answer in answers] == [200, 200]
    assert len({_refresh_token(answer) for answer in answers}) == 1


def test_refresh_can_narrow_but_never_widen_the_scope(client: FlaskClient) -> None:
    narrow = _login(client, scope="profile")
    token = _refresh_token(narrow)
    _assert_error(_token(client, grant_type="refresh_token", refresh_token=token, scope="admin"), 400, "invalid_scope")
    token = _refresh_token(_login(client))
    response = _token(client, grant_type="refresh_token", refresh_token=token, scope="profile")
    assert response.get_json()["scope"] == "profile"


def test_refresh_token_missing_is_invalid_request(client: FlaskClient) -> None:
    _assert_error(_token(client, grant_type="refresh_token"), 400, "invalid_request")


def test_unknown_refresh_token_is_invalid_grant(client: FlaskClient) -> None:
    _assert_error(_token(client, grant_type="refresh_token", refresh_token="made-up"), 400, "invalid_grant")


# -- revocation (RFC 7009) ----------------------------------------------------------------


def _revoke(client: FlaskClient, headers: dict[str, str] | None = None, **form: str) -> TestResponse:
    return client.post("/revoke", data=form, headers=headers)


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _refreshes(client: FlaskClient, token: str, **form: str) -> bool:
    return _token(client, grant_type="refresh_token", refresh_token=token, **form).status_code == 200


def test_revoke_ends_the_refresh_token(client: FlaskClient) -> None:
    token = _refresh_token(_login(client))
    response = _revoke(client, token=token, client_id="cli")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    _assert_error(_token(client, grant_type="refresh_token", refresh_token=token), 400, "invalid_grant")


def test_revoke_of_unknown_token_is_200(client: FlaskClient) -> None:
    assert _revoke(client, token="never-issued", client_id="cli").status_code == 200


def test_revoke_of_access_token_ends_it_and_its_refresh_family(client: FlaskClient) -> None:
    login = _login(client).get_json()
    response = _revoke(client, token=login["access_token"], client_id="cli")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    _assert_error(
        _token(client, grant_type="refresh_token", refresh_token=login["refresh_token"]), 400, "invalid_grant"
    )


def test_revoke_of_another_clients_access_token_changes_nothing(client: FlaskClient) -> None:
    login = _login(client).get_json()
    assert _revoke(client, token=login["access_token"], client_id="resource-web").status_code == 200
    assert _refreshes(client, login["refresh_token"])


def test_revoke_without_token_is_invalid_request(client: FlaskClient) -> None:
    _assert_error(_revoke(client, client_id="cli"), 400, "invalid_request")


def test_revoke_with_json_body_is_invalid_request(client: FlaskClient) -> None:
    _assert_error(client.post("/revoke", json={"token": "x"}), 400, "invalid_request")


PARTNER_SECRET = "partner-secret-" + "s" * 24


@pytest.fixture
def partner_token(app: Flask, client: FlaskClient) -> str:
    """A refresh token of `partner`, a confidential client (client_secret_basic) of the password grant."""
    clients = app.extensions["issuer"].clients
    clients.add(Client("partner", frozenset({"password", "refresh_token"})), secret=PARTNER_SECRET)
    clients.add(Client("other", frozenset({"password", "refresh_token"})), secret="other-secret-" + "o" * 24)
    response = client.post(
        "/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland"},
        headers=_basic("partner", PARTNER_SECRET),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return _refresh_token(response)


def _partner_refreshes(client: FlaskClient, token: str) -> bool:
    response = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=_basic("partner", PARTNER_SECRET),
    )
    return response.status_code == 200


def test_revoke_with_a_wrong_client_secret_is_invalid_client_and_revokes_nothing(
    client: FlaskClient, partner_token: str
) -> None:
    response = _revoke(client, _basic("partner", "wrong-secret-" + "w" * 24), token=partner_token)
    _assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert _partner_refreshes(client, partner_token)


def test_revoke_of_a_confidential_clients_token_naming_its_id_without_credentials_is_invalid_client(
    client: FlaskClient, partner_token: str
) -> None:
    _assert_error(_revoke(client, token=partner_token, client_id="partner"), 401, "invalid_client")
    assert _partner_refreshes(client, partner_token)


@pytest.mark.parametrize(
    "caller",
    [{"client_id": "cli"}, {"client_id": "resource-web"}, {"headers": "other"}],
    ids=["public-cli", "public-web", "confidential-other"],
)
def test_revoke_of_another_clients_token_answers_200_and_revokes_nothing(
    client: FlaskClient, partner_token: str, caller: dict[str, str]
) -> None:
    # RFC 7009 2.1: the token must have been issued to the caller; 2.2: an invalid token is no error.
    headers = _basic("other", "other-secret-" + "o" * 24) if "headers" in caller else None
    form = {name: value for name, value in caller.items() if name != "headers"}
    assert _revoke(client, headers, token=partner_token, **form).status_code == 200
    assert _partner_refreshes(client, partner_token)


def test_revoke_by_the_confidential_client_that_holds_the_token_ends_it(
    client: FlaskClient, partner_token: str
) -> None:
    assert _revoke(client, _basic("partner", PARTNER_SECRET), token=partner_token).status_code == 200
    assert not _partner_refreshes(client, partner_token)


def test_revoke_by_a_public_client_without_client_id_is_invalid_client(client: FlaskClient) -> None:
    # RFC 7009 2.1 and RFC 6749 2.3: a public client names itself; no default client is assumed.
    token = _refresh_token(_login(client))
    _assert_error(_revoke(client, token=token), 401, "invalid_client")
    assert _refreshes(client, token)


def test_revoke_by_an_unknown_client_is_invalid_client(client: FlaskClient) -> None:
    token = _refresh_token(_login(client))
    _assert_error(_revoke(client, token=token, client_id="stranger"), 401, "invalid_client")
    assert _refreshes(client, token)


def test_revoke_refuses_the_client_before_the_token_type(client: FlaskClient) -> None:
    access = _login(client).get_json()["access_token"]
    response = _revoke(client, token=access)
    _assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


REDIRECT = "http://rs.test/callback"


@pytest.fixture(params=["sqlite", "postgresql"])
def web_app(request: pytest.FixtureRequest, settings: IssuerSettings) -> Iterator[Flask]:
    """The issuer with the resource's web client, on SQLite, then on PostgreSQL."""
    settings = dataclasses.replace(settings, web_redirect_uris=(REDIRECT,))
    if request.param == "postgresql":
        settings = dataclasses.replace(
            settings,
            database_url=request.getfixturevalue("postgres_url"),
            key_encryption_key=(settings.data_dir / KEK_FILE_NAME).read_text().strip(),
            session_secret="S" * 48,
        )
    app = create_app(settings)
    yield app
    app.extensions["issuer"].database.dispose()


def _browser_login_tokens(browser: FlaskClient) -> str:
    """Run the code flow in a browser (logging alice in if needed); return the refresh token."""
    form = {
        "grant_type": "authorization_code",
        "code": get_code(browser, REDIRECT),
        "redirect_uri": REDIRECT,
        "client_id": "resource-web",
        "code_verifier": VERIFIER,
    }
    response = browser.post("/token", data=form)
    assert response.status_code == 200, response.get_data(as_text=True)
    return _refresh_token(response)


def test_revoking_one_token_of_a_login_session_ends_the_session_and_all_its_tokens(web_app: Flask) -> None:
    browser = web_app.test_client()
    first, second = _browser_login_tokens(browser), _browser_login_tokens(browser)  # one login, two families
    assert _revoke(browser, token=first, client_id="resource-web").status_code == 200
    for token in (first, second):
        _assert_error(_refreshes_as_web(browser, token), 400, "invalid_grant")
    assert location_path(browser.get("/authorize", query_string=authorize_params(REDIRECT))) == "/login"
    with web_app.app_context():
        tokens = rows(web_app.extensions["issuer"].database, "SELECT revoked_at FROM refresh_tokens")
    assert [row["revoked_at"] is not None for row in tokens] == [True, True]  # both families


def test_revoking_a_token_leaves_other_login_sessions_alone(web_app: Flask) -> None:
    mine, other = web_app.test_client(), web_app.test_client()
    my_token, other_token = _browser_login_tokens(mine), _browser_login_tokens(other)
    assert _revoke(mine, token=my_token, client_id="resource-web").status_code == 200
    assert _refreshes_as_web(other, other_token).status_code == 200
    assert location_path(other.get("/authorize", query_string=authorize_params(REDIRECT))) != "/login"


def _refreshes_as_web(client: FlaskClient, token: str) -> TestResponse:
    return _token(client, grant_type="refresh_token", refresh_token=token, client_id="resource-web")


# -- discovery ----------------------------------------------------------------------------


def test_jwks_publishes_public_keys_with_cache_control(client: FlaskClient, app: Flask) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=123"
    (jwk,) = response.get_json()["keys"]
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    assert jwk["kid"] == app.extensions["issuer"].keys.signing_key().kid


def test_jwks_shows_a_key_rotated_by_another_process_without_restart(
    client: FlaskClient, settings: IssuerSettings
) -> None:
    database = settings.database()
    staged = settings.key_store(database, settings.load_kek()).rotate()
    database.dispose()
    kids = [jwk["kid"] for jwk in client.get("/.well-known/jwks.json").get_json()["keys"]]
    assert staged.kid in kids
    assert len(kids) == 2


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_metadata_describes_the_endpoints(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    document = response.get_json()
    assert document["issuer"] == "http://issuer.test"
    assert document["jwks_uri"] == "http://issuer.test/.well-known/jwks.json"
    assert document["token_endpoint"] == "http://issuer.test/token"
    assert document["revocation_endpoint"] == "http://issuer.test/revoke"
    assert set(document["grant_types_supported"]) >= {"password", "refresh_token"}
    assert "public" in response.headers["Cache-Control"]


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


# -- start-up -----------------------------------------------------------------------------


def test_demo_users_are_seeded_once(settings: IssuerSettings) -> None:
    create_app(settings)
    second = create_app(settings).test_client()
    assert _login(second).status_code == 200
    assert _login(second, username="bob", password="builder").status_code == 200


def test_app_creates_its_first_key_in_an_empty_data_dir(settings: IssuerSettings) -> None:
    empty = dataclasses.replace(settings, data_dir=settings.data_dir.parent / "empty")
    app = create_app(empty)
    assert len(app.extensions["issuer"].keys.published()) == 1
    assert not empty.legacy_key_dir.exists()  # the private key is in the database, encrypted


def test_everything_in_the_data_directory_is_private(settings: IssuerSettings) -> None:
    app = create_app(settings)
    _login(app.test_client())
    for path in [settings.data_dir, *settings.data_dir.rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


@pytest.fixture
def log_lines(app: Flask) -> Iterator[io.StringIO]:
    """Every log line the app writes during the test, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("issuer"))
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_logs_never_hold_passwords_or_tokens(client: FlaskClient, log_lines: io.StringIO) -> None:
    body = _login(client).get_json()
    _login(client, password="not-the-password")
    _token(client, grant_type="refresh_token", refresh_token=body["refresh_token"])
    output = log_lines.getvalue()
    entries = [json.loads(line) for line in output.splitlines()]
    alice = client.application.extensions["issuer"].users.get("alice").id
    assert any(e.get("msg") == "issued access token" and e.get("sub") == alice for e in entries)  # the token's sub
    for secret in ("wonderland", "not-the-password", body["access_token"], body["refresh_token"]):
        assert secret not in output


def test_no_signing_key_is_a_503_with_retry_after_not_a_500(app: Flask, client: FlaskClient) -> None:
    with app.extensions["issuer"].database.transaction() as conn:
        conn.execute(text("UPDATE signing_keys SET state = 'retired'"))
    response = _login(client)
    body = _assert_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert body["error_description"] == "the issuer cannot sign tokens right now; try again shortly"


def test_a_loosened_session_secret_is_tightened_at_start(settings: IssuerSettings) -> None:
    create_app(settings)
    secret = settings.data_dir / "session-secret"
    secret.chmod(0o644)
    create_app(settings)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_replicas_sharing_a_database_agree_on_a_retried_refresh(settings: IssuerSettings) -> None:
    """Two issuers on one database, each with its own session secret (no shared data directory)."""
    one = create_app(dataclasses.replace(settings, session_secret="one-" + "s" * 40)).test_client()
    other = create_app(dataclasses.replace(settings, session_secret="other-" + "s" * 40)).test_client()
    first = _refresh_token(_login(one))
    answer = _token(one, grant_type="refresh_token", refresh_token=first)
    retry = _token(other, grant_type="refresh_token", refresh_token=first)
    assert retry.status_code == 200, retry.get_json()
    assert _refresh_token(retry) == _refresh_token(answer)


def test_logins_go_on_and_stay_limited_while_the_shared_counters_are_down(settings: IssuerSettings) -> None:
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}"
    client = create_app(
        dataclasses.replace(settings, rate_limit_storage=dead, login_rate_limit="2 per minute")
    ).test_client()
    assert _login(client).status_code == 200
    for _ in range(2):
        _assert_error(_login(client, password="wrong-password"), 400, "invalid_grant")
    _assert_error(_login(client), 429, "too_many_requests")


# -- APIs: RFC 8707 resource indicators ------------------------------------------------------


def _claims(response: TestResponse) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    return claims


@pytest.fixture
def orders_api(app: Flask) -> str:
    app.extensions["issuer"].apis.add("https://orders.example/api", "orders:read admin")
    return "https://orders.example/api"


def test_a_token_is_for_the_default_api_unless_another_is_named(client: FlaskClient) -> None:
    claims = _claims(_login(client))
    assert (claims["aud"], claims["scope"]) == ("jwt-split-api", "admin profile")


def test_a_token_for_a_named_api_carries_its_audience_and_only_its_scopes(client: FlaskClient, orders_api: str) -> None:
    claims = _claims(_login(client, resource=orders_api))
    assert (claims["aud"], claims["scope"]) == (orders_api, "admin")  # alice has no orders:read


def test_an_unknown_resource_is_invalid_target(client: FlaskClient) -> None:
    _assert_error(_login(client, resource="https://evil.example/"), 400, "invalid_target")


def test_a_refreshed_token_stays_for_the_api_it_was_granted_for(client: FlaskClient, orders_api: str) -> None:
    first = _login(client, resource=orders_api)
    refreshed = _token(client, grant_type="refresh_token", refresh_token=_refresh_token(first))
    assert _claims(refreshed)["aud"] == orders_api
    other = _token(
        client, grant_type="refresh_token", refresh_token=_refresh_token(refreshed), resource="jwt-split-api"
    )
    _assert_error(other, 400, "invalid_target")


@pytest.mark.parametrize(
    ("form", "error"),
    [({"resource": "https://evil.example/"}, "invalid_target"), ({"scope": "orders:write"}, "invalid_scope")],
)
def test_a_refused_refresh_leaves_its_token_usable(settings: IssuerSettings, form: dict[str, str], error: str) -> None:
    # No reuse grace: a refresh token spent by a refused request would revoke the session at the next one.
    client = create_app(dataclasses.replace(settings, refresh_reuse_grace=0)).test_client()
    token = _refresh_token(_login(client))
    _assert_error(_token(client, grant_type="refresh_token", refresh_token=token, **form), 400, error)
    assert _token(client, grant_type="refresh_token", refresh_token=token).status_code == 200


def test_a_client_limited_to_some_apis_gets_invalid_target_for_others(
    app: Flask, client: FlaskClient, orders_api: str
) -> None:
    limited = Client("orders-only", frozenset({"password"}), audiences=frozenset({orders_api}))
    app.extensions["issuer"].clients.add(limited)
    assert _claims(_login(client, client_id="orders-only", resource=orders_api))["aud"] == orders_api
    _assert_error(_login(client, client_id="orders-only"), 400, "invalid_target")


# -- resource URIs: a strict RFC 9728 client asks by the `resource` an API's metadata names -----

RESOURCE_URL = "http://localhost:8001"
ORDERS_URL = "http://localhost:8002"


@pytest.fixture
def aliased(settings: IssuerSettings) -> Flask:
    """An issuer whose default API is also `RESOURCE_URL` (the setting), with orders-api also `ORDERS_URL`."""
    app = create_app(dataclasses.replace(settings, audience_resource_uris=(RESOURCE_URL,)))
    app.extensions["issuer"].apis.add("orders-api", "orders:read admin", [ORDERS_URL])
    return app


def test_a_token_asked_for_by_a_resource_uri_carries_the_apis_audience(aliased: Flask) -> None:
    client = aliased.test_client()
    assert _claims(_login(client, resource=RESOURCE_URL))["aud"] == "jwt-split-api"
    assert _claims(_login(client, resource=ORDERS_URL))["aud"] == "orders-api"
    stored = rows(aliased.extensions["issuer"].database, "SELECT audience FROM refresh_tokens ORDER BY audience")
    assert stored == [{"audience": "jwt-split-api"}, {"audience": "orders-api"}]  # never the URI asked by


def test_a_refresh_may_name_its_api_by_a_resource_uri(aliased: Flask) -> None:
    client = aliased.test_client()
    first = _login(client, resource=ORDERS_URL)
    refreshed = _token(client, grant_type="refresh_token", refresh_token=_refresh_token(first), resource=ORDERS_URL)
    assert _claims(refreshed)["aud"] == "orders-api"
    other = _token(client, grant_type="refresh_token", refresh_token=_refresh_token(refreshed), resource=RESOURCE_URL)
    _assert_error(other, 400, "invalid_target")


@pytest.mark.parametrize("resource", ["http://localhost:8009", RESOURCE_URL + "/", "http://localhost:8001#x"])
def test_an_unregistered_resource_uri_is_invalid_target(aliased: Flask, resource: str) -> None:
    _assert_error(_login(aliased.test_client(), resource=resource), 400, "invalid_target")


def test_a_client_limited_to_some_apis_is_held_to_them_when_asking_by_resource_uri(aliased: Flask) -> None:
    aliased.extensions["issuer"].clients.add(
        Client("orders-only", frozenset({"password"}), audiences=frozenset({"orders-api"}))
    )
    client = aliased.test_client()
    assert _claims(_login(client, client_id="orders-only", resource=ORDERS_URL))["aud"] == "orders-api"
    _assert_error(_login(client, client_id="orders-only", resource=RESOURCE_URL), 400, "invalid_target")


def test_metadata_lists_client_credentials_and_the_client_authentication_methods(client: FlaskClient) -> None:
    document = client.get("/.well-known/oauth-authorization-server").get_json()
    assert "client_credentials" in document["grant_types_supported"]
    assert document["token_endpoint_auth_methods_supported"] == ["none", "private_key_jwt", "client_secret_basic"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS256"]


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_metadata_lists_the_client_authentication_methods_revocation_accepts(client: FlaskClient, path: str) -> None:
    # /revoke authenticates a confidential client as /token does (RFC 7009 section 2.1; RFC 8414 section 2).
    document = client.get(path).get_json()
    assert document["revocation_endpoint_auth_methods_supported"] == ["none", "private_key_jwt", "client_secret_basic"]
    assert document["revocation_endpoint_auth_signing_alg_values_supported"] == ["RS256"]


def test_a_public_client_may_not_use_client_credentials(client: FlaskClient) -> None:
    _assert_error(_token(client, grant_type="client_credentials", client_id="cli"), 400, "unauthorized_client")


def test_a_confidential_client_naming_itself_without_credentials_is_invalid_client(
    app: Flask, client: FlaskClient
) -> None:
    service = Client(
        "reports", frozenset({"client_credentials"}), auth_method="client_secret_basic", secret_hash="0" * 64
    )
    app.extensions["issuer"].clients.add(service)
    _assert_error(_token(client, grant_type="client_credentials", client_id="reports"), 401, "invalid_client")


# -- client_credentials: service-to-service tokens ---------------------------------------------


@pytest.fixture
def service_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture
def reports(app: Flask, orders_api: str, service_key: rsa.RSAPrivateKey) -> Client:
    """A service registered with private_key_jwt, allowed orders:read on the orders API."""
    client = Client(
        "reports",
        frozenset({"client_credentials"}),
        scopes=frozenset({"orders:read"}),
        audiences=frozenset({orders_api}),
        auth_method="private_key_jwt",
        jwks=jwks_json(service_key),
    )
    added: Client = app.extensions["issuer"].clients.add(client)
    return added


def _assertion(key: rsa.RSAPrivateKey, client_id: str = "reports", **overrides: Any) -> str:
    claims = assertion_claims(client_id, "http://issuer.test", **overrides)
    return sign(claims, key, kid=kid_of(key), typ=None)


def _client_credentials(client: FlaskClient, assertion: str, **form: str) -> TestResponse:
    return _token(
        client,
        grant_type="client_credentials",
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
        **form,
    )


def test_a_service_gets_its_own_token_with_private_key_jwt(
    client: FlaskClient, reports: Client, orders_api: str, service_key: rsa.RSAPrivateKey
) -> None:
    response = _client_credentials(client, _assertion(service_key), resource=orders_api)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert "refresh_token" not in body
    claims = _claims(response)
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["scope"]) == (
        "reports",
        "reports",
        orders_api,
        "orders:read",
    )


def test_a_replayed_assertion_is_invalid_client(
    client: FlaskClient, reports: Client, orders_api: str, service_key: rsa.RSAPrivateKey
) -> None:
    assertion = _assertion(service_key)
    assert _client_credentials(client, assertion, resource=orders_api).status_code == 200
    _assert_error(_client_credentials(client, assertion, resource=orders_api), 401, "invalid_client")


def test_client_authentication_failures_and_replays_are_in_the_audit_trail(
    client: FlaskClient,
    reports: Client,
    orders_api: str,
    service_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assertion = _assertion(service_key)
    forged = sign(assertion_claims("reports", "http://issuer.test"), new_rsa_key(), kid=kid_of(service_key), typ=None)
    assert _client_credentials(client, assertion, resource=orders_api).status_code == 200
    with caplog.at_level(logging.INFO, logger="jwt_split.audit"):
        _assert_error(_client_credentials(client, assertion, resource=orders_api), 401, "invalid_client")
        _assert_error(_client_credentials(client, forged, resource=orders_api), 401, "invalid_client")
        _assert_error(_token(client, grant_type="client_credentials", client_id="nobody"), 401, "invalid_client")
        _assert_error(_token(client, grant_type="client_credentials", client_id="reports"), 401, "invalid_client")
    lines = [getattr(record, "fields", {}) for record in caplog.records if record.name == "jwt_split.audit"]
    assert [(line["event"], line.get("client"), line.get("reason")) for line in lines] == [
        ("client.assertion_replayed", "reports", None),
        ("client.auth_failed", "reports", "bad_assertion"),
        ("client.auth_failed", None, "unknown_client"),
        ("client.auth_failed", "reports", "no_credentials"),
    ]
    assert all((line["source"], line["endpoint"]) == ("http", "oauth.token") for line in lines)
    assert assertion not in caplog.text
    assert forged.split(".")[2] not in caplog.text


def test_an_assertion_signed_by_another_key_is_invalid_client(
    client: FlaskClient, reports: Client, orders_api: str
) -> None:
    _assert_error(_client_credentials(client, _assertion(new_rsa_key()), resource=orders_api), 401, "invalid_client")


def test_a_deleted_client_is_invalid_client(
    app: Flask, client: FlaskClient, reports: Client, orders_api: str, service_key: rsa.RSAPrivateKey
) -> None:
    app.extensions["issuer"].clients.delete("reports")
    _assert_error(_client_credentials(client, _assertion(service_key), resource=orders_api), 401, "invalid_client")


def test_a_service_asking_for_an_api_it_may_not_use_is_invalid_target(
    client: FlaskClient, reports: Client, service_key: rsa.RSAPrivateKey
) -> None:
    _assert_error(_client_credentials(client, _assertion(service_key)), 400, "invalid_target")  # the default API


def test_a_service_asking_by_its_apis_resource_uri_gets_a_token_for_that_audience(
    app: Flask, client: FlaskClient, reports: Client, orders_api: str, service_key: rsa.RSAPrivateKey
) -> None:
    app.extensions["issuer"].apis.replace(orders_api, "orders:read admin", [ORDERS_URL])
    response = _client_credentials(client, _assertion(service_key), resource=ORDERS_URL)
    assert response.status_code == 200, response.get_json()
    assert _claims(response)["aud"] == orders_api


def test_a_service_gets_its_own_token_with_a_client_secret(app: Flask, client: FlaskClient, orders_api: str) -> None:
    secret = "a-long-random-client-secret-of-40-chars!"
    app.extensions["issuer"].clients.add(
        Client("batch", frozenset({"client_credentials"}), scopes=frozenset({"orders:read"})), secret=secret
    )
    basic = base64.b64encode(f"batch:{quote_plus(secret)}".encode()).decode()
    response = client.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": orders_api},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.get_json()
    assert _claims(response)["sub"] == "batch"
    wrong = base64.b64encode(b"batch:not-the-secret").decode()
    refused = client.post(
        "/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {wrong}"}
    )
    body = _assert_error(refused, 401, "invalid_client")
    assert body["error_description"] == "client authentication failed"
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="jwt-split"'


def test_a_service_registered_by_jwks_url_gets_its_own_token(
    app: Flask, client: FlaskClient, orders_api: str, service_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    jwks_server.serve_keys(service_key)
    app.extensions["issuer"].clients.add(
        Client(
            "reports",
            frozenset({"client_credentials"}),
            scopes=frozenset({"orders:read"}),
            auth_method="private_key_jwt",
            jwks_uri=jwks_server.url,
        )
    )
    response = _client_credentials(client, _assertion(service_key), resource=orders_api)
    assert (response.status_code, _claims(response)["sub"]) == (200, "reports")


@pytest.mark.parametrize(
    "header",
    ["Basic " + "\u00e9" * 50, "Basic \u00e9", "basic " + "x" * 10000, "Bearer \u00e9t\u00e9", "Basic ===="],
    ids=["non-ascii-basic", "one-non-ascii", "huge", "non-ascii-bearer", "padding-only"],
)
def test_a_malformed_authorization_header_is_invalid_client_not_a_500(client: FlaskClient, header: str) -> None:
    response = client.post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": header.encode().decode("latin-1")},
    )
    _assert_error(response, 401, "invalid_client")


def test_readyz_is_ready_while_the_database_answers(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_a_user_deleted_while_their_code_is_issued_gets_a_4xx_not_a_500(
    monkeypatch: pytest.MonkeyPatch, web_app: Flask
) -> None:
    # `users delete` committing between the session's user lookup and the code's insert: the
    # insert breaks the foreign key. It is a race with a change, answered as one (409), not a 500.
    browser = web_app.test_client()
    get_code(browser, REDIRECT)  # alice logged in, her session held by the browser
    codes = web_app.extensions["issuer"].authorization_codes
    issue = codes.issue

    def racing(*args: Any, **kwargs: Any) -> Any:
        web_app.extensions["issuer"].users.delete("alice")
        return issue(*args, **kwargs)

    monkeypatch.setattr(codes, "issue", racing)
    response = browser.get("/authorize", query_string=authorize_params(REDIRECT))
    assert response.status_code == 409, response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
