"""The second API (reports, built with the jwt_verifier library) beside the first, on a running stack.

Audiences keep the two apart: a token for one API is refused by the other. The reports API
also calls the profile API with a client-credentials token of its own (`private_key_jwt`,
its key in its own data), which shows a service-to-service call end to end.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import requests

from tests.conftest import StackFactory
from tests.support.processes import pids_that_logged, wait_until
from tests.support.stack import REPORTS_AUDIENCE, REPORTS_CLIENT, Stack
from tests.support.tokens import make_claims, new_rsa_key, sign


def _batch_job_token(stack: Stack, **form: str) -> str:
    """Register a client from the CLI with a fresh key pair; return its private_key_jwt token for the reports API."""
    key = new_rsa_key()
    scope = ("--audience", REPORTS_AUDIENCE, "--scope", "reports:read")
    client_id = stack.register_client(key, *scope, prefix="batch")
    response = stack.service_token(client_id, key, **{"resource": REPORTS_AUDIENCE, **form})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_a_token_for_the_reports_api_works_there_and_is_refused_by_the_profile_api(stack: Stack) -> None:
    token = _batch_job_token(stack)
    assert (_claims(token)["aud"], _claims(token)["scope"]) == (REPORTS_AUDIENCE, "reports:read")

    report = stack.get_reports("/api/report", token)
    assert report.status_code == 200, report.text
    assert report.json()["caller"] == {"sub": _claims(token)["sub"], "scope": "reports:read", "aud": REPORTS_AUDIENCE}

    refused = stack.get("/api/me", token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


@pytest.mark.deployment
def test_the_reports_api_calls_the_profile_api_with_its_own_client_credentials_token(stack: Stack) -> None:
    report = stack.get_reports("/api/report", _batch_job_token(stack))
    assert report.status_code == 200, report.text
    # The profile API saw the reports API itself: its client id, a token for the profile API.
    assert report.json()["profile_api"] == {"sub": REPORTS_CLIENT, "scope": "profile", "aud": "jwt-split-api"}


def test_a_user_token_for_the_profile_api_is_refused_by_the_reports_api(stack: Stack) -> None:
    user_token = stack.token()["access_token"]
    assert stack.get("/api/me", user_token).status_code == 200
    refused = stack.get_reports("/api/report", user_token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert refused.json()["error"] == "invalid_token"


def test_no_reports_token_without_its_scope_and_such_a_token_is_forbidden(stack: Stack) -> None:
    form = {"grant_type": "password", "username": "alice", "password": "wonderland", "resource": REPORTS_AUDIENCE}
    refused = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)  # alice has no reports:read
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")
    kid, key = stack.active_private_key()  # such a token, genuinely signed: the API refuses it all the same
    token = sign(make_claims(issuer=stack.public_issuer, audience=REPORTS_AUDIENCE, scope="profile"), key, kid=kid)
    forbidden = stack.get_reports("/api/report", token)
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]


@pytest.mark.deployment
@pytest.mark.parametrize("api", ["profile", "reports"])
def test_both_apis_publish_their_protected_resource_metadata(stack: Stack, api: str) -> None:
    base = stack.resource_url if api == "profile" else stack.reports_url
    metadata = requests.get(f"{base}/.well-known/oauth-protected-resource", timeout=10)
    assert metadata.status_code == 200
    document = metadata.json()
    assert document["authorization_servers"] == [stack.public_issuer]
    assert document["bearer_methods_supported"] == ["header"]
    expected_scopes = ["profile", "admin"] if api == "profile" else ["reports:read"]
    assert sorted(document["scopes_supported"]) == sorted(expected_scopes)
    # Every challenge names this metadata (RFC 9728 section 5.1), with the API's public URL.
    challenge = requests.get(f"{base}/api/{'me' if api == 'profile' else 'report'}", timeout=10)
    assert challenge.status_code == 401
    assert (
        f'resource_metadata="{document["resource"]}/.well-known/oauth-protected-resource"'
        in (challenge.headers["WWW-Authenticate"])
    )


def test_the_reports_api_publishes_only_the_public_half_of_its_client_key(stack: Stack) -> None:
    jwks = requests.get(f"{stack.reports_url}/client-jwks.json", timeout=10).json()
    assert [sorted(key) for key in jwks["keys"]] == [["alg", "e", "kid", "kty", "n", "use"]]


@pytest.mark.parametrize("api", ["profile", "reports"])
def test_a_client_that_follows_the_metadata_gets_a_token_the_api_accepts(stack: Stack, api: str) -> None:
    """RFC 9728 then RFC 8707: ask the issuer for the `resource` the API's metadata names."""
    base = stack.resource_url if api == "profile" else stack.reports_url
    resource = requests.get(f"{base}/.well-known/oauth-protected-resource", timeout=10).json()["resource"]
    if api == "profile":
        token = stack.token(resource=resource)["access_token"]
        answer = stack.get("/api/me", token)
    else:
        token = _batch_job_token(stack, resource=resource)
        answer = stack.get_reports("/api/report", token)
    assert _claims(token)["aud"] == ("jwt-split-api" if api == "profile" else REPORTS_AUDIENCE)
    assert answer.status_code == 200, answer.text


@pytest.mark.deployment
def test_every_reports_worker_keeps_calling_the_profile_api_while_the_issuer_is_down(make_stack: StackFactory) -> None:
    """Each worker holds its own service token, fetched and renewed ahead of need, not at its first call."""
    stack = make_stack(reports=True).start()
    token = _batch_job_token(stack)
    wait_until(
        lambda: len(pids_that_logged(stack.reports_logs(), "service token fetched")) >= stack.workers,
        timeout=30,
        what="every reports worker to hold a service token",
    )
    stack.stop_issuer()
    # New connections each time, so the calls spread over the workers.
    answers = [stack.get_reports("/api/report", token, headers={"Connection": "close"}) for _ in range(12)]
    assert [answer.status_code for answer in answers] == [200] * 12, [answer.text for answer in answers]


def test_the_reports_api_holds_dpop_bound_tokens_and_proves_its_key_with_nonces(make_stack: StackFactory) -> None:
    """Its service token is DPoP-bound: a profile API that takes nothing else still answers it.

    The issuer and the profile API both ask for their nonces, so each first proof is answered
    `use_dpop_nonce` and sent once more with the nonce.
    """
    stack = make_stack(
        reports=True,
        issuer_env={"ISSUER_DPOP_NONCE": "true"},
        resource_env={"RESOURCE_REQUIRE_DPOP": "true", "RESOURCE_DPOP_NONCE_SECRET": "a nonce secret of the test"},
    ).start()
    user_token = stack.token()["access_token"]
    refused = stack.get("/api/me", user_token)  # a bearer token: refused by this profile API
    assert refused.status_code == 401, refused.text

    report = stack.get_reports("/api/report", _batch_job_token(stack))
    assert report.status_code == 200, report.text
    assert report.json()["profile_api"] == {"sub": REPORTS_CLIENT, "scope": "profile", "aud": "jwt-split-api"}
    # Each nonce was answered at once: no fetch failed and waited for the keeper's next try.
    assert "could not get a service token" not in stack.reports_logs()
