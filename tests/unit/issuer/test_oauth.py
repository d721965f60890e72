"""Unit tests for issuer.oauth: which token, for which API and scope, after which registration change.

Every test runs on embedded SQLite and on PostgreSQL: the checks read the registrations as
they are now, from whichever database holds them.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from issuer import extensions
from issuer.clients import Client
from issuer.settings import IssuerSettings
from tests.support.browsing import (
    VERIFIER,
    WEB_REDIRECT_URI,
    authorize_params,
    follow_authorization,
    get_code,
    log_in,
    query,
)
from tests.support.dpop import make_proof
from tests.support.tokens import assertion_claims, jwks_json, kid_of, new_rsa_key, sign

ORDERS = "orders-api"
ORDERS_URL = "http://localhost:8002"
APP = "app"  # a public client allowed the password and refresh grants, with no limits of its own


@pytest.fixture
def settings(on_each_engine: IssuerSettings) -> IssuerSettings:
    return on_each_engine


@pytest.fixture
def app(app: Flask) -> Flask:
    """The conftest's app, with a public client of the password and refresh grants."""
    extensions.of(app).apis.add(ORDERS, "orders:read", [ORDERS_URL])
    extensions.of(app).clients.add(Client(APP, frozenset({"password", "refresh_token"})))
    return app


def _token(client: FlaskClient, **form: str) -> TestResponse:
    return client.post("/token", data=form)


def _login(client: FlaskClient, username: str = "alice", password: str = "wonderland", **form: str) -> TestResponse:
    form = {"client_id": APP, **form}
    return _token(client, grant_type="password", username=username, password=password, **form)


def _refresh(client: FlaskClient, response: TestResponse, **form: str) -> TestResponse:
    assert response.status_code == 200, response.get_data(as_text=True)
    return _token(
        client, grant_type="refresh_token", client_id=APP, refresh_token=response.get_json()["refresh_token"], **form
    )


def _error(response: TestResponse, status: int, error: str) -> str:
    body: dict[str, Any] = response.get_json()
    assert response.status_code == status, f"{response.status_code}, scope {body.get('scope')!r}"
    assert body["error"] == error, body
    description: str = body["error_description"]
    return description


def _claims(response: TestResponse) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    claims: dict[str, Any] = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    return claims


# -- item: an empty grant for the chosen API is refused (RFC 6749 3.3, RFC 9700 2.3) ------------


def test_a_password_grant_for_an_api_the_user_has_no_scope_of_is_invalid_scope(client: FlaskClient) -> None:
    assert "orders-api" in _error(_login(client, resource=ORDERS), 400, "invalid_scope")  # alice has no orders:read
    _error(_login(client, resource=ORDERS, scope="profile"), 400, "invalid_scope")


def test_an_empty_scope_parameter_is_refused_not_an_empty_token(client: FlaskClient) -> None:
    _error(_login(client, scope=""), 400, "invalid_scope")


def test_a_client_limited_to_scopes_the_api_lacks_gets_no_token_for_it(app: Flask, client: FlaskClient) -> None:
    extensions.of(app).clients.add(Client("orders-reader", frozenset({"password"}), scopes=frozenset({"x"})))
    _error(_login(client, client_id="orders-reader"), 400, "invalid_scope")


def test_a_service_with_no_scope_of_the_api_gets_no_token_for_it(app: Flask, client: FlaskClient) -> None:
    key = new_rsa_key()
    service = Client(
        "svc", frozenset({"client_credentials"}), scopes=frozenset({"profile"}), auth_method="private_key_jwt"
    )
    extensions.of(app).clients.add(dataclasses.replace(service, jwks=jwks_json(key)))
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }

    def ask(**extra: str) -> TestResponse:
        assertion = sign(assertion_claims("svc", "http://issuer.test"), key, kid=kid_of(key), typ=None)
        return _token(client, **form, client_assertion=assertion, **extra)

    assert _claims(ask())["scope"] == "profile"  # the default API: it has profile
    _error(ask(resource=ORDERS), 400, "invalid_scope")


def test_authorize_for_an_api_the_user_has_no_scope_of_redirects_with_invalid_scope(client: FlaskClient) -> None:
    log_in(client, "bob", "builder")
    response = client.get(
        "/authorize", query_string=authorize_params(WEB_REDIRECT_URI, resource=ORDERS, scope=None, state="s")
    )
    assert response.status_code == 302
    assert query(response)["error"] == "invalid_scope"
    assert "code" not in query(response)


def test_an_openid_login_without_scopes_of_the_api_still_gets_its_userinfo_token(client: FlaskClient) -> None:
    code = get_code(client, WEB_REDIRECT_URI, scope="openid", nonce="n-1", resource=ORDERS)
    claims = _claims(_exchange(client, code))
    assert claims["scope"] == "openid"
    # The token is for /userinfo alone: it names no API the user has nothing at.
    assert claims["aud"] == "http://issuer.test/userinfo"


# -- item: a refresh grants at most what the client, the user and the API allow now ----------------


def test_a_narrowed_client_refreshes_only_to_its_new_scopes(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    assert _claims(first)["scope"] == "admin profile"
    extensions.of(app).clients.replace(
        Client(APP, frozenset({"password", "refresh_token"}), scopes=frozenset({"profile"}))
    )
    assert _claims(_refresh(client, first))["scope"] == "profile"


def test_a_client_moved_to_another_api_may_not_refresh_for_the_old_one(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    extensions.of(app).clients.replace(
        Client(
            APP, frozenset({"password", "refresh_token"}), scopes=frozenset({"profile"}), audiences=frozenset({ORDERS})
        )
    )
    assert "no longer" in _error(_refresh(client, first), 400, "invalid_grant")


def test_a_client_left_no_scope_of_the_api_may_not_refresh(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    extensions.of(app).clients.replace(
        Client(APP, frozenset({"password", "refresh_token"}), scopes=frozenset({"orders:read"}))
    )
    _error(_refresh(client, first), 400, "invalid_grant")


def test_a_narrowed_user_refreshes_only_to_their_new_scopes(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    extensions.of(app).users.update("alice", scope="profile")
    assert _claims(_refresh(client, first))["scope"] == "profile"


def test_a_user_left_no_scope_of_the_api_may_not_refresh(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    extensions.of(app).users.update("alice", scope="orders:read")
    _error(_refresh(client, first), 400, "invalid_grant")


def test_an_api_whose_scopes_changed_refreshes_only_to_the_remaining_ones(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    apis = extensions.of(app).apis
    apis.replace("jwt-split-api", "profile")
    second = _refresh(client, first)
    assert _claims(second)["scope"] == "profile"
    apis.replace("jwt-split-api", "other")
    _error(_refresh(client, second), 400, "invalid_grant")


def test_a_refused_refresh_does_not_spend_the_token(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    extensions.of(app).users.update("alice", scope="orders:read")
    _error(_refresh(client, first), 400, "invalid_grant")
    extensions.of(app).users.update("alice", scope="profile")
    assert _claims(_refresh(client, first))["scope"] == "profile"


# -- item: `resource` at the code exchange must be the authorization request's (RFC 8707 2.2) ----


def _exchange(client: FlaskClient, code: str, **form: str) -> TestResponse:
    return _token(
        client,
        grant_type="authorization_code",
        client_id="resource-web",
        code=code,
        redirect_uri=WEB_REDIRECT_URI,
        code_verifier=VERIFIER,
        **form,
    )


def test_a_code_exchanged_for_another_api_is_invalid_target(client: FlaskClient) -> None:
    code = get_code(client, WEB_REDIRECT_URI, scope="profile admin")  # for the default API
    _error(_exchange(client, code, resource=ORDERS), 400, "invalid_target")
    # Refused before it was spent: the rightful exchange still works.
    assert _claims(_exchange(client, code))["aud"] == "jwt-split-api"


@pytest.mark.parametrize("resource", ["jwt-split-api", None])
def test_a_code_exchanged_for_its_own_api_or_without_resource_gets_its_token(
    client: FlaskClient, resource: str | None
) -> None:
    code = get_code(client, WEB_REDIRECT_URI)
    extra = {} if resource is None else {"resource": resource}
    assert _claims(_exchange(client, code, **extra))["aud"] == "jwt-split-api"


def test_a_code_may_name_its_api_by_a_resource_uri_at_the_exchange(app: Flask, client: FlaskClient) -> None:
    extensions.of(app).users.update("alice", scope="profile admin orders:read")
    url = "/authorize?" + urlencode(authorize_params(WEB_REDIRECT_URI, scope="orders:read", resource=ORDERS))
    code = query(follow_authorization(client, url))["code"]
    assert _claims(_exchange(client, code, resource=ORDERS_URL))["aud"] == ORDERS


# -- item: the code exchange grants at most what the client, the user and the API allow now --------

WEB = "web"  # a public browser client of our own: the built-in `resource-web` cannot be replaced
WEB_GRANTS = frozenset({"authorization_code", "refresh_token"})


@pytest.fixture
def web(app: Flask) -> Client:
    registered = Client(WEB, WEB_GRANTS, redirect_uris=(WEB_REDIRECT_URI,))
    extensions.of(app).clients.add(registered)
    return registered


def _web_exchange(client: FlaskClient, code: str) -> TestResponse:
    form = {"client_id": WEB, "code": code, "redirect_uri": WEB_REDIRECT_URI, "code_verifier": VERIFIER}
    return _token(client, grant_type="authorization_code", **form)


def _web_code(client: FlaskClient) -> str:
    return get_code(client, WEB_REDIRECT_URI, client_id=WEB, scope="profile admin")


def test_a_code_exchanged_after_the_client_was_narrowed_gets_only_its_new_scopes(
    app: Flask, client: FlaskClient, web: Client
) -> None:
    code = _web_code(client)
    extensions.of(app).clients.replace(dataclasses.replace(web, scopes=frozenset({"profile"})))
    exchanged = _web_exchange(client, code)
    assert _claims(exchanged)["scope"] == "profile"
    # The refresh token holds the narrowed grant too.
    refreshed = _token(
        client, grant_type="refresh_token", client_id=WEB, refresh_token=exchanged.get_json()["refresh_token"]
    )
    assert _claims(refreshed)["scope"] == "profile"


def test_a_code_exchanged_after_the_client_moved_to_another_api_is_refused_and_stays_unspent(
    app: Flask, client: FlaskClient, web: Client
) -> None:
    code = _web_code(client)
    clients = extensions.of(app).clients
    clients.replace(dataclasses.replace(web, audiences=frozenset({ORDERS})))
    assert "no longer" in _error(_web_exchange(client, code), 400, "invalid_grant")
    clients.replace(web)
    assert _claims(_web_exchange(client, code))["scope"] == "admin profile"


def test_a_code_exchanged_after_the_user_was_narrowed_gets_only_their_new_scopes(
    app: Flask, client: FlaskClient, web: Client
) -> None:
    code = _web_code(client)
    extensions.of(app).users.update("alice", scope="profile")
    assert _claims(_web_exchange(client, code))["scope"] == "profile"


def test_a_code_exchanged_after_the_api_was_narrowed_gets_only_its_remaining_scopes(
    app: Flask, client: FlaskClient, web: Client
) -> None:
    code = _web_code(client)
    extensions.of(app).apis.replace("jwt-split-api", "profile")
    assert _claims(_web_exchange(client, code))["scope"] == "profile"


def test_a_code_exchanged_with_none_of_the_apis_scopes_left_is_refused(
    app: Flask, client: FlaskClient, web: Client
) -> None:
    code = _web_code(client)
    extensions.of(app).users.update("alice", scope="orders:read")
    _error(_web_exchange(client, code), 400, "invalid_grant")


# -- item: a narrowed grant stays narrowed (RFC 6749 section 6; RFC 9700 section 2.3) -----------


def test_a_grant_narrowed_at_a_refresh_does_not_widen_again_with_the_registration(
    app: Flask, client: FlaskClient
) -> None:
    first = _login(client)
    apis = extensions.of(app).apis
    apis.replace("jwt-split-api", "profile")
    second = _refresh(client, first)
    assert _claims(second)["scope"] == "profile"
    apis.replace("jwt-split-api", "admin profile")
    assert _claims(_refresh(client, second))["scope"] == "profile"


# -- item: an API registered to require DPoP gets no bearer token (RFC 9449 section 5) -----------


def _proof() -> str:
    return make_proof(ec.generate_private_key(ec.SECP256R1()), "POST", "http://issuer.test/token")


def _unbound_refused(response: TestResponse) -> None:
    assert "DPoP-bound" in _error(response, 400, "invalid_dpop_proof")
    assert "access_token" not in response.get_json()


def test_an_api_that_requires_dpop_gets_no_bearer_token_by_password_or_refresh(app: Flask, client: FlaskClient) -> None:
    bearer = _login(client)
    extensions.of(app).apis.replace("jwt-split-api", "profile admin", require_dpop=True)
    _unbound_refused(_login(client))
    _unbound_refused(_refresh(client, bearer))  # a family issued before: refused, and left unspent
    form = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": bearer.get_json()["refresh_token"]}
    refreshed = client.post("/token", data=form, headers={"DPoP": _proof()})
    assert refreshed.get_json()["token_type"] == "DPoP"
    assert "cnf" in _claims(refreshed)
    form = {"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": APP}
    assert client.post("/token", data=form, headers={"DPoP": _proof()}).get_json()["token_type"] == "DPoP"


def test_an_api_that_requires_dpop_gets_no_bearer_token_by_code_exchange(
    app: Flask, client: FlaskClient, web: Client
) -> None:
    code = _web_code(client)
    extensions.of(app).apis.replace("jwt-split-api", "profile admin", require_dpop=True)
    _unbound_refused(_web_exchange(client, code))
    form = {"client_id": WEB, "code": code, "redirect_uri": WEB_REDIRECT_URI, "code_verifier": VERIFIER}
    exchanged = client.post("/token", data={"grant_type": "authorization_code", **form}, headers={"DPoP": _proof()})
    assert exchanged.get_json()["token_type"] == "DPoP"  # the refusal left the code unspent


def test_an_api_that_requires_dpop_gets_no_bearer_token_by_client_credentials(app: Flask, client: FlaskClient) -> None:
    key = new_rsa_key()
    service = Client(
        "svc", frozenset({"client_credentials"}), scopes=frozenset({"orders:read"}), auth_method="private_key_jwt"
    )
    extensions.of(app).clients.add(dataclasses.replace(service, jwks=jwks_json(key)))
    extensions.of(app).apis.replace(ORDERS, "orders:read", [ORDERS_URL], require_dpop=True)

    def ask(**headers: str) -> TestResponse:
        assertion = sign(assertion_claims("svc", "http://issuer.test"), key, kid=kid_of(key), typ=None)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "resource": ORDERS_URL,
        }
        return client.post("/token", data=form, headers=headers)

    _unbound_refused(ask())
    assert _claims(ask(DPoP=_proof()))["aud"] == ORDERS
    assert _login(client).get_json()["token_type"] == "Bearer"  # other APIs are as they were


# -- a login racing a change to its user --------------------------------------------------------


def _change_user_after_the_password_check(monkeypatch: pytest.MonkeyPatch, app: Flask, change: Any) -> None:
    """Make `change` happen between the password check and the grant (as a CLI command racing the login)."""
    users = extensions.of(app).users
    authenticate = users.authenticate

    def racing(username: str, password: str) -> Any:
        user = authenticate(username, password)
        change(users)
        return user

    monkeypatch.setattr(users, "authenticate", racing)


def test_a_scope_narrowed_while_logging_in_is_not_in_the_token(
    monkeypatch: pytest.MonkeyPatch, app: Flask, client: FlaskClient
) -> None:
    _change_user_after_the_password_check(monkeypatch, app, lambda users: users.update("alice", scope="profile"))
    response = _login(client, scope="profile admin")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "profile"


def test_a_user_deleted_while_logging_in_gets_invalid_grant_not_a_500(
    monkeypatch: pytest.MonkeyPatch, app: Flask, client: FlaskClient
) -> None:
    _change_user_after_the_password_check(monkeypatch, app, lambda users: users.delete("alice"))
    response = _login(client)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_grant"
