"""A service's own tokens bound to its DPoP key, from a real issuer on loopback that asks for nonces."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from issuer import create_app, extensions
from issuer.clients import Client
from issuer.settings import IssuerSettings
from shared.dpop_client import DPoPKey
from shared.oauth_client import ServiceTokens
from tests.support.fakes import CountingApp, WsgiServer
from tests.support.tokens import jwks_json

API = "jwt-split-api"
CLIENT_ID = "billing-job"
# The issuer's identifier: not the URL the service reaches it at (as inside compose).
PUBLIC_ISSUER = "http://issuer.public.test"


@pytest.fixture
def issuer(issuer_settings: IssuerSettings, other_rsa_key: rsa.RSAPrivateKey) -> Iterator[tuple[str, CountingApp]]:
    """An issuer reached on loopback, known as PUBLIC_ISSUER, whose proofs need its nonce; `billing-job` registered."""
    server = WsgiServer()
    app = create_app(dataclasses.replace(issuer_settings, url=PUBLIC_ISSUER, dpop_nonce=True))
    counter = CountingApp(app)
    server.mount(counter)
    extensions.of(app).clients.add(
        Client(
            CLIENT_ID,
            frozenset({"client_credentials"}),
            scopes=frozenset({"profile"}),
            audiences=frozenset({API}),
            auth_method="private_key_jwt",
            jwks=jwks_json(other_rsa_key),
        )
    )
    yield server.base_url, counter
    server.stop()


def service_tokens(internal_url: str, key: rsa.RSAPrivateKey, dpop: DPoPKey | None) -> ServiceTokens:
    return ServiceTokens(
        client_id=CLIENT_ID,
        key=key,
        token_url=f"{internal_url}/token",
        issuer=PUBLIC_ISSUER,
        resource=API,
        scope="profile",
        timeout=5.0,
        dpop=dpop,
    )


def test_the_token_is_bound_to_the_services_key_after_one_retry_with_the_issuers_nonce(
    issuer: tuple[str, CountingApp], other_rsa_key: rsa.RSAPrivateKey
) -> None:
    url, counter = issuer
    dpop = DPoPKey(ec.generate_private_key(ec.SECP256R1()))
    tokens = service_tokens(url, other_rsa_key, dpop)
    try:
        token = tokens.token()  # its proof names PUBLIC_ISSUER's /token, the only htu the issuer accepts
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["cnf"] == {"jkt": dpop.jkt}
        assert counter.count("/token") == 2  # refused for want of a nonce, then accepted with it
        tokens.forget(token)
        assert jwt.decode(tokens.token(), options={"verify_signature": False})["cnf"] == {"jkt": dpop.jkt}
        assert counter.count("/token") == 3  # the nonce it was given is used at once
    finally:
        tokens.session.close()


def test_without_a_dpop_key_the_token_is_a_bearer_token(
    issuer: tuple[str, CountingApp], other_rsa_key: rsa.RSAPrivateKey
) -> None:
    url, _ = issuer
    tokens = service_tokens(url, other_rsa_key, None)
    try:
        assert "cnf" not in jwt.decode(tokens.token(), options={"verify_signature": False})
    finally:
        tokens.session.close()
