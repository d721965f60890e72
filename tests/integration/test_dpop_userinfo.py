"""DPoP (RFC 9449 section 7) at the issuer's `/userinfo`: a DPoP-bound token is used with its proof, never as a bearer token."""

from __future__ import annotations

import secrets
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.test_dpop_issuer import _bound, _code, _endpoint, _exchange, _query
from tests.support.dpop import make_proof
from tests.support.stack import Stack


def _bound_openid_token(stack: Stack, key: ec.EllipticCurvePrivateKey) -> str:
    """Return an access token with `openid` bound to `key`, from the code flow of the web client."""
    verifier = secrets.token_urlsafe(48)
    code = _query(_code(stack, verifier, scope="openid profile email"))["code"]
    response = _exchange(stack, code, verifier, make_proof(key, "POST", _endpoint(stack)))
    _bound(response, key)
    token: str = response.json()["access_token"]
    return token


def _userinfo(stack: Stack, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{stack.issuer_url}/userinfo", headers=headers, timeout=10)


def _proof(stack: Stack, key: ec.EllipticCurvePrivateKey, token: str, **overrides: Any) -> str:
    return make_proof(key, "GET", f"{stack.public_issuer}/userinfo", token, **overrides)


def test_userinfo_answers_a_dpop_bound_token_sent_with_its_proof(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = _bound_openid_token(stack, key)
    answer = _userinfo(stack, {"Authorization": f"DPoP {token}", "DPoP": _proof(stack, key, token)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == stack.user_id("alice")
    assert answer.json()["email"] == "alice@example.com"


def test_userinfo_refuses_a_dpop_bound_token_without_its_key(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = _bound_openid_token(stack, key)
    thief = ec.generate_private_key(ec.SECP256R1())
    replayed = _proof(stack, key, token)
    assert _userinfo(stack, {"Authorization": f"DPoP {token}", "DPoP": replayed}).status_code == 200
    refusals = {
        "as a bearer token": {"Authorization": f"Bearer {token}"},
        "without a proof": {"Authorization": f"DPoP {token}"},
        "with another key's proof": {"Authorization": f"DPoP {token}", "DPoP": _proof(stack, thief, token)},
        "with a replayed proof": {"Authorization": f"DPoP {token}", "DPoP": replayed},
        "with a proof for another URL": {
            "Authorization": f"DPoP {token}",
            "DPoP": make_proof(key, "GET", f"{stack.public_issuer}/token", token),
        },
        "with a proof for another token": {
            "Authorization": f"DPoP {token}",
            "DPoP": _proof(stack, key, token, ath="x" * 43),
        },
    }
    for case, headers in refusals.items():
        answer = _userinfo(stack, headers)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("DPoP "), (case, answer.headers)
        assert "sub" not in answer.json(), case


def test_userinfo_asks_for_the_issuers_nonce_when_nonces_are_on(nonce_stack: Stack) -> None:
    stack = nonce_stack
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = secrets.token_urlsafe(48)
    code = _query(_code(stack, verifier, scope="openid profile"))["code"]
    first = _exchange(stack, code, verifier, make_proof(key, "POST", _endpoint(stack)))
    assert first.json()["error"] == "use_dpop_nonce", first.text
    nonce = first.headers["DPoP-Nonce"]
    answer = _exchange(stack, code, verifier, make_proof(key, "POST", _endpoint(stack), nonce=nonce))
    _bound(answer, key)
    token = answer.json()["access_token"]

    asked = _userinfo(stack, {"Authorization": f"DPoP {token}", "DPoP": _proof(stack, key, token)})
    assert asked.status_code == 401, asked.text
    assert 'error="use_dpop_nonce"' in asked.headers["WWW-Authenticate"]
    nonce = asked.headers["DPoP-Nonce"]
    answer = _userinfo(stack, {"Authorization": f"DPoP {token}", "DPoP": _proof(stack, key, token, nonce=nonce)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == stack.user_id("alice")
