"""DPoP end to end: a token the issuer binds to a client's key (RFC 9449) is usable at the API only with that key.

The issuer puts `cnf.jkt` in the token (issuer.dpop); the profile API checks each request's
proof locally (jwt_verifier.dpop): the key, the method and URL, the token's hash, a `jti`
never seen by any of its workers. A copy of the token, or of a proof, is worth nothing.
"""

from __future__ import annotations

import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.dpop import make_proof
from tests.support.stack import Stack


def _bound_token(stack: Stack, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    proof = make_proof(key, "POST", f"{stack.public_issuer}/token")
    response = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": "cli"},
        headers={"DPoP": proof},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    assert body["token_type"] == "DPoP"
    return body


def _public(base: str) -> str:
    """Return an API's public URL, the `htu` base of its proofs, as its RFC 9728 metadata names it."""
    metadata = requests.get(f"{base}/.well-known/oauth-protected-resource", timeout=10).json()
    resource: str = metadata["resource"]
    return resource


def _me(stack: Stack, token: str, proof: str | None, scheme: str = "DPoP") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}", "Connection": "close"}
    if proof is not None:
        headers["DPoP"] = proof
    return requests.get(f"{stack.resource_url}/api/me", headers=headers, timeout=10)


@pytest.mark.deployment
def test_a_bound_token_works_only_with_its_key_and_a_fresh_proof(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = _bound_token(stack, key)["access_token"]
    url = f"{_public(stack.resource_url)}/api/me"

    proof = make_proof(key, "GET", url, token)
    assert _me(stack, token, proof).status_code == 200

    # The same proof again, at whichever worker: a replay.
    replayed = _me(stack, token, proof)
    assert replayed.status_code == 401
    assert 'error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]
    # The token alone, as a bearer token: refused, it is bound.
    assert _me(stack, token, None, scheme="Bearer").status_code == 401
    # A thief's own key: the token's cnf.jkt names another.
    thief = ec.generate_private_key(ec.SECP256R1())
    assert _me(stack, token, make_proof(thief, "GET", url, token)).status_code == 401
    # A proof made for the other API (its htu), or for another token (its ath).
    assert (
        _me(stack, token, make_proof(key, "GET", f"{_public(stack.reports_url)}/api/report", token)).status_code == 401
    )
    other = _bound_token(stack, key)["access_token"]
    assert _me(stack, token, make_proof(key, "GET", url, other)).status_code == 401

    assert _me(stack, token, make_proof(key, "GET", url, token)).status_code == 200


def test_a_bound_token_revoked_at_the_issuer_is_refused_even_with_its_proof(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = _bound_token(stack, key)
    token, url = body["access_token"], f"{_public(stack.resource_url)}/api/me"
    assert _me(stack, token, make_proof(key, "GET", url, token)).status_code == 200
    revoked = requests.post(
        f"{stack.issuer_url}/revoke", data={"token": body["refresh_token"], "client_id": "cli"}, timeout=10
    )
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    while _me(stack, token, make_proof(key, "GET", url, token)).status_code != 401:
        assert time.monotonic() - started < 5, "the revoked bound token is still accepted"
        time.sleep(0.1)
