"""DPoP-bound tokens (RFC 9449) obtained and used by a third-party client: panva's openid-client.

The library (tests/support/oidc_rp/rp.mjs), not our code, makes the proofs: at the token
endpoint for the code flow, a refresh and client credentials, and at both APIs with
`fetchProtectedResource`. The test holds the client's key (so it knows the thumbprint the
tokens must carry) and replays what the library sent: the token alone, its last proof, the
token with a proof by another key. Each is refused with 401 at the API the token is for.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from jwt_verifier.jose import b64url_encode
from tests.integration.test_oidc_rp import _begin, _finish, _log_in, _register
from tests.support.dpop import make_proof, proof_jwk, thumbprint
from tests.support.oidc_rp import Refused, RelyingParty, register
from tests.support.stack import REPORTS_AUDIENCE, Stack


def _private_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """Return the client's key as the library imports it: a P-256 JWK with `d`."""
    return {**proof_jwk(key), "d": b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))}


def _public(base: str) -> str:
    """Return an API's public URL, the `htu` base of its proofs, as its RFC 9728 metadata names it."""
    resource: str = requests.get(f"{base}/.well-known/oauth-protected-resource", timeout=10).json()["resource"]
    return resource


class _Apis:
    """Both APIs as the library calls them (public URLs routed to where the test reaches them)."""

    def __init__(self, stack: Stack) -> None:
        self.me = f"{_public(stack.resource_url)}/api/me"
        self.report = f"{_public(stack.reports_url)}/api/report"
        self.reach = {self.me: f"{stack.resource_url}/api/me", self.report: f"{stack.reports_url}/api/report"}
        self.routes = {_public(stack.resource_url): stack.resource_url, _public(stack.reports_url): stack.reports_url}

    def fetch(self, rp: RelyingParty, token: str, jwk: dict[str, str] | None, *urls: str) -> list[dict[str, Any]]:
        """Have the library GET each URL with `token` (and proofs by `jwk`); return what each answered."""
        request: dict[str, Any] = {"access_token": token, "urls": list(urls), "routes": self.routes}
        if jwk is not None:
            request["dpop_jwk"] = jwk
        results: list[dict[str, Any]] = rp.call("fetch", **request)["results"]
        return results

    def replay(self, url: str, token: str, proof: str | None, scheme: str = "DPoP") -> requests.Response:
        """Send `token` (and `proof`) to `url` by hand, as whoever copied them would."""
        headers = {"Authorization": f"{scheme} {token}", "Connection": "close"}
        if proof is not None:
            headers["DPoP"] = proof
        return requests.get(self.reach[url], headers=headers, timeout=10)


def _bound_to(tokens: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """Check that the library got a token bound to `key`; return its claims."""
    assert tokens["token_type"] == "dpop", tokens["token_type"]  # the library lower-cases it (RFC 6749 7.1)
    claims: dict[str, Any] = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": thumbprint(key)}
    return claims


def _refused(answer: requests.Response, error: str) -> None:
    assert answer.status_code == 401, answer.text
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP "), challenge
    assert f'error="{error}"' in challenge, challenge


def _copies_are_refused(apis: _Apis, url: str, token: str, proof: str) -> None:
    """The token and the proof the library sent to `url`, replayed without the key: 401 each time."""
    _refused(apis.replay(url, token, proof), "invalid_dpop_proof")  # the same proof again
    bearer = apis.replay(url, token, None, scheme="Bearer")  # the token alone
    assert bearer.status_code == 401, bearer.text
    assert 'error="invalid_token"' in bearer.headers["WWW-Authenticate"]
    thief = ec.generate_private_key(ec.SECP256R1())  # a proof of the thief's own key
    _refused(apis.replay(url, token, make_proof(thief, "GET", url, token)), "invalid_dpop_proof")


def test_a_third_party_clients_code_flow_tokens_are_bound_and_useless_without_its_key(stack: Stack) -> None:
    rp = _register(stack)
    apis = _Apis(stack)
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = _private_jwk(key)

    # The library binds the code to the key (dpop_jkt) and proves it at the exchange.
    begun = _begin(rp, dpop_jkt=thumbprint(key))
    with requests.Session() as browser:
        callback = _log_in(browser, stack, begun["authorization_url"])
    done = _finish(rp, begun, callback, dpop_jwk=jwk)  # type: ignore[arg-type]
    assert not isinstance(done, Refused), done
    tokens = done["tokens"]
    assert _bound_to(tokens, key)["sub"] == stack.user_id("alice")

    me, report = apis.fetch(rp, tokens["access_token"], jwk, apis.me, apis.report)
    assert (me["status"], me["error"]) == (200, None), me
    assert me["proof"] is not None
    assert (report["status"], report["error"]) == (401, "invalid_token"), report  # a token for the profile API
    _copies_are_refused(apis, apis.me, tokens["access_token"], me["proof"])

    # The library with another key (its own thumbprint in each proof): refused too.
    thief = _private_jwk(ec.generate_private_key(ec.SECP256R1()))
    (stolen,) = apis.fetch(rp, tokens["access_token"], thief, apis.me)
    assert (stolen["status"], stolen["error"]) == (401, "invalid_dpop_proof"), stolen

    # A refresh with a proof by the key gives a token bound to it again, good with a fresh proof.
    refreshed = rp.call("refresh", refresh_token=tokens["refresh_token"], dpop_jwk=jwk)["tokens"]
    _bound_to(refreshed, key)
    (again,) = apis.fetch(rp, refreshed["access_token"], jwk, apis.me)
    assert again["status"] == 200, again


@pytest.mark.parametrize("nonce", [False, True], ids=["no-nonce", "issuer-nonce"])
def test_a_third_party_clients_service_token_is_bound_and_useless_without_its_key_at_the_reports_api(
    stack: Stack, nonce: bool
) -> None:
    rp = register(
        stack,
        "rp-svc",
        *("--grant", "client_credentials", "--audience", REPORTS_AUDIENCE, "--scope", "reports:read"),
        *(["--require-dpop-nonce"] if nonce else []),
    )
    apis = _Apis(stack)
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = _private_jwk(key)

    got = rp.call("service", scope="reports:read", resource=REPORTS_AUDIENCE, dpop_jwk=jwk)
    tokens = got["tokens"]
    assert _bound_to(tokens, key)["aud"] == REPORTS_AUDIENCE
    # With nonces on, the issuer answers the first proof use_dpop_nonce; the library retries with it.
    nonces = [jwt.decode(proof, options={"verify_signature": False}).get("nonce") for proof in got["proofs"]]
    assert len(nonces) == (2 if nonce else 1), nonces
    assert nonces[0] is None
    assert (nonces[-1] is not None) == nonce

    report, me = apis.fetch(rp, tokens["access_token"], jwk, apis.report, apis.me)
    assert (report["status"], report["error"]) == (200, None), report
    assert (me["status"], me["error"]) == (401, "invalid_token"), me  # a token for the reports API
    _copies_are_refused(apis, apis.report, tokens["access_token"], report["proof"])

    thief = _private_jwk(ec.generate_private_key(ec.SECP256R1()))
    (stolen,) = apis.fetch(rp, tokens["access_token"], thief, apis.report)
    assert (stolen["status"], stolen["error"]) == (401, "invalid_dpop_proof"), stolen
