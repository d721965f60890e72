"""Unit tests for OpenID Connect through Flask's test client: ID tokens, /userinfo, discovery, scopes,
RP-initiated logout, and `prompt`, `max_age`, `login_hint` at /authorize."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import time
from html import unescape
from typing import Any

import jwt
import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from issuer import extensions
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
from issuer.tokens import Authentication, Grant, mint_id_token
from issuer.users import User
from tests.support.browsing import (
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
LOGGED_OUT = "http://rs.test/logged-out"
CLIENT_ID = "resource-web"
NONCE = "n-0S6_WzA2Mj"


@pytest.fixture
def settings(on_each_engine: IssuerSettings) -> IssuerSettings:
    """The issuer with the demo users and a web client, on SQLite, then on PostgreSQL."""
    return dataclasses.replace(
        on_each_engine, web_redirect_uris=(REDIRECT,), web_post_logout_redirect_uris=(LOGGED_OUT,)
    )


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
    assert claims["sub"] == _user(app, "alice").id
    assert claims["azp"] == CLIENT_ID
    assert claims["nonce"] == NONCE
    assert claims["at_hash"] == _expected_at_hash(body["access_token"])
    assert claims["auth_time"] == _session_started(app)
    assert claims["iat"] <= claims["exp"]
    assert set(body["scope"].split()) == {"openid", "profile", "email"}


def _user(app: Flask, username: str) -> User:
    with app.app_context():
        user = extensions.current().users.get(username)
    assert user is not None
    return user


def test_the_sub_of_both_tokens_is_the_users_stable_id_and_the_name_is_preferred_username(
    client: FlaskClient, app: Flask
) -> None:
    # OpenID Connect Core 1.0 section 2 and RFC 9068 section 2.2: `sub` is never reassigned, so never the name.
    body = _tokens(client)
    alice = _user(app, "alice")
    access = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert _id_claims(client, body["id_token"])["sub"] == access["sub"] == alice.id != "alice"
    assert access["preferred_username"] == "alice"


def test_the_id_token_is_minimal_and_the_identity_claims_are_at_userinfo(client: FlaskClient) -> None:
    # OpenID Connect Core 1.0 section 5.4: with an access token issued, the scopes' claims come from /userinfo.
    body = _tokens(client)
    claims = _id_claims(client, body["id_token"])
    assert set(claims) == {
        *("iss", "sub", "aud", "exp", "iat", "auth_time", "acr", "amr", "azp", "sid", "at_hash", "nonce")
    }
    assert (claims["acr"], claims["amr"]) == ("single-factor", ["pwd"])  # a password login (RFC 8176)
    info = _userinfo(client, body["access_token"]).get_json()
    assert (info["name"], info["preferred_username"], info["email"]) == ("Alice", "alice", "alice@example.com")


def test_a_new_user_with_a_deleted_users_name_gets_another_sub_and_none_of_the_old_ones_tokens_reach_them(
    app: Flask,
) -> None:
    old_browser, new_browser = app.test_client(), app.test_client()
    old = _tokens(old_browser)
    old_sub = _id_claims(old_browser, old["id_token"])["sub"]
    with app.app_context():
        extensions.current().users.delete("alice")
        extensions.current().users.add("alice", "another-secret", "profile", name="Alice Two", email="two@example.com")
    # The first person's access token is still within its lifetime: it reads nobody's claims.
    response = _userinfo(old_browser, old["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # Their refresh token mints nothing for the newcomer.
    refused = _refresh(old_browser, old["refresh_token"])
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_grant")
    # The newcomer is someone else.
    log_in(new_browser, "alice", "another-secret")
    new = _tokens(new_browser)
    new_sub = _id_claims(new_browser, new["id_token"])["sub"]
    assert new_sub != old_sub
    assert _userinfo(new_browser, new["access_token"]).get_json()["sub"] == new_sub == _user(app, "alice").id


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


def test_openid_does_not_widen_the_api_scopes_a_user_may_have(client: FlaskClient, app: Flask) -> None:
    log_in(client, "bob", "builder")  # bob may not have `admin`; `profile` is the default API's scope, and his
    body = _tokens(client, scope="openid profile admin email")
    assert set(body["scope"].split()) == {"openid", "profile", "email"}
    assert _id_claims(client, body["id_token"])["sub"] == _user(app, "bob").id


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
def test_userinfo_gives_the_claims_of_the_granted_scopes(client: FlaskClient, app: Flask, method: str) -> None:
    body = _tokens(client)
    response = _userinfo(client, body["access_token"], method)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    info = response.get_json()
    assert info.pop("updated_at") > 0
    assert info == {
        "sub": _user(app, "alice").id,
        "preferred_username": "alice",
        "name": "Alice",
        "email": "alice@example.com",
        "email_verified": False,
    }


def test_userinfo_gives_only_sub_for_openid_alone(client: FlaskClient, app: Flask) -> None:
    body = _tokens(client, scope="openid")
    assert _userinfo(client, body["access_token"]).get_json() == {"sub": _user(app, "alice").id}


def test_userinfo_gives_email_without_profile(client: FlaskClient, app: Flask) -> None:
    body = _tokens(client, scope="openid email")
    info = _userinfo(client, body["access_token"]).get_json()
    assert info == {"sub": _user(app, "alice").id, "email": "alice@example.com", "email_verified": False}


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


def test_userinfo_refuses_a_revoked_access_token(client: FlaskClient) -> None:
    # RFC 7009 section 2: a revoked token is refused here as at the APIs (its status list index set).
    revoked, kept = _tokens(client), _tokens(client)
    form = {"token": revoked["access_token"], "token_type_hint": "access_token", "client_id": CLIENT_ID}
    assert client.post("/revoke", data=form).status_code == 200
    response = _userinfo(client, revoked["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "revoked" in response.headers["WWW-Authenticate"]
    assert _userinfo(client, kept["access_token"]).status_code == 200


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
    assert document["end_session_endpoint"] == f"{ISSUER}/logout"
    assert document["prompt_values_supported"] == ["none", "login", "consent"]


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


# -- RP-Initiated Logout 1.0 --------------------------------------------------------------


def _refresh(client: FlaskClient, refresh_token: str) -> TestResponse:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID}
    return client.post("/token", data=form)


def _logged_in(client: FlaskClient) -> bool:
    return "You are not logged in." not in client.get("/logout").get_data(as_text=True)


def _end_session(client: FlaskClient, method: str = "GET", **params: str) -> TestResponse:
    if method == "GET":
        return client.get("/logout", query_string=params)
    return client.post("/logout", data=params)


def _assert_error_page(response: TestResponse, text: str) -> None:
    """Check the user sees an error page (400) and is redirected nowhere."""
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "Location" not in response.headers
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html
    assert text in html


def _assert_sent_back(response: TestResponse, state: str | None = "af0ifjsldkj") -> None:
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].split("?")[0] == LOGGED_OUT
    assert query(response).get("state") == state if state else "?" not in response.headers["Location"]


def _confirm(client: FlaskClient, page: TestResponse) -> TestResponse:
    """Submit the confirmation form of an end-session page, hidden fields and all."""
    html = page.get_data(as_text=True)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))
    assert fields["csrf_token"] == csrf_token(html)
    return client.post("/logout", data={name: unescape(value) for name, value in fields.items()})


def _signed_id_token(
    app: Flask, *, now: int, sid: str, issuer: str = ISSUER, key: Any = None, username: str = "alice"
) -> str:
    """Sign an ID token for a user (alice) with the issuer's own key (or `key`), issued at `now`."""
    with app.app_context():
        user = extensions.current().users.get(username)
        signing = extensions.current().keys.signing_key()
    assert user is not None
    if key is not None:
        signing = dataclasses.replace(signing, private_key=key)
    grant = Grant(user.id, username, CLIENT_ID, "openid")
    token, _ = mint_id_token(
        signing, grant, Authentication(now, sid), issuer=issuer, access_token="at", ttl=60, now=now
    )
    return token


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_hint_for_the_browsers_session_logs_out_at_once_and_returns_with_state(
    client: FlaskClient, method: str
) -> None:
    body = _tokens(client)
    response = _end_session(
        client,
        method,
        id_token_hint=body["id_token"],
        post_logout_redirect_uri=LOGGED_OUT,
        state="af0ifjsldkj",
    )
    _assert_sent_back(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert not _logged_in(client)
    refused = _refresh(client, body["refresh_token"])
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_grant")


def test_the_session_ends_in_the_database_not_only_in_the_cookie(client: FlaskClient, app: Flask) -> None:
    body = _tokens(client)
    with client.session_transaction() as session:
        cookie = dict(session)
    _end_session(client, id_token_hint=body["id_token"])
    with client.session_transaction() as session:
        session.update(cookie)  # the old cookie, replayed
    assert not _logged_in(client)
    ended = rows(extensions.of(app).database, "SELECT ended_at FROM login_sessions")
    assert ended[0]["ended_at"] is not None


def test_without_a_redirect_uri_the_user_sees_that_they_logged_out(client: FlaskClient) -> None:
    body = _tokens(client)
    response = _end_session(client, id_token_hint=body["id_token"])
    assert response.status_code == 200
    assert "You have been logged out." in response.get_data(as_text=True)
    assert not _logged_in(client)


def test_the_redirect_has_no_state_when_none_was_sent(client: FlaskClient) -> None:
    body = _tokens(client)
    response = _end_session(client, id_token_hint=body["id_token"], post_logout_redirect_uri=LOGGED_OUT)
    assert response.status_code == 302
    assert response.headers["Location"] == LOGGED_OUT


def test_an_expired_hint_is_accepted(client: FlaskClient, app: Flask) -> None:
    sid = _id_claims(client, _tokens(client)["id_token"])["sid"]
    expired = _signed_id_token(app, now=int(time.time()) - 7200, sid=sid)
    with pytest.raises(jwt.ExpiredSignatureError):
        _id_claims(client, expired)
    response = _end_session(client, id_token_hint=expired, post_logout_redirect_uri=LOGGED_OUT, state="af0ifjsldkj")
    _assert_sent_back(response)
    assert not _logged_in(client)


@pytest.mark.parametrize(
    "hint",
    ["not-a-token", "a.b.c", "A" * 20000, "\u00e9t\u00e9.x.y", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."],
)
def test_a_malformed_hint_gets_an_error_page_never_a_redirect(client: FlaskClient, hint: str) -> None:
    log_in(client)
    response = _end_session(client, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT, state="s")
    _assert_error_page(response, "not valid")
    assert _logged_in(client)


def test_a_hint_signed_by_a_foreign_key_gets_an_error_page(client: FlaskClient, app: Flask, other_rsa_key: Any) -> None:
    sid = _id_claims(client, _tokens(client)["id_token"])["sid"]
    forged = _signed_id_token(app, now=int(time.time()), sid=sid, key=other_rsa_key)  # the real kid, another key
    response = _end_session(client, id_token_hint=forged, post_logout_redirect_uri=LOGGED_OUT)
    _assert_error_page(response, "not valid")
    assert _logged_in(client)


def test_a_hint_from_another_issuer_gets_an_error_page(client: FlaskClient, app: Flask) -> None:
    sid = _id_claims(client, _tokens(client)["id_token"])["sid"]
    foreign = _signed_id_token(app, now=int(time.time()), sid=sid, issuer="http://other.test")
    _assert_error_page(_end_session(client, id_token_hint=foreign), "not valid")
    assert _logged_in(client)


def test_an_access_token_is_no_hint(client: FlaskClient) -> None:
    body = _tokens(client)
    response = _end_session(client, id_token_hint=body["access_token"], post_logout_redirect_uri=LOGGED_OUT)
    _assert_error_page(response, "not valid")
    assert _logged_in(client)


def test_a_client_id_other_than_the_hints_audience_gets_an_error_page(client: FlaskClient) -> None:
    body = _tokens(client)
    response = _end_session(
        client, id_token_hint=body["id_token"], client_id="cli", post_logout_redirect_uri=LOGGED_OUT
    )
    _assert_error_page(response, "two different applications")
    assert _logged_in(client)


def test_a_matching_client_id_beside_the_hint_is_fine(client: FlaskClient) -> None:
    body = _tokens(client)
    response = _end_session(
        client, id_token_hint=body["id_token"], client_id=CLIENT_ID, post_logout_redirect_uri=LOGGED_OUT
    )
    assert response.status_code == 302


@pytest.mark.parametrize(
    "uri", ["http://evil.test/logged-out", LOGGED_OUT + "/", LOGGED_OUT + "?x=1", "http://rs.test", REDIRECT]
)
def test_an_unregistered_post_logout_redirect_uri_gets_an_error_page_never_a_redirect(
    client: FlaskClient, uri: str
) -> None:
    body = _tokens(client)
    _assert_error_page(
        _end_session(client, id_token_hint=body["id_token"], post_logout_redirect_uri=uri), "not registered"
    )
    _assert_error_page(_end_session(client, client_id=CLIENT_ID, post_logout_redirect_uri=uri), "not registered")
    assert _logged_in(client)


def test_a_post_logout_redirect_uri_without_a_client_gets_an_error_page(client: FlaskClient) -> None:
    log_in(client)
    _assert_error_page(_end_session(client, post_logout_redirect_uri=LOGGED_OUT, state="s"), "not registered")
    assert _logged_in(client)


def test_an_unknown_client_id_gets_an_error_page(client: FlaskClient) -> None:
    log_in(client)
    response = _end_session(client, client_id="stranger", post_logout_redirect_uri=LOGGED_OUT)
    _assert_error_page(response, "not registered with the issuer")


def test_without_a_hint_the_user_confirms_then_returns_with_state(client: FlaskClient) -> None:
    body = _tokens(client)
    asking = _end_session(client, client_id=CLIENT_ID, post_logout_redirect_uri=LOGGED_OUT, state="af0ifjsldkj")
    assert asking.status_code == 200
    assert "Log out?" in asking.get_data(as_text=True)
    assert "form-action 'self' http://rs.test" in asking.headers["Content-Security-Policy"]
    assert _logged_in(client)  # asking ends nothing
    _assert_sent_back(_confirm(client, asking))
    assert not _logged_in(client)
    assert _refresh(client, body["refresh_token"]).status_code == 400


def test_a_hint_for_another_session_asks_and_the_confirmation_ends_both(app: Flask) -> None:
    mine, other = app.test_client(), app.test_client()
    other_tokens = _tokens(other)
    my_tokens = _tokens(mine)
    asking = _end_session(
        mine, id_token_hint=other_tokens["id_token"], post_logout_redirect_uri=LOGGED_OUT, state="af0ifjsldkj"
    )
    assert asking.status_code == 200
    assert _logged_in(mine)
    assert _logged_in(other)
    _assert_sent_back(_confirm(mine, asking))
    assert not _logged_in(mine)
    assert not _logged_in(other)
    assert _refresh(mine, my_tokens["refresh_token"]).status_code == 400
    assert _refresh(other, other_tokens["refresh_token"]).status_code == 400


@pytest.mark.parametrize("expired", [False, True], ids=["fresh", "expired"])
@pytest.mark.parametrize("own_session", [True, False], ids=["logged-in", "logged-out"])
def test_someone_elses_hint_never_ends_their_session(app: Flask, expired: bool, own_session: bool) -> None:
    # RP-Initiated Logout 1.0 sections 2 and 6: a hint says whom the relying party means, but
    # anyone may hold someone's ID token; only the browser's own session says who is there.
    victim, stranger = app.test_client(), app.test_client()
    log_in(victim, "bob", "builder")
    victim_tokens = _tokens(victim)
    hint = victim_tokens["id_token"]
    if expired:
        sid = _id_claims(victim, hint)["sid"]
        hint = _signed_id_token(app, now=int(time.time()) - 7200, sid=sid, username="bob")
    if own_session:
        log_in(stranger)
    response = _end_session(stranger, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT, state="af0ifjsldkj")
    if response.status_code == 200:
        response = _confirm(stranger, response)  # whatever is asked, the stranger says yes
    _assert_sent_back(response)
    assert not _logged_in(stranger)
    assert _logged_in(victim)
    assert _refresh(victim, victim_tokens["refresh_token"]).status_code == 200


def test_a_confirmation_without_the_csrf_token_is_refused(client: FlaskClient) -> None:
    body = _tokens(client)
    response = client.post(
        "/logout", data={"client_id": CLIENT_ID, "post_logout_redirect_uri": LOGGED_OUT, "csrf_token": "forged"}
    )
    _assert_error_page(response, "security token")
    assert _refresh(client, body["refresh_token"]).status_code == 200


def test_a_tampered_confirmation_is_checked_again(client: FlaskClient) -> None:
    log_in(client)
    asking = _end_session(client, client_id=CLIENT_ID, post_logout_redirect_uri=LOGGED_OUT)
    token = csrf_token(asking.get_data(as_text=True))
    response = client.post(
        "/logout",
        data={"csrf_token": token, "client_id": CLIENT_ID, "post_logout_redirect_uri": "http://evil.test/"},
    )
    _assert_error_page(response, "not registered")


def test_with_nothing_to_end_the_browser_goes_straight_back(client: FlaskClient) -> None:
    response = _end_session(client, client_id=CLIENT_ID, post_logout_redirect_uri=LOGGED_OUT, state="af0ifjsldkj")
    _assert_sent_back(response)


def test_a_hint_for_an_ended_session_with_nothing_else_to_end_goes_straight_back(client: FlaskClient) -> None:
    body = _tokens(client)
    _end_session(client, id_token_hint=body["id_token"])
    response = _end_session(client, id_token_hint=body["id_token"], post_logout_redirect_uri=LOGGED_OUT)
    assert (response.status_code, response.headers["Location"]) == (302, LOGGED_OUT)


@pytest.mark.parametrize("name", ["id_token_hint", "post_logout_redirect_uri", "state"])
def test_a_repeated_end_session_parameter_gets_an_error_page(client: FlaskClient, name: str) -> None:
    body = _tokens(client)
    params = {"id_token_hint": body["id_token"], "post_logout_redirect_uri": LOGGED_OUT, "state": "s"}
    response = client.get("/logout", query_string=[*params.items(), (name, params[name])])
    _assert_error_page(response, "more than once")
    assert _logged_in(client)


# -- prompt, max_age, login_hint (OpenID Connect Core 1.0 section 3.1.2.1) ------------------


def _authorize(client: FlaskClient, **overrides: str | None) -> TestResponse:
    return client.get("/authorize", query_string=authorize_params(REDIRECT, scope="openid", **overrides))


def _assert_denied(response: TestResponse, error: str) -> None:
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].startswith(REDIRECT + "?")
    params = query(response)
    assert (params["error"], params["state"], params["iss"]) == (error, "state-123", ISSUER)
    assert "code" not in params


def _age_session(app: Flask, seconds: int) -> None:
    with extensions.of(app).database.transaction() as conn:
        conn.execute(text("UPDATE login_sessions SET created_at = created_at - :seconds"), {"seconds": seconds})


def test_prompt_none_without_a_session_answers_login_required(client: FlaskClient) -> None:
    _assert_denied(_authorize(client, prompt="none"), "login_required")


def test_prompt_none_with_a_session_issues_a_code(client: FlaskClient) -> None:
    log_in(client)
    response = _authorize(client, prompt="none")
    assert response.status_code == 302
    assert "code" in query(response)


@pytest.mark.parametrize("prompt", ["none login", "none consent", "select_account", "login bogus"])
def test_an_unusable_prompt_answers_invalid_request(client: FlaskClient, prompt: str) -> None:
    log_in(client)
    _assert_denied(_authorize(client, prompt=prompt), "invalid_request")


def test_prompt_consent_asks_nothing_of_a_logged_in_user(client: FlaskClient) -> None:
    log_in(client)
    assert "code" in query(_authorize(client, prompt="consent"))


def test_prompt_login_forces_a_new_login_once(client: FlaskClient, app: Flask) -> None:
    first = _id_claims(client, _tokens(client)["id_token"])
    response = _authorize(client, prompt="login", nonce=NONCE)
    assert (response.status_code, location_path(response)) == (302, "/login")
    form = client.get("/login")
    assert form.status_code == 200  # the form, not a redirect back to /authorize
    assert 'name="password"' in form.get_data(as_text=True)
    logged_in = log_in(client)
    assert logged_in.status_code == 303
    retried = client.get(logged_in.headers["Location"])  # the same request, prompt=login and all
    assert retried.status_code == 302, retried.get_data(as_text=True)
    code = query(retried)["code"]
    body = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": CLIENT_ID,
            "code_verifier": VERIFIER,
        },
    ).get_json()
    second = _id_claims(client, body["id_token"])
    assert second["sid"] != first["sid"]  # the new login replaced the session
    assert second["auth_time"] >= first["auth_time"]
    again = _authorize(client, prompt="login")  # another request with prompt=login asks again
    assert location_path(again) == "/login"


@pytest.mark.parametrize("max_age", ["-1", "abc", "1.5", "", "1" * 11, "\u0661"])
def test_a_malformed_max_age_answers_invalid_request(client: FlaskClient, max_age: str) -> None:
    log_in(client)
    _assert_denied(_authorize(client, max_age=max_age), "invalid_request")


def test_a_session_younger_than_max_age_issues_a_code(client: FlaskClient) -> None:
    log_in(client)
    assert "code" in query(_authorize(client, max_age="600"))


def test_a_session_older_than_max_age_forces_a_login_that_then_counts(client: FlaskClient, app: Flask) -> None:
    log_in(client)
    _age_session(app, 1000)
    response = _authorize(client, max_age="60")
    assert location_path(response) == "/login"
    logged_in = log_in(client)
    _age_session(app, 1000)  # even a slow browser: the login this request forced satisfies it
    retried = client.get(logged_in.headers["Location"])
    assert "code" in query(retried), retried.get_data(as_text=True)


def test_max_age_zero_logs_in_once_without_a_loop(client: FlaskClient, app: Flask) -> None:
    log_in(client)
    assert location_path(_authorize(client, max_age="0")) == "/login"
    logged_in = log_in(client)
    _age_session(app, 1)
    assert "code" in query(client.get(logged_in.headers["Location"]))


def test_prompt_none_with_a_session_older_than_max_age_answers_login_required(client: FlaskClient, app: Flask) -> None:
    log_in(client)
    _age_session(app, 1000)
    _assert_denied(_authorize(client, prompt="none", max_age="60"), "login_required")


def test_prompt_none_with_a_session_below_the_acr_values_answers_login_required(client: FlaskClient) -> None:
    log_in(client)  # a password: single-factor
    _assert_denied(_authorize(client, prompt="none", acr_values="multi-factor"), "login_required")
    assert "code" in query(_authorize(client, prompt="none", acr_values="single-factor"))
    assert "code" in query(_authorize(client, prompt="none", acr_values="urn:example:unknown"))  # voluntary: ignored


def test_max_age_and_acr_values_together_need_both_met(client: FlaskClient, app: Flask) -> None:
    log_in(client)  # a password: single-factor
    _age_session(app, 100)
    both = {"prompt": "none", "max_age": "600", "acr_values": "single-factor"}
    assert "code" in query(_authorize(client, **both))
    _assert_denied(_authorize(client, **{**both, "acr_values": "multi-factor"}), "login_required")  # young, below
    _assert_denied(_authorize(client, **{**both, "max_age": "60"}), "login_required")  # reached, old


@pytest.mark.parametrize("acr_values", ["multi-factor\x00", "x" * 256, "multi-factor\u00e9"])
def test_malformed_acr_values_answer_invalid_request(client: FlaskClient, acr_values: str) -> None:
    log_in(client)
    _assert_denied(_authorize(client, acr_values=acr_values), "invalid_request")


def test_login_hint_prefills_the_username(client: FlaskClient) -> None:
    response = _authorize(client, login_hint="bob")
    assert location_path(response) == "/login"
    assert 'value="bob"' in client.get("/login").get_data(as_text=True)


@pytest.mark.parametrize("hint", ['"><script>alert(1)</script>', "x" * 65, "tab\there"])
def test_a_hostile_login_hint_is_escaped_or_ignored(client: FlaskClient, hint: str) -> None:
    _authorize(client, login_hint=hint)
    html = client.get("/login").get_data(as_text=True)
    assert "<script>" not in html
    assert "x" * 65 not in html
    assert "tab\there" not in html


def test_a_login_that_failed_shows_what_was_typed_not_the_hint(client: FlaskClient) -> None:
    _authorize(client, login_hint="bob")
    token = csrf_token(client.get("/login").get_data(as_text=True))
    html = client.post("/login", data={"csrf_token": token, "username": "carol", "password": "x"}).get_data(
        as_text=True
    )
    assert 'value="carol"' in html


def test_a_logout_after_a_forced_login_revokes_the_refresh_tokens_of_the_login_it_replaced(client: FlaskClient) -> None:
    before = _tokens(client)  # a refresh token born of the first login session
    assert location_path(_authorize(client, prompt="login")) == "/login"
    logged_in = log_in(client)  # a second session replaces the first in this browser
    assert logged_in.status_code == 303
    assert "code" in query(client.get(logged_in.headers["Location"]))
    page = client.get("/logout")
    assert client.post("/logout", data={"csrf_token": csrf_token(page.get_data(as_text=True))}).status_code == 200
    assert not _logged_in(client)
    refused = _refresh(client, before["refresh_token"])
    assert (refused.status_code, refused.get_json().get("error")) == (400, "invalid_grant")


def test_a_second_login_by_the_same_user_keeps_the_refresh_tokens_of_the_first(client: FlaskClient) -> None:
    # A second tab, or an application asking prompt=login: the user is the same, so nothing they
    # hold is revoked. The tokens move to the new session, which a logout then ends with them.
    before = _tokens(client)
    assert location_path(_authorize(client, prompt="login")) == "/login"
    logged_in = log_in(client)
    assert logged_in.status_code == 303
    assert "code" in query(client.get(logged_in.headers["Location"]))
    kept = _refresh(client, before["refresh_token"])
    assert kept.status_code == 200, kept.get_json()
    page = client.get("/logout")
    assert client.post("/logout", data={"csrf_token": csrf_token(page.get_data(as_text=True))}).status_code == 200
    refused = _refresh(client, kept.get_json()["refresh_token"])
    assert (refused.status_code, refused.get_json().get("error")) == (400, "invalid_grant")


def test_a_login_by_another_user_ends_the_session_it_replaces(client: FlaskClient) -> None:
    before = _tokens(client)  # alice's
    assert location_path(_authorize(client, prompt="login")) == "/login"
    assert log_in(client, "bob", "builder").status_code == 303
    refused = _refresh(client, before["refresh_token"])
    assert (refused.status_code, refused.get_json().get("error")) == (400, "invalid_grant")


# -- request objects (OpenID Connect Core 1.0 section 6) ------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("request", "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9.", "request_not_supported"),
        ("request_uri", "https://client.example/request.jwt", "request_uri_not_supported"),
    ],
)
def test_a_request_object_goes_back_to_the_client_as_not_supported(
    client: FlaskClient, name: str, value: str, error: str
) -> None:
    log_in(client)
    _assert_denied(_authorize(client, **{name: value}), error)


def test_a_request_object_with_an_unregistered_redirect_is_an_error_page(client: FlaskClient) -> None:
    response = client.get(
        "/authorize",
        query_string=authorize_params("https://evil.example/cb", scope="openid", request="a.b."),
    )
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_a_refresh_says_what_its_familys_login_proved_after_a_stronger_login_in_the_same_browser(
    client: FlaskClient, app: Flask
) -> None:
    """OpenID Connect Core 1.0 section 12.2: a refreshed token's `auth_time` is the original login's.

    A step-up in the same browser replaces the session and moves its refresh families to the new
    one (a logout must end them): their tokens must not then claim the stronger login.
    """
    first = _tokens(client)
    before = _id_claims(client, first["id_token"])
    assert (before["acr"], before["amr"]) == ("single-factor", ["pwd"])
    factors = extensions.of(app).factors
    alice = extensions.of(app).users.get("alice")
    assert alice is not None
    totp = pyotp.TOTP(factors.start(alice.id))
    assert factors.confirm(alice.id, totp.now()) is not None
    time.sleep(1.1)  # the stronger login's auth_time is a later second

    response = client.get("/authorize", query_string=authorize_params(REDIRECT, prompt="login", nonce=NONCE))
    assert location_path(response) == "/login"
    response = log_in(client)
    assert location_path(response) == "/login/code"
    page = client.get("/login/code").get_data(as_text=True)
    response = client.post("/login/code", data={"csrf_token": csrf_token(page), "code": totp.at(time.time() + 30)})
    assert response.status_code == 303, response.get_data(as_text=True)
    stronger = _id_claims(client, _tokens(client)["id_token"])
    assert stronger["acr"] == "multi-factor"
    assert stronger["auth_time"] > before["auth_time"]

    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID}
    )
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    again = _id_claims(client, refreshed.get_json()["id_token"])
    assert (again["acr"], again["amr"], again["auth_time"]) == ("single-factor", ["pwd"], before["auth_time"])
    access = jwt.decode(refreshed.get_json()["access_token"], options={"verify_signature": False})
    assert (access["acr"], access["auth_time"]) == ("single-factor", before["auth_time"])


def test_a_code_whose_login_has_ended_since_gives_nothing(client: FlaskClient, app: Flask) -> None:
    """A code minted before a logout (or a factor's removal, `users reset-factors`) and redeemed after: refused.

    Its tokens would begin a family no later logout could end, with what the ended login proved.
    """
    code = get_code(client, REDIRECT, scope="openid profile", nonce=NONCE)
    alice = extensions.of(app).users.get("alice")
    assert alice is not None
    with extensions.of(app).database.transaction() as conn:
        ended, _ = LoginSessions.end_all_of_user(conn, alice.id)
    assert ended == 1
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "code_verifier": VERIFIER,
    }
    refused = client.post("/token", data=form)
    assert refused.status_code == 400, refused.get_data(as_text=True)
    assert refused.get_json() == {
        "error": "invalid_grant",
        "error_description": "the login this grant came from has ended",
    }
    assert rows(extensions.of(app).database, "SELECT COUNT(*) AS n FROM refresh_tokens")[0]["n"] == 0
