"""Unit tests for issuer.introspect: RFC 7662 token introspection for authenticated resources."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from flask import Flask
from flask.testing import FlaskClient

from issuer import create_app
from issuer.clients import Client
from issuer.keys import KeyStore
from issuer.settings import IntrospectionSettings, IssuerSettings
from issuer.tokens import Grant, mint_access_token
from jwt_verifier.jose import b64url_encode
from shared.settings import SettingsError
from tests.support.tokens import make_claims, new_rsa_key, sign

SECRET = "s" * 40
CLIENT_ID = "resource-api"
SERVICE = Client("batch", frozenset({"client_credentials"}), auth_method="client_secret_basic", secret_hash="0" * 64)


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return dataclasses.replace(issuer_settings, demo_users="alice:wonderland:profile admin;bob:builder:profile")


@pytest.fixture
def app(settings: IssuerSettings) -> Flask:
    app = create_app(settings)
    app.extensions["issuer.introspection"] = IntrospectionSettings(client_id=CLIENT_ID, secret=SECRET)
    return app


def _basic(client_id: str = CLIENT_ID, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _mint(app: Flask, username: str = "alice", **kwargs: Any) -> str:
    settings: IssuerSettings = app.extensions["issuer"].settings
    keys: KeyStore = app.extensions["issuer"].keys
    options: dict[str, Any] = {"issuer": settings.url, "audience": settings.audience, "ttl": 600, **kwargs}
    user = app.extensions["issuer"].users.get(username)
    token, _ = mint_access_token(keys.signing_key(), Grant(user.id, username, "cli", "profile"), **options)
    return token


def _mint_service(app: Flask, client_id: str) -> str:
    """Mint a client_credentials token: RFC 9068 section 2.2 makes the client its own subject."""
    settings: IssuerSettings = app.extensions["issuer"].settings
    keys: KeyStore = app.extensions["issuer"].keys
    grant = Grant("", client_id, client_id, "profile")
    token, _ = mint_access_token(keys.signing_key(), grant, issuer=settings.url, audience=settings.audience, ttl=600)
    return token


def _introspect(client: FlaskClient, token: str, headers: dict[str, str] | None = None) -> Any:
    return client.post("/introspect", data={"token": token}, headers=_basic() if headers is None else headers)


def _inactive(client: FlaskClient, token: str) -> None:
    response = _introspect(client, token)
    assert response.status_code == 200
    assert response.get_json() == {"active": False}  # nothing else, ever
    assert response.headers["Cache-Control"] == "no-store"


def test_a_repeated_token_is_named(client: FlaskClient) -> None:
    response = client.post("/introspect", data={"token": ["a", "b"]}, headers=_basic())
    assert response.status_code == 400
    assert response.get_json()["error_description"] == "parameter 'token' was sent more than once"


def test_a_form_without_content_type_is_told_so(client: FlaskClient) -> None:
    environ = {"CONTENT_TYPE": ""}
    response = client.post("/introspect", data=b"token=a", headers=_basic(), environ_overrides=environ)
    assert response.status_code == 400
    assert "no Content-Type" in response.get_json()["error_description"]


# -- active -------------------------------------------------------------------------------


def test_active_token_gets_active_true_and_its_claims(app: Flask, client: FlaskClient) -> None:
    response = _introspect(client, _mint(app))
    assert response.status_code == 200
    body = response.get_json()
    assert body["active"] is True
    assert body["sub"] == app.extensions["issuer"].users.get("alice").id  # the stable id, never the name
    assert body["username"] == "alice"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "profile"
    assert body["client_id"] == "cli"
    assert body["iss"] == "http://issuer.test"
    assert body["aud"] == "jwt-split-api"
    assert {"exp", "iat", "jti"} <= set(body)
    assert response.headers["Cache-Control"] == "no-store"


def test_token_hint_is_accepted_and_ignored(app: Flask, client: FlaskClient) -> None:
    response = client.post(
        "/introspect", data={"token": _mint(app), "token_type_hint": "refresh_token"}, headers=_basic()
    )
    assert response.get_json()["active"] is True


def test_a_service_token_is_active_and_names_its_client(app: Flask, client: FlaskClient) -> None:
    # RFC 7662 section 2.2: `active` says whether the token is valid; a client's own token has no user.
    app.extensions["issuer"].clients.add(SERVICE)
    response = _introspect(client, _mint_service(app, "batch"))
    body = response.get_json()
    assert (body["active"], body["sub"], body["client_id"], body["scope"]) == (True, "batch", "batch", "profile")
    assert "username" not in body


def test_a_service_token_of_a_deleted_client_is_inactive(app: Flask, client: FlaskClient) -> None:
    app.extensions["issuer"].clients.add(SERVICE)
    token = _mint_service(app, "batch")
    app.extensions["issuer"].clients.delete("batch")
    _inactive(client, token)


@pytest.mark.parametrize("sub", ["batch", "alice"])
def test_a_token_whose_sub_is_a_client_or_a_name_but_no_users_id_is_inactive(
    app: Flask, client: FlaskClient, sub: str
) -> None:
    # Signed by the issuer's key, but no token of its own is like this: a name is never looked up as a user.
    app.extensions["issuer"].clients.add(SERVICE)
    signing = app.extensions["issuer"].keys.signing_key()
    _inactive(client, sign(make_claims(issuer="http://issuer.test", sub=sub), signing.private_key, kid=signing.kid))


# -- inactive: no claims leak ---------------------------------------------------------------


def test_expired_token_is_inactive(app: Flask, client: FlaskClient) -> None:
    _inactive(client, _mint(app, now=int(time.time()) - 3600))


def test_token_signed_by_another_key_is_inactive(app: Flask, client: FlaskClient) -> None:
    kid = app.extensions["issuer"].keys.signing_key().kid
    _inactive(client, sign(make_claims(issuer="http://issuer.test"), new_rsa_key(), kid=kid))


def test_token_for_another_audience_is_inactive(app: Flask, client: FlaskClient) -> None:
    settings: IssuerSettings = app.extensions["issuer"].settings
    keys: KeyStore = app.extensions["issuer"].keys
    token, _ = mint_access_token(
        keys.signing_key(),
        Grant(app.extensions["issuer"].users.get("alice").id, "alice", "cli", "profile"),
        issuer=settings.url,
        audience="other-api",
        ttl=600,
    )
    _inactive(client, token)


def test_token_of_a_deleted_user_is_inactive(app: Flask, client: FlaskClient, settings: IssuerSettings) -> None:
    token = _mint(app, username="bob")
    assert _introspect(client, token).get_json()["active"] is True
    app.extensions["issuer"].users.delete("bob")
    _inactive(client, token)


def test_token_of_a_user_replaced_by_another_of_the_same_name_is_inactive(app: Flask, client: FlaskClient) -> None:
    token = _mint(app, username="bob")
    app.extensions["issuer"].users.delete("bob")
    app.extensions["issuer"].users.add("bob", "another-secret", "profile")
    _inactive(client, token)


def test_token_of_a_retired_key_is_inactive(app: Flask, client: FlaskClient) -> None:
    keys: KeyStore = app.extensions["issuer"].keys
    token = _mint(app)
    old = keys.signing_key().kid
    keys.rotate(now=True)
    assert _introspect(client, token).get_json()["active"] is True  # retiring: still published
    keys.retire(old)
    _inactive(client, token)


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "", "x" * 9000, "caf\u00e9.caf\u00e9.caf\u00e9", "eyJhbGciOiJub25lIn0.e30."],
)
def test_garbage_is_inactive_never_an_error(client: FlaskClient, token: str) -> None:
    if token == "":
        assert _introspect(client, token).status_code == 400
    else:
        _inactive(client, token)


def test_alg_none_and_missing_typ_are_inactive(app: Flask, client: FlaskClient) -> None:
    token = _mint(app)
    payload = token.split(".")[1]
    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    _inactive(client, f"{none}.{payload}.")


# -- who may ask ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _basic(secret="s" * 39),
        _basic(secret=SECRET + "x"),
        _basic(client_id="resource-web"),
        {"Authorization": f"Bearer {SECRET}"},
    ],
)
def test_callers_without_the_client_credential_get_401(
    app: Flask, client: FlaskClient, headers: dict[str, str]
) -> None:
    response = _introspect(client, _mint(app), headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "sub" not in response.get_data(as_text=True)


def test_url_encoded_credentials_are_accepted(app: Flask, client: FlaskClient) -> None:
    secret = "a secret/with:odd chars" + "x" * 20
    app.extensions["issuer.introspection"] = IntrospectionSettings(client_id=CLIENT_ID, secret=secret)
    encoded = "a%20secret%2Fwith%3Aodd%20chars" + "x" * 20
    assert _introspect(client, _mint(app), headers=_basic(secret=encoded)).get_json()["active"] is True


def test_endpoint_is_off_without_a_secret(app: Flask, client: FlaskClient) -> None:
    app.extensions["issuer.introspection"] = IntrospectionSettings()
    response = _introspect(client, _mint(app), headers=_basic(secret=""))
    assert response.status_code == 404


def test_parameters_must_be_a_form_with_one_token(app: Flask, client: FlaskClient) -> None:
    assert client.post("/introspect", json={"token": _mint(app)}, headers=_basic()).status_code == 400
    twice = client.post("/introspect", data={"token": [_mint(app), _mint(app)]}, headers=_basic())
    assert twice.status_code == 400
    assert client.post("/introspect", data={}, headers=_basic()).status_code == 400


def test_get_is_not_allowed(client: FlaskClient) -> None:
    assert client.get("/introspect", headers=_basic()).status_code == 405


# -- settings -------------------------------------------------------------------------------


def test_settings_come_with_the_issuer_settings() -> None:
    settings = IssuerSettings.from_env({"ISSUER_INTROSPECTION_SECRET": SECRET})
    assert settings.introspection == IntrospectionSettings(secret=SECRET)
    assert not IssuerSettings.from_env({}).introspection.enabled


def test_settings_from_env() -> None:
    settings = IntrospectionSettings.from_env(
        {"ISSUER_INTROSPECTION_SECRET": SECRET, "ISSUER_INTROSPECTION_CLIENT_ID": "api-1"}
    )
    assert settings == IntrospectionSettings(client_id="api-1", secret=SECRET)
    assert settings.enabled
    assert not IntrospectionSettings.from_env({}).enabled


def test_short_secret_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="ISSUER_INTROSPECTION_SECRET"):
        IntrospectionSettings.from_env({"ISSUER_INTROSPECTION_SECRET": "short"})


@pytest.mark.parametrize(
    "payload_tail",
    ['"sub": "root"}', '"exp": "9999999999"}', '"exp": 9999999999}'],
    ids=["duplicate member", "exp as a string", "lifetime over a day"],
)
def test_introspection_refuses_what_the_resource_refuses(app: Flask, client: FlaskClient, payload_tail: str) -> None:
    """Both designs judge tokens by one policy (jwt_verifier.verifier): no answer drifts apart."""
    signing = app.extensions["issuer"].keys.signing_key()
    settings: IssuerSettings = app.extensions["issuer"].settings
    claims = {k: v for k, v in make_claims(issuer=settings.url).items() if k != "exp" or "exp" not in payload_tail}
    header = b64url_encode(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": signing.kid}).encode())
    payload = b64url_encode((json.dumps(claims)[:-1] + ", " + payload_tail).encode())
    signature = signing.private_key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    _inactive(client, f"{header}.{payload}.{b64url_encode(signature)}")


def test_a_non_ascii_basic_header_is_invalid_client_not_a_500(client: FlaskClient) -> None:
    header = ("Basic " + "\u00e9" * 40).encode().decode("latin-1")
    response = client.post("/introspect", data={"token": "x"}, headers={"Authorization": header})
    assert (response.status_code, response.get_json()["error"]) == (401, "invalid_client")
