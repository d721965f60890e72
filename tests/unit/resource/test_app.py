"""Unit tests for the resource app through Flask's test client, with keys from a real JWKS server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from jwt_verifier import JwksClient, VerifierConfig
from jwt_verifier.flask import protection
from resource_server import create_app
from resource_server.settings import ResourceSettings
from tests.support.fakes import JwksServer
from tests.support.tokens import AUDIENCE, ISSUER, kid_of, make_claims, sign
from tests.unit.resource.conftest import AppFactory


@pytest.fixture
def make_app(jwks_server: JwksServer) -> Iterator[AppFactory]:
    """Build resource apps on the test JWKS server; their HTTP sessions are closed afterwards."""
    apps: list[Flask] = []

    def make(**options: Any) -> Flask:
        settings = ResourceSettings(
            verifier=VerifierConfig(
                issuer=ISSUER,
                jwks_url=jwks_server.url,
                audience=AUDIENCE,
                resource="http://localhost:8001",
                scopes_supported=("profile", "admin"),
                jwks_timeout=0.5,
                jwks_cooldown=0.0,
                jwks_prefetch=False,
            ),
            **options,
        )
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        jwks: JwksClient = protection(app).jwks
        protection(app).close()  # its background threads
        jwks.session.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    return body


def _assert_invalid_token(response: TestResponse) -> None:
    _assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="jwt-split", error="invalid_token"')


# -- /api/me ------------------------------------------------------------------------------


def test_me_returns_the_verified_claims(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = make_claims(scope="profile admin")
    response = client.get("/api/me", headers=_bearer(sign(claims, rsa_key)))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice", "scope": "profile admin", "claims": claims}
    assert response.headers["Cache-Control"] == "no-store"


def test_me_without_token_is_401_with_a_bare_challenge_naming_the_metadata(client: FlaskClient) -> None:
    response = client.get("/api/me")
    _assert_error(response, 401, "unauthorized")
    metadata = "http://localhost:8001/.well-known/oauth-protected-resource"
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="jwt-split", resource_metadata="{metadata}"'


def test_other_auth_scheme_counts_as_no_token(client: FlaskClient) -> None:
    response = client.get("/api/me", headers={"Authorization": "Basic YWxpY2U6d29uZGVybGFuZA=="})
    _assert_error(response, 401, "unauthorized")
    assert "error=" not in response.headers["WWW-Authenticate"]


def test_empty_bearer_token_is_invalid_token(client: FlaskClient) -> None:
    _assert_invalid_token(client.get("/api/me", headers={"Authorization": "Bearer "}))


def test_expired_token_is_invalid_token(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    response = client.get("/api/me", headers=_bearer(sign(make_claims(iat=now - 900, exp=now - 60), rsa_key)))
    _assert_invalid_token(response)
    assert 'error_description="the token has expired"' in response.headers["WWW-Authenticate"]


def test_token_for_other_audience_is_invalid_token(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    _assert_invalid_token(client.get("/api/me", headers=_bearer(sign(make_claims(audience="other"), rsa_key))))


def test_forged_token_is_invalid_token(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(make_claims(scope="admin"), other_rsa_key, kid=kid_of(rsa_key))
    _assert_invalid_token(client.get("/api/admin", headers=_bearer(token)))


def test_unknown_kid_is_invalid_token(client: FlaskClient, other_rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get("/api/me", headers=_bearer(sign(make_claims(), other_rsa_key)))
    _assert_invalid_token(response)
    assert "does not publish" in response.get_json()["error_description"]


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "....", "x" * 5000, "eyJhbGciOiJub25lIn0.e30.", "\u00e9\u00e9.\u00e9.\u00e9"],
)
def test_malformed_token_is_invalid_token_never_500(client: FlaskClient, token: str) -> None:
    _assert_invalid_token(client.get("/api/me", headers=_bearer(token)))


# -- /api/admin ---------------------------------------------------------------------------


def test_admin_with_admin_scope_and_a_multi_factor_login_is_200(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    claims = make_claims(scope="profile admin", acr="multi-factor", amr=["pwd", "otp", "mfa"])
    response = client.get("/api/admin", headers=_bearer(sign(claims, rsa_key)))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice", "message": "welcome, administrator", "acr": "multi-factor"}


@pytest.mark.parametrize("login", [{"acr": "single-factor", "amr": ["pwd"]}, {}])
def test_admin_with_admin_scope_and_one_factor_is_401_insufficient_user_authentication(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey, login: dict[str, Any]
) -> None:
    # RFC 9470: a password-only login, or a token that does not say (no acr), must step up.
    response = client.get("/api/admin", headers=_bearer(sign(make_claims(scope="profile admin", **login), rsa_key)))
    _assert_error(response, 401, "insufficient_user_authentication")
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="multi-factor"' in challenge
    assert "max_age" not in challenge


def test_admin_without_admin_scope_is_403_insufficient_scope(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get("/api/admin", headers=_bearer(sign(make_claims(scope="profile"), rsa_key)))
    _assert_error(response, 403, "insufficient_scope")
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="admin"' in challenge


@pytest.mark.parametrize("scope", ["", "openid", "reports:read"])
def test_me_refuses_a_token_with_none_of_the_apis_scopes(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey, scope: str
) -> None:
    response = client.get("/api/me", headers=_bearer(sign(make_claims(scope=scope), rsa_key)))
    _assert_error(response, 403, "insufficient_scope")
    assert 'scope="admin profile"' in response.headers["WWW-Authenticate"]


def test_admin_scope_must_be_a_whole_word(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get("/api/admin", headers=_bearer(sign(make_claims(scope="administrator"), rsa_key)))
    _assert_error(response, 403, "insufficient_scope")


def test_admin_without_token_is_401_not_403(client: FlaskClient) -> None:
    _assert_error(client.get("/api/admin"), 401, "unauthorized")


# -- issuer unavailable -------------------------------------------------------------------


def test_no_keys_yet_is_503_with_retry_after(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(500, b"")
    client = make_app().test_client()
    response = client.get("/api/me", headers=_bearer(sign(make_claims(), rsa_key)))
    _assert_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_keys_held_keep_working_when_the_issuer_goes_down(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert client.get("/api/me", headers=_bearer(sign(make_claims(), rsa_key))).status_code == 200
    jwks_server.stop()
    assert client.get("/api/me", headers=_bearer(sign(make_claims(), rsa_key))).status_code == 200
    assert client.get("/readyz").status_code == 200


# -- health -------------------------------------------------------------------------------


def test_healthz_answers_even_when_the_issuer_is_down(make_app: AppFactory, jwks_server: JwksServer) -> None:
    jwks_server.stop()
    response = make_app().test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_503_until_keys_arrive_then_200(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(500, b"")
    client = make_app().test_client()
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.get_json()["status"] == "not ready"
    assert not_ready.headers["Retry-After"] == "5"  # every 503 says when to try again

    jwks_server.serve_keys(rsa_key)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"
    assert ready.get_json()["kids"] == [kid_of(rsa_key)]


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")


def test_post_to_api_is_405_json(client: FlaskClient) -> None:
    _assert_error(client.post("/api/me"), 405, "method_not_allowed")


def test_responses_carry_a_request_id(client: FlaskClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42"}).headers["X-Request-ID"] == "trace-42"


# -- a hostile issuer ---------------------------------------------------------------------

DEEPLY_NESTED_JWKS = b'{"keys": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"


def test_deeply_nested_jwks_is_a_failed_fetch_not_a_500(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert len(DEEPLY_NESTED_JWKS) < 64 * 1024
    jwks_server.answer(200, DEEPLY_NESTED_JWKS)
    client = make_app().test_client()
    _assert_error(client.get("/api/me", headers=_bearer(sign(make_claims(), rsa_key))), 503, "temporarily_unavailable")
    assert client.get("/readyz").status_code == 503


def test_the_api_publishes_its_protected_resource_metadata(client: FlaskClient) -> None:
    response = client.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    assert response.get_json() == {
        "resource": "http://localhost:8001",
        "authorization_servers": [ISSUER],
        "scopes_supported": ["profile", "admin"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "dpop_bound_access_tokens_required": False,
    }


def test_every_challenge_of_the_api_names_the_metadata(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    metadata = 'resource_metadata="http://localhost:8001/.well-known/oauth-protected-resource"'
    for path, headers in [
        ("/api/me", {}),
        ("/api/me", {"Authorization": "Bearer not-a-token"}),
        ("/api/admin", _bearer(sign(make_claims(scope="profile"), rsa_key))),
    ]:
        response = client.get(path, headers=headers)
        assert metadata in response.headers["WWW-Authenticate"], (path, response.status_code)


def test_two_tokens_in_the_authorization_header_are_400_invalid_request(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    # WSGI servers join repeated headers with a comma; neither token may be picked.
    token = sign(make_claims(scope="profile"), rsa_key)
    response = client.get("/api/me", headers={"Authorization": f"Bearer {token}, Bearer {token}"})
    _assert_error(response, 400, "invalid_request")
    assert (
        'resource_metadata="http://localhost:8001/.well-known/oauth-protected-resource"'
        in (response.headers["WWW-Authenticate"])
    )
