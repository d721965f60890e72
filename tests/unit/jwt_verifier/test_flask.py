"""Unit tests for jwt_verifier.flask: a tiny Flask API protected the way the README shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, g
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from jwt_verifier import VerifierConfig
from jwt_verifier.errors import InsufficientScope
from jwt_verifier.flask import BearerAuth, error_response, protection
from tests.support.fakes import JwksServer
from tests.support.orders_api import AUDIENCE, RESOURCE, flask_app, orders_config
from tests.support.threads import on_a_loop
from tests.support.tokens import ISSUER, make_claims, sign

METADATA = f'resource_metadata="{RESOURCE}/.well-known/oauth-protected-resource"'

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> Iterator[AppFactory]:
    """Build tiny apps on the test JWKS server (which publishes `rsa_key`); sessions closed afterwards."""
    jwks_server.serve_keys(rsa_key)
    apps: list[Flask] = []

    def make(**options: Any) -> Flask:
        app = flask_app(orders_config(jwks_server.url, **options))
        apps.append(app)
        return app

    yield make
    for app in apps:
        protection(app).close()  # its background threads
        protection(app).jwks.session.close()


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


def _token(key: rsa.RSAPrivateKey, **claims: Any) -> dict[str, str]:
    claims.setdefault("audience", AUDIENCE)
    claims.setdefault("scope", "orders:read")
    return {"Authorization": f"Bearer {sign(make_claims(**claims), key)}"}


def _assert_error(response: TestResponse, status: int, error: str) -> None:
    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert response.headers["Cache-Control"] == "no-store"


def test_a_token_with_the_scope_reaches_the_view_with_its_claims_on_g(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    response = client.get("/orders", headers=_token(rsa_key))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice"}


def test_no_token_is_a_bare_401_challenge_naming_the_metadata(client: FlaskClient) -> None:
    response = client.get("/orders")
    _assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="jwt-split", {METADATA}'


def test_a_token_for_another_api_is_invalid_token(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get("/orders", headers=_token(rsa_key, audience="jwt-split-api"))
    _assert_error(response, 401, "invalid_token")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jwt-split", error="invalid_token"')
    assert challenge.endswith(METADATA)


def test_a_token_signed_by_another_key_is_invalid_token(client: FlaskClient, other_rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get("/orders", headers=_token(other_rsa_key))
    _assert_error(response, 401, "invalid_token")
    assert METADATA in response.headers["WWW-Authenticate"]


def test_a_token_without_the_scope_is_403_insufficient_scope(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get("/orders", headers=_token(rsa_key, scope="orders:write"))
    _assert_error(response, 403, "insufficient_scope")
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="orders:read"' in challenge
    assert METADATA in challenge


def test_keys_that_cannot_be_had_are_a_503_to_retry(
    make_app: AppFactory, dead_url: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = make_app(jwks_url=dead_url, jwks_timeout=0.2).test_client()
    response = client.get("/orders", headers=_token(rsa_key))
    _assert_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers


def test_the_app_serves_its_protected_resource_metadata(client: FlaskClient) -> None:
    response = client.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["orders:read", "orders:write"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "dpop_bound_access_tokens_required": False,
    }


def test_a_resource_with_a_path_has_its_metadata_under_that_path(make_app: AppFactory) -> None:
    client = make_app(resource="https://api.example/orders").test_client()
    document = client.get("/.well-known/oauth-protected-resource/orders")
    assert document.status_code == 200
    assert document.get_json()["resource"] == "https://api.example/orders"
    expected = 'resource_metadata="https://api.example/.well-known/oauth-protected-resource/orders"'
    assert expected in client.get("/orders").headers["WWW-Authenticate"]


def test_a_cookie_is_read_only_when_the_extension_names_it(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.serve_keys(rsa_key)
    config = VerifierConfig(
        issuer=ISSUER, audience=AUDIENCE, resource=RESOURCE, jwks_url=jwks_server.url, jwks_prefetch=False
    )
    token = sign(make_claims(audience=AUDIENCE, scope="orders:read"), rsa_key)
    for cookie, status in ((None, 401), ("session_token", 200)):
        app = Flask(__name__)
        auth = BearerAuth(config, cookie=cookie, app=app)

        @app.get("/orders")
        @auth.require(scope="orders:read")
        def orders() -> dict[str, Any]:
            return {"sub": g.claims["sub"]}

        client = app.test_client()
        client.set_cookie("session_token", token)
        assert client.get("/orders").status_code == status
        protection(app).close()  # its background threads
        protection(app).jwks.session.close()


def test_one_extension_keeps_each_apps_protection_apart(jwks_server: JwksServer) -> None:
    auth = BearerAuth()
    first, second = Flask("first"), Flask("second")
    for app, audience in ((first, "api-1"), (second, "api-2")):
        auth.init_app(
            app,
            VerifierConfig(
                issuer=ISSUER, audience=audience, resource=f"https://{audience}.example", jwks_prefetch=False
            ),
        )
    assert protection(first).config.audience == "api-1"
    assert protection(second).config.audience == "api-2"
    assert protection(first).jwks is not protection(second).jwks


def test_init_app_without_a_config_is_refused() -> None:
    with pytest.raises(TypeError, match="VerifierConfig"):
        BearerAuth().init_app(Flask(__name__))


def test_a_bearer_error_renders_its_challenge_with_the_metadata_url() -> None:
    url = "https://api.example/.well-known/oauth-protected-resource"
    with Flask(__name__).app_context():
        response = error_response(InsufficientScope("admin"), url)
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="jwt-split", error="insufficient_scope", '
        f'error_description="this resource needs the \'admin\' scope", scope="admin", resource_metadata="{url}"'
    )


def test_a_view_called_where_an_unrelated_loop_runs_still_fetches_the_keys(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Playwright's sync API leaves a loop running in its thread: a WSGI app called there has no
    # worker thread to hand a fetch to, so it fetches (no refusal, no 500).
    client = make_app().test_client()
    responses: list[TestResponse] = []

    async def with_a_loop_running() -> None:
        responses.append(client.get("/orders", headers=_token(rsa_key)))

    on_a_loop(with_a_loop_running)
    assert responses[0].status_code == 200
    assert jwks_server.request_count == 1
