"""A grant made by a registration that changed meanwhile gets no token of what it no longer permits.

Each issuer worker reads the clients and the APIs through a cache (`ISSUER_REGISTRY_CACHE_TTL`,
issuer.cache): a change made by the CLI, another worker or a replica reaches it within that time.
A narrowing ends the tokens its grants hold in its transaction (issuer.narrowing), but a grant
made from a worker's older copy, after the change, holds what the old registration allowed: its
token must not be issued, whatever the cache holds. The change here is made by a store of the
test's own, as the CLI would: the app's cache keeps the old registration.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from issuer import extensions, statuslist
from issuer.apis import ApiStore
from issuer.clients import Client, ClientStore
from issuer.settings import IssuerSettings
from tests.support.tokens import assertion_claims, jwks_json, kid_of, new_rsa_key, sign

SERVICE = "svc"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUDIENCE = "jwt-split-api"  # the default API: scopes `profile admin`


@pytest.fixture
def settings(on_each_engine: IssuerSettings) -> IssuerSettings:
    return on_each_engine


@pytest.fixture
def key() -> Any:
    return new_rsa_key()


@pytest.fixture
def registered(app: Flask, key: Any) -> Client:
    """A service of the default API's two scopes, registered (and cached by the worker at its first grant)."""
    client = Client(
        SERVICE,
        frozenset({"client_credentials"}),
        scopes=frozenset({"profile", "admin"}),
        auth_method="private_key_jwt",
        jwks=jwks_json(key),
    )
    extensions.of(app).clients.add(client)
    return client


def _grant(client: FlaskClient, key: Any) -> Any:
    assertion = sign(assertion_claims(SERVICE, "http://issuer.test"), key, kid=kid_of(key), typ=None)
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION, "client_assertion": assertion}
    return client.post("/token", data=form)


def _scope(response: Any) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return set(jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})["scope"].split())


def _refused_or_narrowed(response: Any, *, removed: str) -> None:
    """The grant after the change: no token holding `removed` (a retry-later answer, or a token without it)."""
    if response.status_code == 200:
        assert removed not in _scope(response)
        return
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_client_narrowed_meanwhile_gets_no_token_of_the_scope_it_lost(
    app: Flask, client: FlaskClient, key: Any, registered: Client
) -> None:
    assert _scope(_grant(client, key)) == {"profile", "admin"}  # the worker caches the client
    ClientStore(extensions.of(app).database).replace(dataclasses.replace(registered, scopes=frozenset({"profile"})))
    _refused_or_narrowed(_grant(client, key), removed="admin")
    assert _scope(_grant(client, key)) == {"profile"}  # and the next one is what the registration says


def test_a_client_denied_the_api_meanwhile_gets_no_token_for_it(
    app: Flask, client: FlaskClient, key: Any, registered: Client
) -> None:
    _scope(_grant(client, key))
    other = ApiStore(extensions.of(app).database)
    other.add("other-api", "things:read")
    narrowed = dataclasses.replace(registered, scopes=None, audiences=frozenset({"other-api"}))
    ClientStore(extensions.of(app).database).replace(narrowed)
    answer = _grant(client, key)
    if answer.status_code == 200:
        claims = jwt.decode(answer.get_json()["access_token"], options={"verify_signature": False})
        assert claims["aud"] != AUDIENCE
    else:
        assert answer.status_code in {400, 503}, answer.get_data(as_text=True)


def test_an_api_narrowed_meanwhile_gets_no_token_of_the_scope_it_no_longer_defines(
    app: Flask, client: FlaskClient, key: Any, registered: Client
) -> None:
    assert _scope(_grant(client, key)) == {"profile", "admin"}  # the worker caches the API
    ApiStore(extensions.of(app).database).replace(AUDIENCE, "profile")
    _refused_or_narrowed(_grant(client, key), removed="admin")
    assert _scope(_grant(client, key)) == {"profile"}


def test_a_password_grant_by_a_client_narrowed_meanwhile_gets_no_token_of_the_scope_it_lost(
    app: Flask, client: FlaskClient
) -> None:
    public = Client("app", frozenset({"password", "refresh_token"}), scopes=frozenset({"profile", "admin"}))
    extensions.of(app).clients.add(public)
    login = {"grant_type": "password", "client_id": "app", "username": "alice", "password": "wonderland"}
    first = client.post("/token", data=login)
    assert "profile" in _scope(first)
    ClientStore(extensions.of(app).database).replace(dataclasses.replace(public, scopes=frozenset({"admin"})))
    _refused_or_narrowed(client.post("/token", data=login), removed="profile")


def test_an_unchanged_registration_stored_again_costs_no_grant_a_retry(
    app: Flask, client: FlaskClient, key: Any, registered: Client
) -> None:
    """Every start stores the built-in clients and the default API again: a worker serving meanwhile is not disturbed."""
    _scope(_grant(client, key))
    ClientStore(extensions.of(app).database).replace(registered)
    ApiStore(extensions.of(app).database).replace(AUDIENCE, "profile admin")
    assert _scope(_grant(client, key)) == {"profile", "admin"}


def _revoked(app: Flask, response: Any) -> bool:
    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    with app.app_context():
        return statuslist.current().revoked(claims)


def test_deleting_an_api_ends_the_tokens_issued_for_it(
    app: Flask, client: FlaskClient, key: Any, registered: Client
) -> None:
    """A token for an API deleted, then registered again under its name, must not open the new one."""
    apis = ApiStore(extensions.of(app).database)
    apis.add("orders-api", "orders:read")
    wider = dataclasses.replace(registered, scopes=frozenset({"profile", "orders:read"}))
    ClientStore(extensions.of(app).database).replace(wider)
    kept = _grant(client, key)  # the default API's: stays
    assert kept.status_code == 200, kept.get_data(as_text=True)
    extensions.of(app).clients.forget_cached()
    assertion = sign(assertion_claims(SERVICE, "http://issuer.test"), key, kid=kid_of(key), typ=None)
    ended = client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION,
            "client_assertion": assertion,
            "resource": "orders-api",
        },
    )
    assert ended.status_code == 200, ended.get_data(as_text=True)
    assert apis.delete("orders-api")
    assert _revoked(app, ended)
    assert not _revoked(app, kept)
