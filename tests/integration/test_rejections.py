"""Every unacceptable token gets 401 with the RFC 6750 challenge, over HTTP, never a 500."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.stack import Stack
from tests.support.tokens import compact, forge_hs256, make_claims, new_rsa_key, public_pem, sign

Forger = Callable[[Stack, str, rsa.RSAPrivateKey], str]


def _claims(stack: Stack, **overrides: Any) -> dict[str, Any]:
    return make_claims(issuer=stack.public_issuer, **overrides)


def _tampered(stack: Stack, kid: str, key: rsa.RSAPrivateKey) -> str:
    header, _, signature = sign(_claims(stack, scope="profile"), key, kid=kid).split(".")
    _, payload, _ = sign(_claims(stack, scope="profile admin"), key, kid=kid).split(".")
    return f"{header}.{payload}.{signature}"


FORGERIES: dict[str, Forger] = {
    "malformed": lambda stack, kid, key: "not-a-jwt",
    "two segments": lambda stack, kid, key: "eyJhbGciOiJSUzI1NiJ9.e30",
    "tampered payload": _tampered,
    "expired": lambda stack, kid, key: sign(
        _claims(stack, iat=int(time.time()) - 3600, exp=int(time.time()) - 600), key, kid=kid
    ),
    "wrong issuer": lambda stack, kid, key: sign(make_claims(issuer="https://evil.example"), key, kid=kid),
    "wrong audience": lambda stack, kid, key: sign(_claims(stack, aud="another-api"), key, kid=kid),
    "typ JWT": lambda stack, kid, key: sign(_claims(stack), key, kid=kid, typ="JWT"),
    "no typ": lambda stack, kid, key: sign(_claims(stack), key, kid=kid, typ=None),
    "alg none": lambda stack, kid, key: compact({"alg": "none", "typ": "at+jwt", "kid": kid}, _claims(stack)),
    "HS256 with the public key": lambda stack, kid, key: forge_hs256(_claims(stack), public_pem(key), kid),
    "signed by another key with the real kid": lambda stack, kid, key: sign(_claims(stack), new_rsa_key(), kid=kid),
    "unknown kid": lambda stack, kid, key: sign(_claims(stack), key, kid="no-such-key"),
    "missing sub": lambda stack, kid, key: sign(_claims(stack, sub=None), key, kid=kid),
}


@pytest.fixture(scope="module")
def issuer_key(stack: Stack) -> tuple[str, rsa.RSAPrivateKey]:
    """The issuer's real signing key: claim checks must hold even for genuinely signed tokens."""
    return stack.active_private_key()


@pytest.mark.parametrize("case", FORGERIES)
def test_unacceptable_token_gets_401_invalid_token(
    stack: Stack, issuer_key: tuple[str, rsa.RSAPrivateKey], case: str
) -> None:
    kid, key = issuer_key
    response = stack.get("/api/me", FORGERIES[case](stack, kid, key))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jwt-split"')
    assert 'error="invalid_token"' in challenge


def test_request_without_token_gets_challenge_without_error_code(stack: Stack) -> None:
    response = stack.get("/api/me")
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    # RFC 9728 section 5.1: the challenge names the API's metadata, and nothing else but the realm.
    assert re.fullmatch(
        r'Bearer realm="jwt-split", resource_metadata="[^"]+/\.well-known/oauth-protected-resource"', challenge
    )


def test_the_api_publishes_its_protected_resource_metadata(stack: Stack) -> None:
    response = stack.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    document = response.json()
    assert document["bearer_methods_supported"] == ["header"]
    assert len(document["authorization_servers"]) == 1
    challenge = stack.get("/api/me").headers["WWW-Authenticate"]
    assert f'resource_metadata="{document["resource"]}/.well-known/oauth-protected-resource"' in challenge


def test_properly_signed_token_is_accepted_so_rejections_above_are_about_the_forgery(
    stack: Stack, issuer_key: tuple[str, rsa.RSAPrivateKey]
) -> None:
    kid, key = issuer_key
    assert stack.get("/api/me", sign(_claims(stack), key, kid=kid)).status_code == 200
