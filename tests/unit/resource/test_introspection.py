"""Unit tests for resource_server.introspection: verifying tokens by asking a real issuer (RFC 7662)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from issuer.keys import KeyStore
from issuer.settings import IntrospectionSettings
from issuer.tokens import Grant, mint_access_token
from jwt_verifier import VerifierConfig
from jwt_verifier.errors import InvalidToken, TokenExpired, VerificationUnavailable
from resource_server.introspection import IntrospectingVerifier, IntrospectionUnavailable
from resource_server.settings import ResourceSettings
from tests.support.fakes import JwksServer, LiveIssuer, finishes_within
from tests.support.tokens import make_claims, new_rsa_key, sign

SECRET = "introspection-secret-" + "x" * 20


@pytest.fixture
def issuer(live_issuer: LiveIssuer) -> LiveIssuer:
    live_issuer.app.extensions["issuer.introspection"] = IntrospectionSettings(secret=SECRET)
    return live_issuer


def _verifier(url: str, issuer: str, *, secret: str = SECRET, **options: Any) -> IntrospectingVerifier:
    verifier_options = {name: options.pop(name) for name in ("max_token_bytes", "leeway") if name in options}
    settings = ResourceSettings(
        verifier=VerifierConfig(
            issuer=issuer, audience="jwt-split-api", resource="http://localhost:8001", **verifier_options
        ),
        verification="introspection",
        introspection_url=f"{url}/introspect",
        introspection_client_id="resource-api",
        introspection_secret=secret,
        **({"issuer_timeout": 2.0} | options),
    )
    return IntrospectingVerifier(settings)


@pytest.fixture
def verifier(issuer: LiveIssuer) -> IntrospectingVerifier:
    return _verifier(issuer.url, issuer.settings.url)


def _mint(issuer: LiveIssuer, username: str = "alice", **kwargs: Any) -> str:
    keys: KeyStore = issuer.app.extensions["issuer"].keys
    user = issuer.app.extensions["issuer"].users.get(username)
    options: dict[str, Any] = {"issuer": issuer.settings.url, "audience": issuer.settings.audience, "ttl": 600}
    token, _ = mint_access_token(keys.signing_key(), Grant(user.id, username, "cli", "profile"), **(options | kwargs))
    return token


def test_active_token_gives_its_claims(verifier: IntrospectingVerifier, issuer: LiveIssuer) -> None:
    claims = verifier.verify(_mint(issuer))
    assert claims["sub"] == issuer.app.extensions["issuer"].users.get("alice").id
    assert claims["preferred_username"] == "alice"
    assert claims["scope"] == "profile"
    assert "active" not in claims
    assert "token_type" not in claims


def test_forged_token_is_invalid(verifier: IntrospectingVerifier, issuer: LiveIssuer) -> None:
    kid = issuer.app.extensions["issuer"].keys.signing_key().kid
    with pytest.raises(InvalidToken, match="not active"):
        verifier.verify(sign(make_claims(issuer=issuer.settings.url), new_rsa_key(), kid=kid))


def test_expired_token_raises_token_expired(verifier: IntrospectingVerifier, issuer: LiveIssuer) -> None:
    with pytest.raises(TokenExpired):
        verifier.verify(_mint(issuer, now=int(time.time()) - 3600))


def test_garbage_is_invalid_not_expired(verifier: IntrospectingVerifier) -> None:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify("not.a.token")
    assert not isinstance(caught.value, TokenExpired)


def test_oversized_token_is_refused_without_asking(issuer: LiveIssuer) -> None:
    verifier = _verifier("http://127.0.0.1:9", issuer.settings.url, max_token_bytes=512)
    with pytest.raises(InvalidToken, match="larger than 512"):
        verifier.verify("x" * 513)


def test_active_token_for_another_issuer_is_refused(issuer: LiveIssuer) -> None:
    verifier = _verifier(issuer.url, "https://someone-else.example")
    with pytest.raises(InvalidToken, match="not meant for this API"):
        verifier.verify(_mint(issuer))


def test_wrong_secret_is_a_503_problem_not_a_401(issuer: LiveIssuer) -> None:
    verifier = _verifier(issuer.url, issuer.settings.url, secret="wrong-" + SECRET)
    with pytest.raises(IntrospectionUnavailable, match="HTTP 401"):
        verifier.verify(_mint(issuer))


def test_unreachable_issuer_is_unavailable(issuer: LiveIssuer, dead_url: str) -> None:
    verifier = _verifier(dead_url.rsplit("/.well-known", 1)[0], issuer.settings.url)
    with pytest.raises(VerificationUnavailable):  # the API answers 503 for these
        verifier.verify(_mint(issuer))


@pytest.mark.parametrize(
    "body",
    [b"[" * 20_000 + b"]" * 20_000, b'{"active": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", b"\xff"],
    ids=["nested", "nested-member", "not-utf8"],
)
def test_hostile_introspection_answer_is_unavailable_not_a_crash(jwks_server: JwksServer, body: bytes) -> None:
    jwks_server.answer(200, body)
    verifier = _verifier(jwks_server.base_url, "http://issuer.test")
    with pytest.raises(IntrospectionUnavailable):
        verifier.verify(sign(make_claims(), new_rsa_key()))


@pytest.mark.parametrize("part", ["headers", "body"])
def test_introspection_answer_trickling_in_is_unavailable_within_the_timeout(
    jwks_server: JwksServer, part: str
) -> None:
    jwks_server.answer(200, b'{"active": false, "padding": "' + b"x" * 200 + b'"}')
    jwks_server.trickle_in(part)
    verifier = _verifier(jwks_server.base_url, "http://issuer.test", issuer_timeout=1.0)
    token = sign(make_claims(), new_rsa_key())
    with pytest.raises(IntrospectionUnavailable):
        finishes_within(3, jwks_server, lambda: verifier.verify(token))
