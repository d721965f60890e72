"""Property-based fuzzing: whatever arrives, no exception escapes as a 500.

The verifier is fuzzed in-process (it must only ever raise its own refusals); the token,
revocation and login endpoints and the resource API are fuzzed through the Flask test client
with random bytes, random JSON and random forms.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import issuer
import resource_server
from issuer.settings import IssuerSettings
from jwt_verifier import VerifierConfig
from jwt_verifier.jose import b64url_encode
from jwt_verifier.jwks import KeysUnavailable, UnknownKey
from jwt_verifier.verifier import InvalidToken, Verifier
from resource_server.settings import ResourceSettings
from tests.support.tokens import kid_of, make_claims, new_rsa_key, sign

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
header_names = st.sampled_from(["alg", "typ", "kid", "crit", "b64", "jku", "jwk", "x5c", "x5u", "cty", "enc", "zip"])
claim_names = st.sampled_from(["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id"])


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


class StaticKeys:
    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.kid = kid_of(key)
        self.key = key.public_key()

    def get(self, kid: str) -> rsa.RSAPublicKey:
        if kid != self.kid:
            raise UnknownKey(kid)
        return self.key


@pytest.fixture(scope="module")
def verifier(key: rsa.RSAPrivateKey) -> Verifier:
    return Verifier(StaticKeys(key), issuer="http://localhost:8000", audience="jwt-split-api")


def _refuses_cleanly(verifier: Verifier, token: str) -> None:
    """Verify, letting only the verifier's own refusals pass: anything else fails the test."""
    with contextlib.suppress(InvalidToken, UnknownKey, KeysUnavailable):
        verifier.verify(token)


@FUZZ
@given(st.text(max_size=300))
def test_verifier_survives_random_text(verifier: Verifier, token: str) -> None:
    _refuses_cleanly(verifier, token)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=64))
def test_verifier_survives_random_segments(verifier: Verifier, header: bytes, payload: bytes, signature: bytes) -> None:
    _refuses_cleanly(verifier, ".".join(b64url_encode(part) for part in (header, payload, signature)))


@FUZZ
@given(st.dictionaries(header_names, json_values, max_size=6), st.dictionaries(claim_names, json_values, max_size=9))
def test_verifier_survives_random_json_headers_and_claims(
    verifier: Verifier, header: dict[str, Any], claims: dict[str, Any]
) -> None:
    parts = [json.dumps(part, allow_nan=True).encode() for part in (header, claims)]
    _refuses_cleanly(verifier, ".".join(b64url_encode(part) for part in parts) + ".c2ln")


@FUZZ
@given(st.dictionaries(claim_names, json_values, max_size=9))
def test_verifier_survives_genuinely_signed_random_claims(
    verifier: Verifier, key: rsa.RSAPrivateKey, overrides: dict[str, Any]
) -> None:
    """Even the key holder cannot crash the verifier with odd claim values."""
    claims = {**make_claims(), **overrides}
    try:
        token = sign(claims, key)
    except (TypeError, ValueError):
        return  # PyJWT will not even encode it
    _refuses_cleanly(verifier, token)


# -- HTTP endpoints through the test client ------------------------------------------------


@pytest.fixture(scope="module")
def issuer_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    data_dir: Path = tmp_path_factory.mktemp("fuzz-issuer")
    return issuer.create_app(
        IssuerSettings(
            data_dir=data_dir,
            argon2_time_cost=1,
            argon2_memory_kib=8192,
            demo_users="alice:wonderland:profile admin",
            login_rate_limit="100000 per minute",
            address_rate_limit="100000 per minute",
        )
    )


@pytest.fixture(scope="module")
def issuer_client(issuer_app: Flask) -> FlaskClient:
    return issuer_app.test_client()


form_fields = st.dictionaries(
    st.sampled_from(
        [
            "grant_type",
            "username",
            "password",
            "scope",
            "client_id",
            "refresh_token",
            "code",
            "redirect_uri",
            "code_verifier",
            "token",
            "token_type_hint",
            "csrf_token",
        ]
    )
    | st.text(max_size=10),
    st.text(max_size=80),
    max_size=8,
)
grant_types = st.sampled_from(["password", "refresh_token", "authorization_code", "client_credentials", "", "x"])


@FUZZ
@given(form_fields, grant_types)
def test_token_endpoint_never_fails_with_a_server_error(
    issuer_client: FlaskClient, form: dict[str, str], grant_type: str
) -> None:
    response = issuer_client.post("/token", data={"grant_type": grant_type, **form})
    assert response.status_code < 500
    assert response.is_json
    assert "error" in response.get_json() or response.status_code == 200


@FUZZ
@given(
    st.binary(max_size=400),
    st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain", ""]),
)
def test_token_endpoint_survives_random_bodies(issuer_client: FlaskClient, body: bytes, content_type: str) -> None:
    response = issuer_client.post("/token", data=body, content_type=content_type)
    assert 400 <= response.status_code < 500


@FUZZ
@given(form_fields)
def test_revocation_endpoint_never_fails_with_a_server_error(issuer_client: FlaskClient, form: dict[str, str]) -> None:
    assert issuer_client.post("/revoke", data=form).status_code < 500


@FUZZ
@given(form_fields)
def test_login_form_never_fails_with_a_server_error(issuer_client: FlaskClient, form: dict[str, str]) -> None:
    page = issuer_client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    response = issuer_client.post("/login", data={**form, "csrf_token": match.group(1)})
    assert response.status_code < 500


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"]
        ),
        st.text(max_size=60),
    )
)
def test_authorize_never_fails_with_a_server_error(issuer_client: FlaskClient, query: dict[str, str]) -> None:
    assert issuer_client.get("/authorize", query_string=query).status_code < 500


@pytest.fixture(scope="module")
def resource_client() -> FlaskClient:
    app = resource_server.create_app(
        ResourceSettings(
            verifier=VerifierConfig(
                issuer="http://localhost:8000",
                audience="jwt-split-api",
                resource="http://localhost:8001",
                jwks_url="http://127.0.0.1:9/jwks.json",
                jwks_prefetch=False,
                jwks_timeout=0.2,
            )
        )
    )
    return app.test_client()


@FUZZ
@given(st.text(max_size=200).filter(lambda v: "\n" not in v and "\r" not in v))
def test_resource_api_never_fails_with_a_server_error(resource_client: FlaskClient, value: str) -> None:
    for header in (value, f"Bearer {value}"):
        response = resource_client.get("/api/me", headers={"Authorization": header})
        assert response.status_code in {400, 401, 503}
