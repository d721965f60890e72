"""Unit tests for jwt_verifier.fastapi: a real ASGI app on uvicorn, keys from a real JWKS server."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI

from jwt_verifier import VerifierConfig
from jwt_verifier.fastapi import BearerAuth, Claims, protection, require_scope
from tests.support.asgi import serve_asgi
from tests.support.fakes import JwksServer
from tests.support.orders_api import AUDIENCE, RESOURCE, fastapi_app, orders_config
from tests.support.threads import on_a_loop
from tests.support.tokens import ISSUER, kid_of, make_claims, new_rsa_key, sign

METADATA_URL = f"{RESOURCE}/.well-known/oauth-protected-resource"
METADATA = f'resource_metadata="{METADATA_URL}"'

Serve = Callable[..., str]


@pytest.fixture
def serve(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> Iterator[Serve]:
    """Serve tiny apps on uvicorn, keys from the test JWKS server (which publishes `rsa_key`)."""
    jwks_server.serve_keys(rsa_key)
    stack: list[Any] = []

    def serve(**options: Any) -> str:
        app = fastapi_app(orders_config(jwks_server.url, **options))
        server = serve_asgi(app)
        base_url = server.__enter__()
        stack.append((server, app))
        return base_url

    yield serve
    for server, app in reversed(stack):
        server.__exit__(None, None, None)
        protection(app).close()  # its background threads
        protection(app).jwks.session.close()


def _bearer(key: rsa.RSAPrivateKey, **claims: Any) -> dict[str, str]:
    claims.setdefault("audience", AUDIENCE)
    claims.setdefault("scope", "orders:read")
    return {"Authorization": f"Bearer {sign(make_claims(**claims), key)}"}


def _assert_error(response: requests.Response, status: int, error: str, challenge: str | None) -> None:
    assert response.status_code == status
    assert response.json()["error"] == error
    assert set(response.json()) == {"error", "error_description"}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.get("WWW-Authenticate") == challenge


def test_a_valid_token_yields_its_claims(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    response = requests.get(f"{serve()}/orders", headers=_bearer(rsa_key, sub="alice"), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"sub": "alice"}


def test_no_token_is_401_with_a_bare_challenge(serve: Serve) -> None:
    response = requests.get(f"{serve()}/orders", timeout=10)
    _assert_error(response, 401, "unauthorized", f'Bearer realm="jwt-split", {METADATA}')


def test_a_malformed_token_is_401_invalid_token(serve: Serve) -> None:
    response = requests.get(f"{serve()}/orders", headers={"Authorization": "Bearer not-a-jwt"}, timeout=10)
    _assert_error(
        response,
        401,
        "invalid_token",
        'Bearer realm="jwt-split", error="invalid_token", '
        f'error_description="the token is not a well-formed JWS compact serialization", {METADATA}',
    )


def test_an_expired_token_is_401_invalid_token(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    headers = _bearer(rsa_key, exp=1_700_000_000, iat=1_699_999_700)
    response = requests.get(f"{serve()}/orders", headers=headers, timeout=10)
    _assert_error(
        response,
        401,
        "invalid_token",
        f'Bearer realm="jwt-split", error="invalid_token", error_description="the token has expired", {METADATA}',
    )


def test_a_token_for_another_api_is_401_invalid_token(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    response = requests.get(f"{serve()}/orders", headers=_bearer(rsa_key, audience="other-api"), timeout=10)
    _assert_error(
        response,
        401,
        "invalid_token",
        'Bearer realm="jwt-split", error="invalid_token", '
        f'error_description="the token is not meant for this API (audience)", {METADATA}',
    )


def test_a_forged_signature_is_401_invalid_token(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    forged = sign(make_claims(audience=AUDIENCE, scope="orders:read"), new_rsa_key(), kid=kid_of(rsa_key))
    response = requests.get(f"{serve()}/orders", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    _assert_error(
        response,
        401,
        "invalid_token",
        f'Bearer realm="jwt-split", error="invalid_token", error_description="the token\'s signature is invalid", '
        f"{METADATA}",
    )


def test_an_unknown_key_is_401_invalid_token(serve: Serve) -> None:
    response = requests.get(f"{serve()}/orders", headers=_bearer(new_rsa_key()), timeout=10)
    _assert_error(
        response,
        401,
        "invalid_token",
        'Bearer realm="jwt-split", error="invalid_token", '
        f'error_description="the token was signed with a key the issuer does not publish", {METADATA}',
    )


def test_a_missing_scope_is_403_insufficient_scope(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    response = requests.get(f"{serve()}/orders", headers=_bearer(rsa_key, scope="orders:write"), timeout=10)
    _assert_error(
        response,
        403,
        "insufficient_scope",
        'Bearer realm="jwt-split", error="insufficient_scope", '
        f'error_description="this resource needs the \'orders:read\' scope", scope="orders:read", {METADATA}',
    )


@pytest.mark.parametrize("scope", ["", "profile"])
def test_a_token_with_none_of_the_apis_scopes_is_403_naming_them(
    serve: Serve, rsa_key: rsa.RSAPrivateKey, scope: str
) -> None:
    response = requests.get(f"{serve()}/orders", headers=_bearer(rsa_key, scope=scope), timeout=10)
    _assert_error(
        response,
        403,
        "insufficient_scope",
        'Bearer realm="jwt-split", error="insufficient_scope", '
        "error_description=\"this resource needs the 'orders:read orders:write' scope\", "
        f'scope="orders:read orders:write", {METADATA}',
    )


def test_two_authorization_headers_are_400_invalid_request(serve: Serve, rsa_key: rsa.RSAPrivateKey) -> None:
    url = urlsplit(serve())
    token = _bearer(rsa_key)["Authorization"]
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.putrequest("GET", "/orders")
        connection.putheader("Authorization", token)
        connection.putheader("Authorization", token)
        connection.endheaders()
        answer = connection.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 400
        assert body["error"] == "invalid_request"
        assert answer.getheader("WWW-Authenticate") == (
            'Bearer realm="jwt-split", error="invalid_request", '
            f'error_description="send exactly one Authorization header", {METADATA}'
        )
    finally:
        connection.close()


def test_an_unreachable_issuer_is_503_with_retry_after(
    serve: Serve, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.stop()
    response = requests.get(f"{serve()}/orders", headers=_bearer(rsa_key), timeout=10)
    _assert_error(response, 503, "temporarily_unavailable", None)
    assert response.headers["Retry-After"] == "5"


def test_the_metadata_is_served_at_its_well_known_path(serve: Serve) -> None:
    response = requests.get(f"{serve()}/.well-known/oauth-protected-resource", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["orders:read", "orders:write"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "dpop_bound_access_tokens_required": False,
    }
    assert response.headers["Cache-Control"] == "public, max-age=300"


def test_readiness_is_503_until_keys_are_held(
    serve: Serve, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(500, b"{}")
    base_url = serve()
    response = requests.get(f"{base_url}/readyz", timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    jwks_server.serve_keys(rsa_key)
    response = requests.get(f"{base_url}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_the_openapi_document_names_the_bearer_scheme(serve: Serve) -> None:
    document = requests.get(f"{serve()}/openapi.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["paths"]["/orders"]["get"]["security"] == [{"bearerAuth": []}, {"dpopAuth": []}]
    assert "security" not in document["paths"]["/open"]["get"]


def test_the_openapi_document_names_the_dpop_scheme_and_the_proof_header(serve: Serve) -> None:
    """RFC 9449 section 7.1: `Authorization: DPoP <token>` with a `DPoP` proof header, as the API accepts it."""
    document = requests.get(f"{serve()}/openapi.json", timeout=10).json()
    scheme = document["components"]["securitySchemes"]["dpopAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "DPoP")
    assert "`Authorization: DPoP <token>`" in scheme["description"]
    assert "`DPoP` header" in scheme["description"]


def test_an_api_that_requires_dpop_offers_only_the_dpop_scheme(serve: Serve) -> None:
    base_url = serve(require_dpop=True)
    document = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    assert document["paths"]["/orders"]["get"]["security"] == [{"dpopAuth": []}]
    assert requests.get(f"{base_url}/openapi.json", timeout=10).json() == document  # built once
    assert "security" not in document["paths"]["/open"]["get"]


def test_a_jwks_fetch_never_blocks_the_event_loop(
    serve: Serve, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    base_url = serve()
    jwks_server.hold()  # the first request's fetch waits here, in a worker thread
    answers: list[requests.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(requests.get(f"{base_url}/orders", headers=_bearer(rsa_key), timeout=20))
    )
    waiting.start()
    try:
        jwks_server.wait_for_requests(1)
        # The loop still answers while the fetch is held: it is not running there.
        assert requests.get(f"{base_url}/open", timeout=5).json() == {"status": "ok"}
        assert requests.get(f"{base_url}/orders", timeout=5).status_code == 401
    finally:
        jwks_server.release()
        waiting.join(timeout=20)
    assert answers[0].status_code == 200


class _ThreadRecordingVerifier:
    """A TokenVerifier that may block (introspection, say): it records whether it ran on an event loop."""

    def __init__(self) -> None:
        self.on_loop: list[bool] = []

    def verify(self, token: str) -> dict[str, Any]:
        """Accept any token for alice, noting where it ran."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.on_loop.append(False)
        else:
            self.on_loop.append(True)
        return {"sub": "alice", "scope": "orders:read"}


def test_a_verifier_of_its_own_runs_in_a_worker_thread(jwks_server: JwksServer) -> None:
    app = FastAPI()
    config = VerifierConfig(issuer=ISSUER, audience=AUDIENCE, resource=RESOURCE, jwks_url=jwks_server.url)
    verifier = _ThreadRecordingVerifier()
    BearerAuth(dataclasses.replace(config, jwks_prefetch=False)).init_app(app, verifier=verifier)

    @app.get("/orders")
    async def orders(claims: Annotated[Claims, Depends(require_scope("orders:read"))]) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    try:
        with serve_asgi(app) as base_url:
            response = requests.get(f"{base_url}/orders", headers={"Authorization": "Bearer opaque"}, timeout=10)
        assert response.json() == {"sub": "alice"}
        assert verifier.on_loop == [False]
    finally:
        protection(app).close()  # its background threads
        protection(app).jwks.session.close()


def test_the_protector_called_on_a_loop_outside_the_integrations_check_fetches_the_keys(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Only `require_scope`'s check on the loop hands a fetch to a worker thread; any other caller
    # (a WebSocket route's own check, a thread where a tool left a loop running) fetches the keys.
    jwks_server.serve_keys(rsa_key)
    found = BearerAuth(orders_config(jwks_server.url)).init_app(FastAPI())
    token = sign(make_claims(audience=AUDIENCE, scope="orders:read", sub="alice"), rsa_key)
    claims: list[Claims] = []

    async def elsewhere_on_a_loop() -> None:
        claims.append(found.protector.authenticate([f"Bearer {token}"], None, "orders:read"))

    try:
        on_a_loop(elsewhere_on_a_loop)
    finally:
        found.close()  # its background threads
        found.jwks.session.close()
    assert claims[0]["sub"] == "alice"
    assert jwks_server.request_count == 1
