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
import pytest
import requests

from tests.support.stack import Stack
from tests.support.tokens import ASSERTION_TYPE, assertion_claims, kid_of, new_rsa_key, sign

SCRIPT = Path(__file__).parents[2] / "scripts" / "service_token.py"


def _claims(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    return claims


@pytest.mark.deployment
def test_a_service_registered_from_the_cli_calls_the_api_with_its_own_token(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = stack.register_client(key, "--scope", "profile")
    response = stack.service_token(client_id, key)
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
    client_id = stack.register_client(key, "--scope", "profile", "--audience", audience)
    token = stack.service_token(client_id, key, resource=audience)
    assert _claims(token)["aud"] == audience
    refused = stack.get("/api/me", token.json()["access_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_replayed_expired_foreign_and_misaddressed_assertions_are_refused(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = stack.register_client(key, "--scope", "profile")
    endpoint = stack.public_issuer  # the assertion's aud: the issuer identifier
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
        "the token endpoint": sign(
            assertion_claims(client_id, f"{stack.public_issuer}/token"), key, kid=kid_of(key), typ=None
        ),
        "a list naming another server too": sign(
            assertion_claims(client_id, [stack.public_issuer, "https://evil.example"]), key, kid=kid_of(key), typ=None
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
    client_id = stack.register_client(key, "--scope", "profile")
    assert stack.service_token(client_id, key).status_code == 200
    deleted = stack.issuer_cli("clients", "delete", client_id)
    assert deleted.returncode == 0, deleted.stderr
    refused = stack.service_token(client_id, key)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")


def test_the_readme_walk_through_a_service_token_with_the_script(stack: Stack, tmp_path: Path) -> None:
    """README "A service's own token": keygen, clients add, an assertion per token, both APIs."""

    def script(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout.strip()

    def token(client_id: str, **form: str) -> requests.Response:
        assertion = script("assertion", client_id, "nightly-job.key.pem", stack.public_issuer)
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        return requests.post(f"{stack.issuer_url}/token", data={**data, **form}, timeout=10)

    script("keygen", "nightly-job")
    assert (tmp_path / "nightly-job.key.pem").stat().st_mode & 0o777 == 0o600
    client_id = f"nightly-job-{uuid.uuid4().hex[:8]}"  # one per backend: the stack is shared
    jwks = (tmp_path / "nightly-job.jwks.json").read_text()
    scope = ("--scope", "profile reports:read")
    added = stack.issuer_cli(
        "clients", "add", client_id, "--grant", "client_credentials", *scope, "--jwks-file", "-", stdin=jwks
    )
    assert added.returncode == 0, added.stderr

    default = token(client_id)
    assert (_claims(default)["sub"], _claims(default)["aud"], _claims(default)["scope"]) == (
        client_id,
        "jwt-split-api",
        "profile",
    )
    assert "refresh_token" not in default.json()
    assert stack.get("/api/me", default.json()["access_token"]).json()["sub"] == client_id

    reports_token = token(client_id, resource="jwt-split-reports").json()["access_token"]
    report = stack.get_reports("/api/report", reports_token)
    assert report.json() == {
        "caller": {"aud": "jwt-split-reports", "scope": "reports:read", "sub": client_id},
        "profile_api": {"aud": "jwt-split-api", "scope": "profile", "sub": "reports-api"},
    }
    assert stack.get("/api/me", reports_token).status_code == 401
