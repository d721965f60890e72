"""Unit tests for resource_server.oidc: the ID token rules, with keys from a real JWKS server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier import JwksClient, KeysUnavailable, VerifierConfig
from resource_server.oidc import IdTokenRefused, RelyingParty
from tests.support.fakes import JwksServer
from tests.support.tokens import (
    AUDIENCE,
    ID_NONCE,
    ISSUER,
    at_hash,
    compact,
    forge_hs256,
    kid_of,
    make_id_claims,
    public_pem,
    sign_id,
)

CLIENT_ID = "resource-web"
NONCE = ID_NONCE
ACCESS_TOKEN = "header.payload.signature-of-the-access-token"


def id_claims(**overrides: Any) -> dict[str, Any]:
    """Return valid ID token claims for ACCESS_TOKEN with these overrides."""
    return make_id_claims(ACCESS_TOKEN, **overrides)


def _keys(jwks_server: JwksServer) -> JwksClient:
    config = VerifierConfig(
        issuer=ISSUER,
        audience=AUDIENCE,
        resource="http://localhost:8001",
        jwks_url=jwks_server.url,
        jwks_timeout=0.5,
        jwks_cooldown=0.0,
    )
    return JwksClient(config)


@pytest.fixture
def relying_party(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> Iterator[RelyingParty]:
    """A relying party of `resource-web` whose issuer publishes `rsa_key`."""
    jwks_server.serve_keys(rsa_key)
    keys = _keys(jwks_server)
    yield RelyingParty(issuer=ISSUER, client_id=CLIENT_ID, keys=keys, leeway=30, max_token_bytes=8192)
    keys.session.close()


def test_a_valid_id_token_gives_its_claims(relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = relying_party.validate(sign_id(id_claims(), rsa_key), access_token=ACCESS_TOKEN, nonce=NONCE)
    assert (claims["sub"], claims["name"], claims["email"]) == ("alice", "Alice", "alice@example.com")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"nonce": "another-login"}, "its nonce does not match this login"),
        ({"nonce": None}, "its nonce does not match this login"),
        ({"aud": "another-client"}, "it was issued to another client"),
        ({"aud": ["another-client"]}, "it was issued to another client"),
        ({"azp": "another-client"}, "it was issued to another client"),
        ({"iss": "http://evil.test"}, "it comes from another issuer"),
        ({"at_hash": at_hash("another access token")}, "it does not belong to the access token it came with"),
        ({"at_hash": None}, "it does not belong to the access token it came with"),
        ({"sub": None}, "it names no user"),
        ({"sub": ""}, "it names no user"),
        ({"exp": int(time.time()) - 120}, "the ID token has expired"),
        ({"iat": None}, "its claims are not valid"),
        ({"exp": "tomorrow"}, "its claims are not valid"),
    ],
    ids=[
        "wrong-nonce",
        "no-nonce",
        "wrong-aud",
        "wrong-aud-list",
        "wrong-azp",
        "wrong-iss",
        "bad-at-hash",
        "no-at-hash",
        "no-sub",
        "empty-sub",
        "expired",
        "no-iat",
        "exp-not-a-number",
    ],
)
def test_an_id_token_breaking_a_rule_is_refused_with_the_reason(
    relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any], reason: str
) -> None:
    token = sign_id(id_claims(**overrides), rsa_key)
    with pytest.raises(IdTokenRefused, match=reason):
        relying_party.validate(token, access_token=ACCESS_TOKEN, nonce=NONCE)


def test_an_id_token_signed_by_another_key_under_our_kid_is_refused(
    relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign_id(id_claims(), other_rsa_key, kid=kid_of(rsa_key))
    with pytest.raises(IdTokenRefused, match="signature or encoding is not valid"):
        relying_party.validate(token, access_token=ACCESS_TOKEN, nonce=NONCE)


def test_an_id_token_of_a_key_the_issuer_does_not_publish_is_refused(
    relying_party: RelyingParty, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(IdTokenRefused, match="a key the issuer does not publish"):
        relying_party.validate(sign_id(id_claims(), other_rsa_key), access_token=ACCESS_TOKEN, nonce=NONCE)


def test_an_access_token_is_never_an_id_token(relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_id(id_claims(), rsa_key, typ="at+jwt")
    with pytest.raises(IdTokenRefused, match="its type is not JWT"):
        relying_party.validate(token, access_token=ACCESS_TOKEN, nonce=NONCE)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        "ä.b.c",
        "x" * 9000,
        compact({"alg": "none", "typ": "JWT"}, id_claims()),
        compact({"alg": "RS256", "typ": "JWT"}, id_claims(), b"sig"),  # no kid
        compact({"alg": "RS256", "typ": "JWT", "kid": 7}, id_claims(), b"sig"),
        compact({"alg": "RS256", "typ": ["JWT"], "kid": "k"}, id_claims(), b"sig"),
    ],
    ids=["empty", "one-part", "garbage", "non-ascii", "huge", "alg-none", "no-kid", "kid-not-a-string", "typ-list"],
)
def test_malformed_id_tokens_are_refused_never_an_error(relying_party: RelyingParty, token: str) -> None:
    with pytest.raises(IdTokenRefused):
        relying_party.validate(token, access_token=ACCESS_TOKEN, nonce=NONCE)


def test_an_hs256_forgery_with_the_public_key_as_secret_is_refused(
    relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey
) -> None:
    forged = forge_hs256(id_claims(), public_pem(rsa_key), kid_of(rsa_key))
    with pytest.raises(IdTokenRefused):
        relying_party.validate(forged, access_token=ACCESS_TOKEN, nonce=NONCE)


def test_a_refreshed_id_token_needs_no_nonce_but_the_same_subject(
    relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey
) -> None:
    refreshed = sign_id(id_claims(nonce=None), rsa_key)
    assert relying_party.validate(refreshed, access_token=ACCESS_TOKEN, nonce=None, subject="alice")["sub"] == "alice"
    other = sign_id(id_claims(nonce=None, sub="mallory"), rsa_key)
    with pytest.raises(IdTokenRefused, match="names no user, or another one"):
        relying_party.validate(other, access_token=ACCESS_TOKEN, nonce=None, subject="alice")


def test_unavailable_keys_are_a_503_not_a_refusal(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.answer(503, b"down", {"Content-Type": "text/plain"})
    keys = _keys(jwks_server)
    relying_party = RelyingParty(issuer=ISSUER, client_id=CLIENT_ID, keys=keys, leeway=30, max_token_bytes=8192)
    try:
        with pytest.raises(KeysUnavailable):
            relying_party.validate(sign_id(id_claims(), rsa_key), access_token=ACCESS_TOKEN, nonce=NONCE)
    finally:
        keys.session.close()


def test_a_stored_id_token_is_read_past_its_expiry_but_only_for_its_subject(
    relying_party: RelyingParty, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    expired = sign_id(id_claims(exp=int(time.time()) - 3600), rsa_key)
    assert relying_party.read(expired, "alice")["name"] == "Alice"
    with pytest.raises(IdTokenRefused):
        relying_party.read(expired, "bob")
    with pytest.raises(IdTokenRefused):
        relying_party.read(sign_id(id_claims(), other_rsa_key, kid=kid_of(rsa_key)), "alice")
    with pytest.raises(IdTokenRefused):
        relying_party.read(sign_id(id_claims(aud="another-client"), rsa_key), "alice")
    with pytest.raises(IdTokenRefused):
        relying_party.read(sign_id(id_claims(iss="http://evil.test"), rsa_key), "alice")
