"""Unit tests for issuer.oidc through Flask's test client: ID tokens, /userinfo, discovery, scopes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from issuer import create_app, extensions
from issuer.kek import KEK_FILE_NAME
from issuer.settings import IssuerSettings
from issuer.users import User
from tests.support.browsing import DEMO_USERS, VERIFIER, authorize_params, csrf_token, get_code, log_in, query

ISSUER = "http://issuer.test"
REDIRECT = "http://rs.test/callback"
CLIENT_ID = "resource-web"
NONCE = "n-0S6_WzA2Mj"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, issuer_settings: IssuerSettings) -> IssuerSettings:
    """The issuer with the demo users and a web client, on SQLite, then on PostgreSQL."""
    settings = dataclasses.replace(issuer_settings, demo_users=DEMO_USERS, web_redirect_uris=(REDIRECT,))
    if request.param == "sqlite":
        return settings
    return dataclasses.replace(
        settings,
        database_url=request.getfixturevalue("postgres_url"),
        key_encryption_key=(issuer_settings.data_dir / KEK_FILE_NAME).read_text().strip(),
        session_secret="S" * 48,
    )


@pytest.fixture
def app(settings: IssuerSettings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    extensions.of(app).database.dispose()


def _tokens(client: FlaskClient, **overrides: str | None) -> dict[str, Any]:
    """Run the code flow as alice (scope `openid profile email` and a nonce unless overridden); return /token's answer."""
    params: dict[str, str | None] = {"scope": "openid profile email", "nonce": NONCE, **overrides}
    code = get_code(client, REDIRECT, **params)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "code_verifier": VERIFIER,
    }
    response = client.post("/token", data=form)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _jwks(client: FlaskClient) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").get_json())


def _id_claims(client: FlaskClient, id_token: str, **options: Any) -> dict[str, Any]:
    """Validate an ID token as a relying party does: signature by the JWKS key of its kid, iss, aud, exp."""
    header = jwt.get_unverified_header(id_token)
    key = _jwks(client)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        id_token,
        key.key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "auth_time"]},
        **options,
    )
    return claims


def _expected_at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _userinfo(client: FlaskClient, token: str, method: str = "GET") -> TestResponse:
    return client.open("/userinfo", method=method, headers={"Authorization": f"Bearer {token}"})


def _session_started(app: Flask) -> int:
    with extensions.of(app).database.reading() as conn:
        started: int = conn.exec_driver_sql("SELECT created_at FROM login_sessions").scalar_one()
    return started


# -- ID tokens ----------------------------------------------------------------------------


def test_the_code_flow_with_openid_gives_an_id_token_a_relying_party_accepts(client: FlaskClient, app: Flask) -> None:
    body = _tokens(client)
    header = jwt.get_unverified_header(body["id_token"])
    assert header["typ"] == "JWT"
    assert header["alg"] == "RS256"
    assert header["kid"] == jwt.get_unverified_header(body["access_token"])["kid"]
    claims = _id_claims(client, body["id_token"])
    assert claims["sub"] == "alice"
    assert claims["azp"] == CLIENT_ID
    assert claims["nonce"] == NONCE
    assert claims["at_hash"] == _expected_at_hash(body["access_token"])
    assert claims["auth_time"] == _session_started(app)
    assert claims["iat"] <= claims["exp"]
    assert set(body["scope"].split()) == {"openid", "profile", "email"}


def test_the_id_token_carries_the_profile_and_email_claims_its_scopes_give(client: FlaskClient) -> None:
    full = _id_claims(client, _tokens(client)["id_token"])
    assert (full["name"], full["preferred_username"], full["email"]) == ("Alice", "alice", "alice@example.com")
    bare = _id_claims(client, _tokens(client, scope="openid")["id_token"])
    assert not {"name", "preferred_username", "email", "email_verified"} & set(bare)


def test_the_sid_names_the_login_session_without_revealing_it(client: FlaskClient, app: Flask) -> None:
    first = _id_claims(client, _tokens(client)["id_token"])
    second = _id_claims(client, _tokens(client)["id_token"])  # the same browser, still logged in
    assert first["sid"] == second["sid"]
    with client.session_transaction() as session:
        session_id = session["sid"]
    with extensions.of(app).database.reading() as conn:
        session_hash = conn.exec_driver_sql("SELECT session_hash FROM login_sessions").scalar_one()
    assert first["sid"] not in {session_id, session_hash}
    assert first["sid"] not in session_hash
    client.post("/logout", data={"csrf_token": _csrf(client)})
    log_in(client)
    assert _id_claims(client, _tokens(client)["id_token"])["sid"] != first["sid"]


def _csrf(client: FlaskClient) -> str:
    return csrf_token(client.get("/logout").get_data(as_text=True))


def test_without_openid_there_is_no_id_token_and_no_identity_scope(client: FlaskClient) -> None:
    body = _tokens(client, scope="profile", nonce=None)
    assert "id_token" not in body
    assert body["scope"] == "profile"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == "jwt-split-api"


def test_a_request_without_scope_gets_the_api_scopes_only(client: FlaskClient) -> None:
    body = _tokens(client, scope=None, nonce=None)
    assert "id_token" not in body
    assert body["scope"] == "admin profile"


def test_identity_scopes_come_only_with_openid(client: FlaskClient) -> None:
    body = _tokens(client, scope="profile email", nonce=None)
    assert body["scope"] == "profile"  # `email` means nothing to the API and nothing without openid


def test_an_id_token_without_nonce_when_none_was_sent(client: FlaskClient) -> None:
    claims = _id_claims(client, _tokens(client, nonce=None)["id_token"])
    assert "nonce" not in claims


@pytest.mark.parametrize("nonce", ["x" * 256, "tab\there", "caf\u00e9"])
def test_a_malformed_nonce_goes_back_to_the_client_as_invalid_request(client: FlaskClient, nonce: str) -> None:
    log_in(client)
    response = client.get("/authorize", query_string=authorize_params(REDIRECT, scope="openid", nonce=nonce))
    assert response.status_code == 302
    params = query(response)
    assert params["error"] == "invalid_request"
    assert "code" not in params


def test_openid_does_not_widen_the_api_scopes_a_user_may_have(client: FlaskClient) -> None:
    log_in(client, "bob", "builder")  # bob may not have `admin`; `profile` is the default API's scope, and his
    body = _tokens(client, scope="openid profile admin email")
    assert set(body["scope"].split()) == {"openid", "profile", "email"}
    assert _id_claims(client, body["id_token"])["sub"] == "bob"


def test_a_refresh_of_an_openid_grant_gives_a_new_id_token_for_the_same_login(client: FlaskClient) -> None:
    first = _tokens(client)
    original = _id_claims(client, first["id_token"])
    response = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body["scope"].split()) == {"openid", "profile", "email"}
    claims = _id_claims(client, body["id_token"])
    for same in ("iss", "sub", "aud", "azp", "auth_time", "sid"):
        assert claims[same] == original[same]
    assert "nonce" not in claims  # OpenID Connect Core 1.0 section 12.2
    assert claims["at_hash"] == _expected_at_hash(body["access_token"])
    narrowed = client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": CLIENT_ID,
            "scope": "profile",
        },
    ).get_json()
    assert narrowed["scope"] == "profile"
    assert "id_token" not in narrowed


def test_the_password_grant_gives_no_id_token(client: FlaskClient) -> None:
    response = client.post(
        "/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland", "scope": "openid profile"},
    )
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["scope"] == "profile"
    assert "id_token" not in body


# -- /userinfo ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_gives_the_claims_of_the_granted_scopes(client: FlaskClient, method: str) -> None:
    body = _tokens(client)
    response = _userinfo(client, body["access_token"], method)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    info = response.get_json()
    assert info.pop("updated_at") > 0
    assert info == {
        "sub": "alice",
        "preferred_username": "alice",
        "name": "Alice",
        "email": "alice@example.com",
        "email_verified": False,
    }


def test_userinfo_gives_only_sub_for_openid_alone(client: FlaskClient) -> None:
    body = _tokens(client, scope="openid")
    assert _userinfo(client, body["access_token"]).get_json() == {"sub": "alice"}


def test_userinfo_gives_email_without_profile(client: FlaskClient) -> None:
    body = _tokens(client, scope="openid email")
    info = _userinfo(client, body["access_token"]).get_json()
    assert info == {"sub": "alice", "email": "alice@example.com", "email_verified": False}


def test_userinfo_shows_a_changed_name(client: FlaskClient, app: Flask) -> None:
    body = _tokens(client)
    with app.app_context():
        changed: User = extensions.current().users.update("alice", name="Alice Liddell")
    info = _userinfo(client, body["access_token"]).get_json()
    assert info["name"] == "Alice Liddell"
    assert info["updated_at"] == changed.updated_at


def test_userinfo_without_a_token_asks_for_one(client: FlaskClient) -> None:
    response = client.get("/userinfo")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "error=" not in response.headers["WWW-Authenticate"]


def test_userinfo_refuses_a_token_without_openid_as_not_meant_for_it(client: FlaskClient) -> None:
    # A token without openid is not for /userinfo at all: its audience is the API alone.
    body = _tokens(client, scope="profile", nonce=None)
    response = _userinfo(client, body["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_userinfo_refuses_an_id_token(client: FlaskClient) -> None:
    body = _tokens(client)
    response = _userinfo(client, body["id_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.get_json()["error"] == "invalid_token"
    assert response.get_json()["error_description"] == "the token type must be at+jwt"  # refused for its typ first


def test_userinfo_refuses_a_forged_token(client: FlaskClient) -> None:
    body = _tokens(client)
    head, payload, signature = body["access_token"].split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    response = _userinfo(client, forged)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_userinfo_refuses_the_token_of_a_deleted_user(client: FlaskClient, app: Flask) -> None:
    body = _tokens(client)
    with app.app_context():
        extensions.current().users.delete("alice")
    response = _userinfo(client, body["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# -- discovery ----------------------------------------------------------------------------


def test_openid_configuration_is_full_provider_metadata(client: FlaskClient) -> None:
    document = client.get("/.well-known/openid-configuration").get_json()
    assert document["issuer"] == ISSUER
    assert document["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert document["token_endpoint"] == f"{ISSUER}/token"
    assert document["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert document["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert {"openid", "profile", "email", "admin"} <= set(document["scopes_supported"])
    assert document["response_types_supported"] == ["code"]
    assert document["subject_types_supported"] == ["public"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"sub", "iss", "auth_time", "nonce", "at_hash", "name", "email", "email_verified"} <= set(
        document["claims_supported"]
    )
    assert "authorization_code" in document["grant_types_supported"]
    assert "none" in document["token_endpoint_auth_methods_supported"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "end_session_endpoint" not in document  # not until it exists


def test_the_oauth_metadata_stays_oauth_metadata(client: FlaskClient) -> None:
    oauth = client.get("/.well-known/oauth-authorization-server").get_json()
    openid = client.get("/.well-known/openid-configuration").get_json()
    assert "userinfo_endpoint" not in oauth
    assert "id_token_signing_alg_values_supported" not in oauth
    assert {name: openid[name] for name in oauth} == oauth


# -- users ------------------------------------------------------------------------------


def test_demo_users_get_a_name_and_an_address_at_example_com(app: Flask) -> None:
    with app.app_context():
        bob = extensions.current().users.get("bob")
    assert bob is not None
    assert (bob.name, bob.email, bob.email_verified) == ("Bob", "bob@example.com", False)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer a.b.c", 401),
        ("Bearer " + "A" * 20000, 401),
        ("Bearer \u00e9t\u00e9.x.y", 401),
        ("Bearer", 401),
        ("Basic YWxpY2U6d29uZGVybGFuZA==", 401),
    ],
)
def test_userinfo_answers_any_malformed_authorization_without_a_server_error(
    client: FlaskClient, authorization: str, status: int
) -> None:
    response = client.post("/userinfo", headers={"Authorization": authorization})
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
