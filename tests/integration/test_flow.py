"""The README's curl walk-through, and the OAuth endpoints, over HTTP against a running stack."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import StackFactory
from tests.support.stack import Stack


@pytest.mark.deployment
def test_password_grant_token_gives_200_on_api_me(stack: Stack) -> None:
    tokens = stack.token("alice", "wonderland")
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "admin profile"
    response = stack.get("/api/me", tokens["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == stack.user_id("alice")  # the stable id; the name is preferred_username
    assert body["claims"]["preferred_username"] == "alice"
    assert body["scope"] == "admin profile"
    assert body["claims"]["iss"] == stack.public_issuer
    assert body["claims"]["aud"] == "jwt-split-api"
    assert body["claims"]["client_id"] == "cli"


def test_admin_needs_admin_scope(stack: Stack) -> None:
    bob = stack.token("bob", "builder")["access_token"]
    response = stack.get("/api/admin", bob)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert 'scope="admin"' in response.headers["WWW-Authenticate"]
    # alice has the scope, but a password grant is one factor: RFC 9470 step-up, never a 403.
    alice = stack.token("alice", "wonderland")["access_token"]
    refused = stack.get("/api/admin", alice)
    assert refused.status_code == 401
    assert refused.json()["error"] == "insufficient_user_authentication"
    assert 'acr_values="multi-factor"' in refused.headers["WWW-Authenticate"]


def test_requested_scope_is_narrowed_to_what_the_user_has(stack: Stack) -> None:
    tokens = stack.token("bob", "builder", scope="profile admin")
    assert tokens["scope"] == "profile"
    assert stack.get("/api/me", tokens["access_token"]).json()["scope"] == "profile"


def test_wrong_password_is_invalid_grant(stack: Stack) -> None:
    response = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "password", "username": "alice", "password": "nope"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "nope" not in response.text


def test_unknown_grant_type_is_unsupported(stack: Stack) -> None:
    response = requests.post(f"{stack.issuer_url}/token", data={"grant_type": "implicit"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.deployment
def test_jwks_publishes_only_public_members(stack: Stack) -> None:
    response = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
        assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")


@pytest.mark.deployment
def test_metadata_is_served_at_both_well_known_paths(stack: Stack) -> None:
    for path in ("oauth-authorization-server", "openid-configuration"):
        document = requests.get(f"{stack.issuer_url}/.well-known/{path}", timeout=10).json()
        assert document["issuer"] == stack.public_issuer
        assert document["jwks_uri"] == f"{stack.public_issuer}/.well-known/jwks.json"
        assert document["token_endpoint"] == f"{stack.public_issuer}/token"
        assert "refresh_token" in document["grant_types_supported"]


def _refresh(stack: Stack, refresh_token: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)


def test_refresh_token_rotates_and_a_retry_within_the_grace_gets_the_same_successor(stack: Stack) -> None:
    first = stack.token("bob", "builder")
    second = _refresh(stack, first["refresh_token"])
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert stack.get("/api/me", rotated["access_token"]).status_code == 200

    # A second tab, or a retry after a lost answer: the same successor, and nobody is logged out.
    retried = _refresh(stack, first["refresh_token"])
    assert retried.status_code == 200
    assert retried.json()["refresh_token"] == rotated["refresh_token"]
    assert _refresh(stack, rotated["refresh_token"]).status_code == 200


def test_refresh_token_reused_after_the_grace_revokes_the_family(make_stack: StackFactory) -> None:
    stack = make_stack(issuer_env={"ISSUER_REFRESH_REUSE_GRACE": "0"}).start()
    first = stack.token("bob", "builder")
    rotated = _refresh(stack, first["refresh_token"]).json()

    reused = _refresh(stack, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The copy was detected: the legitimate successor is revoked with the whole family.
    successor = _refresh(stack, rotated["refresh_token"])
    assert successor.status_code == 400
    assert successor.json()["error"] == "invalid_grant"


def test_revoked_refresh_token_cannot_be_used(stack: Stack) -> None:
    tokens = stack.token("bob", "builder")
    revoked = requests.post(
        f"{stack.issuer_url}/revoke", data={"token": tokens["refresh_token"], "client_id": "cli"}, timeout=10
    )
    assert revoked.status_code == 200
    response = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # RFC 7009 2.2: an unknown token is answered 200 too.
    unknown = {"token": "unknown", "client_id": "cli"}
    assert requests.post(f"{stack.issuer_url}/revoke", data=unknown, timeout=10).status_code == 200


@pytest.mark.deployment
def test_health_endpoints(stack: Stack) -> None:
    assert requests.get(f"{stack.issuer_url}/healthz", timeout=10).json() == {"status": "ok"}
    assert stack.get("/healthz").json() == {"status": "ok"}
    ready = stack.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
