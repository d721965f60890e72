"""Service-to-service tokens on a running stack: a client registered from the CLI with its own key.

Each test registers a client of its own, so the shared stack is left as it was found.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.stack import Stack
from tests.support.tokens import assertion_claims, jwks_json, kid_of, new_rsa_key, sign

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCRIPT = Path(__file__).parents[2] / "scripts" / "service_token.py"


def _register(stack: Stack, key: rsa.RSAPrivateKey, *args: str) -> str:
    """Register a private_key_jwt client from the CLI (its public keys on stdin); return its id."""
    client_id = f"svc-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli(
        "clients", "add", client_id, "--grant", "client_credentials", "--jwks-file", "-", *args, stdin=jwks_json(key)
    )
    assert added.returncode == 0, added.stderr
    return client_id


def _service_token(stack: Stack, client_id: str, key: rsa.RSAPrivateKey, **form: str) -> requests.Response:
    claims = assertion_claims(client_id, f"{stack.public_issuer}/token")
    assertion = sign(claims, key, kid=kid_of(key), typ=None)
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    return requests.post(f"{stack.issuer_url}/token", data={**data, **form}, timeout=10)


def _claims(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    return claims


def test_a_service_registered_from_the_cli_calls_the_api_with_its_own_token(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = _register(stack, key, "--scope", "profile")
    response = _service_token(stack, client_id, key)
    assert "refresh_token" not in response.json()
    assert _claims(response)["sub"] == client_id
    me = stack.get("/api/me", response.json()["access_token"])
    assert me.status_code == 200
    assert (me.json()["sub"], me.json()["scope"]) == (client_id, "profile")


def test_a_token_for_another_api_is_refused_by_this_one(stack: Stack) -> None:
    audience = f"https://other-{uuid.uuid4().hex[:8]}.example/api"
    added = stack.issuer_cli("apis", "add", audience, "--scope", "profile")
    assert added.returncode == 0, added.stderr
    key = new_rsa_key()
    client_id = _register(stack, key, "--scope", "profile", "--audience", audience)
    token = _service_token(stack, client_id, key, resource=audience)
    assert _claims(token)["aud"] == audience
    refused = stack.get("/api/me", token.json()["access_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_replayed_expired_foreign_and_misaddressed_assertions_are_refused(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = _register(stack, key, "--scope", "profile")
    endpoint = f"{stack.public_issuer}/token"
    replayed = sign(assertion_claims(client_id, endpoint), key, kid=kid_of(key), typ=None)
    assertions = {
        "expired": sign(
            assertion_claims(client_id, endpoint, exp=1_600_000_000, iat=1_599_999_990), key, kid=kid_of(key), typ=None
        ),
        "another key": sign(assertion_claims(client_id, endpoint), new_rsa_key(), typ=None),
        "another client": sign(assertion_claims("svc-someone-else", endpoint), key, kid=kid_of(key), typ=None),
        "another audience": sign(
            assertion_claims(client_id, "https://evil.example/token"), key, kid=kid_of(key), typ=None
        ),
    }
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
    assert (
        requests.post(f"{stack.issuer_url}/token", data={**form, "client_assertion": replayed}, timeout=10).status_code
        == 200
    )
    assertions["replayed"] = replayed
    for what, assertion in assertions.items():
        refused = requests.post(f"{stack.issuer_url}/token", data={**form, "client_assertion": assertion}, timeout=10)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client"), what
        assert refused.json()["error_description"] == "client authentication failed", what


def test_a_deleted_client_gets_invalid_client(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = _register(stack, key, "--scope", "profile")
    assert _service_token(stack, client_id, key).status_code == 200
    deleted = stack.issuer_cli("clients", "delete", client_id)
    assert deleted.returncode == 0, deleted.stderr
    refused = _service_token(stack, client_id, key)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")


def test_the_readme_walk_through_a_service_token_with_the_script(stack: Stack, tmp_path: Path) -> None:
    def script(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout.strip()

    script("keygen", "reports")
    assert (tmp_path / "reports.key.pem").stat().st_mode & 0o777 == 0o600
    client_id = f"reports-{uuid.uuid4().hex[:8]}"
    jwks = (tmp_path / "reports.jwks.json").read_text()
    added = stack.issuer_cli(
        "clients",
        "add",
        client_id,
        "--grant",
        "client_credentials",
        "--scope",
        "profile",
        "--jwks-file",
        "-",
        stdin=jwks,
    )
    assert added.returncode == 0, added.stderr
    assertion = script("assertion", client_id, "reports.key.pem", f"{stack.public_issuer}/token")
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    token = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)
    assert _claims(token)["sub"] == client_id
    assert stack.get("/api/me", token.json()["access_token"]).json()["sub"] == client_id
