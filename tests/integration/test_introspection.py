"""The other design over HTTP: a resource that asks the issuer about every token (RFC 7662)."""

from __future__ import annotations

import secrets

import requests

from tests.conftest import StackFactory
from tests.support.stack import Stack
from tests.support.tokens import make_claims, new_rsa_key, sign


def _introspecting_stack(make_stack: StackFactory) -> tuple[Stack, str]:
    secret = secrets.token_urlsafe(32)
    stack = make_stack(
        issuer_env={"ISSUER_INTROSPECTION_SECRET": secret},
        resource_env={"RESOURCE_VERIFICATION": "introspection", "RESOURCE_INTROSPECTION_SECRET": secret},
    )
    return stack.start(), secret


def test_resource_in_introspection_mode_asks_the_issuer(make_stack: StackFactory) -> None:
    stack, secret = _introspecting_stack(make_stack)
    token = stack.token("bob", "builder")["access_token"]
    response = stack.get("/api/me", token)
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == stack.user_id("bob")
    assert response.json()["claims"]["iss"] == stack.public_issuer
    assert stack.get("/api/admin", token).status_code == 403

    kid, _ = stack.active_private_key()
    forged = sign(make_claims(issuer=stack.public_issuer, sub="alice", scope="admin"), new_rsa_key(), kid=kid)
    refused = stack.get("/api/me", forged)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]

    # The issuer answers an authenticated caller, and only that caller.
    url = f"{stack.issuer_url}/introspect"
    assert requests.post(url, data={"token": token}, timeout=10).status_code == 401
    answer = requests.post(url, data={"token": token}, auth=("resource-api", secret), timeout=10).json()
    assert answer["active"] is True
    assert (answer["sub"], answer["username"]) == (stack.user_id("bob"), "bob")
    inactive = requests.post(url, data={"token": forged}, auth=("resource-api", secret), timeout=10).json()
    assert inactive == {"active": False}

    # A service's own token is active while its client exists (RFC 7662 section 2.2), and names it.
    key = new_rsa_key()
    client_id = stack.register_client(key, "--scope", "profile")
    service = stack.service_token(client_id, key).json()["access_token"]
    answer = requests.post(url, data={"token": service}, auth=("resource-api", secret), timeout=10).json()
    assert (answer["active"], answer["sub"], answer["client_id"]) == (True, client_id, client_id)
    assert stack.get("/api/me", service).status_code == 200
    assert stack.issuer_cli("clients", "delete", client_id).returncode == 0
    assert stack.get("/api/me", service).status_code == 401

    # What introspection buys: deleting the user stops their token at once, and a new user of
    # the same name is someone else (`sub` is the stable id).
    assert stack.issuer_cli("users", "delete", "bob").returncode == 0
    assert stack.get("/api/me", token).status_code == 401
    added = stack.issuer_cli("users", "add", "bob", "--scope", "profile", stdin="another builder\n")
    assert added.returncode == 0, added.stderr
    assert stack.get("/api/me", token).status_code == 401

    # What it costs: with the issuer gone, nothing verifies (503, not 401).
    stack.stop_issuer()
    alice = sign(make_claims(issuer=stack.public_issuer), new_rsa_key(), kid=kid)
    assert stack.get("/api/me", alice).status_code == 503


def test_introspection_is_off_unless_the_issuer_has_a_secret(stack: Stack) -> None:
    token = stack.token("alice", "wonderland")["access_token"]
    response = requests.post(f"{stack.issuer_url}/introspect", data={"token": token}, timeout=10)
    assert response.status_code == 404
    assert "alice" not in response.text


def test_local_verification_serves_repeated_tokens_and_still_checks_them(stack: Stack) -> None:
    token = stack.token("alice", "wonderland")["access_token"]
    for _ in range(5):
        assert stack.get("/api/me", token).status_code == 200
    header, payload, signature = token.split(".")
    assert stack.get("/api/me", f"{header}.{payload}.{signature[:-4]}AAAA").status_code == 401
    assert stack.get("/api/me", f"{header}.{payload}.{signature}=").status_code == 401
