"""DPoP (RFC 9449) end to end through jwt_verifier.flask and jwt_verifier.fastapi, with self-signed tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends
from flask import Flask
from flask.testing import FlaskClient
from requests.structures import CaseInsensitiveDict

from jwt_verifier import VerifierConfig
from jwt_verifier.fastapi import Claims, require_scope
from jwt_verifier.fastapi import protection as fastapi_protection
from jwt_verifier.flask import BearerAuth as FlaskAuth
from jwt_verifier.flask import protection as flask_protection
from shared.asgi_head import HeadAsGet
from tests.support.asgi import serve_asgi
from tests.support.dpop import make_proof, thumbprint
from tests.support.fakes import JwksServer
from tests.support.orders_api import AUDIENCE, RESOURCE, fastapi_app, flask_app, orders_config
from tests.support.tokens import make_claims, sign

URL = f"{RESOURCE}/orders"
METADATA = f'resource_metadata="{RESOURCE}/.well-known/oauth-protected-resource"'
ALGS = 'algs="ES256 RS256 PS256 EdDSA"'


class Response:
    """What the tests read of a response, from Flask's test client or from requests (headers case-insensitive)."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


Call = Callable[..., Response]
Make = Callable[..., Call]


def _config(jwks_server: JwksServer, tmp_path: Path, options: dict[str, Any]) -> VerifierConfig:
    return orders_config(jwks_server.url, **{"dpop_replay_path": str(tmp_path / "replay.sqlite3"), **options})


@pytest.fixture(params=["flask", "fastapi"])
def make_api(
    request: pytest.FixtureRequest, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[Make]:
    """Build the README's tiny API in either framework; return a way to GET /orders (or the metadata)."""
    jwks_server.serve_keys(rsa_key)
    cleanup: list[Callable[[], object]] = []

    def make(**options: Any) -> Call:
        config = _config(jwks_server, tmp_path, options)
        if request.param == "flask":
            app: Flask = flask_app(config)
            client: FlaskClient = app.test_client()
            cleanup.append(flask_protection(app).jwks.session.close)

            def call_flask(headers: dict[str, str], path: str = "/orders") -> Response:
                answer = client.get(path, headers=headers)
                return Response(answer.status_code, answer.get_json(), CaseInsensitiveDict(answer.headers.items()))

            return call_flask
        api = fastapi_app(config)
        server = serve_asgi(api)
        base_url = server.__enter__()
        cleanup.append(lambda: server.__exit__(None, None, None))
        cleanup.append(fastapi_protection(api).jwks.session.close)

        def call_fastapi(headers: dict[str, str], path: str = "/orders") -> Response:
            answer = requests.get(base_url + path, headers=headers, timeout=10)
            return Response(answer.status_code, answer.json(), answer.headers)

        return call_fastapi

    yield make
    for step in reversed(cleanup):
        step()


def _bound_token(rsa_key: rsa.RSAPrivateKey, key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    claims.setdefault("scope", "orders:read")
    return sign(make_claims(audience=AUDIENCE, cnf={"jkt": thumbprint(key)}, **claims), rsa_key)


def _dpop(token: str, proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def _refused(response: Response, status: int, error: str, challenge: str) -> None:
    assert response.status == status
    assert response.body["error"] == error
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.headers["Cache-Control"] == "no-store"


def test_a_bound_token_with_its_proof_is_accepted(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    call = make_api()
    token = _bound_token(rsa_key, ec_key)
    response = call(_dpop(token, make_proof(ec_key, "GET", URL, token)))
    assert (response.status, response.body) == (200, {"sub": "alice"})
    # The proof is for the public URL, whatever the query: the API behind a proxy checks that one.
    assert call(_dpop(token, make_proof(ec_key, "GET", URL + "?page=2", token))).status == 200


def test_a_replayed_proof_is_refused(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    call = make_api()
    token = _bound_token(rsa_key, ec_key)
    headers = _dpop(token, make_proof(ec_key, "GET", URL, token))
    assert call(headers).status == 200
    response = call(headers)
    description = 'error_description="the DPoP proof was already used"'
    _refused(
        response,
        401,
        "invalid_dpop_proof",
        f'DPoP realm="jwt-split", error="invalid_dpop_proof", {description}, {METADATA}, {ALGS}',
    )


def test_a_proof_for_another_api_is_refused(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = _bound_token(rsa_key, ec_key)
    response = make_api()(_dpop(token, make_proof(ec_key, "GET", "https://reports.example/orders", token)))
    assert (response.status, response.body["error"]) == (401, "invalid_dpop_proof")


def test_a_stolen_token_with_the_thiefs_proof_is_refused(
    make_api: Make,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    other_ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    token = _bound_token(rsa_key, ec_key)
    response = make_api()(_dpop(token, make_proof(other_ec_key, "GET", URL, token)))
    assert (response.status, response.body["error"]) == (401, "invalid_dpop_proof")


def test_a_proof_for_another_token_is_refused(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token, other = _bound_token(rsa_key, ec_key), _bound_token(rsa_key, ec_key)
    response = make_api()(_dpop(token, make_proof(ec_key, "GET", URL, other)))
    assert (response.status, response.body["error"]) == (401, "invalid_dpop_proof")


def test_the_dpop_scheme_without_a_proof_is_refused(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = _bound_token(rsa_key, ec_key)
    response = make_api()({"Authorization": f"DPoP {token}"})
    assert (response.status, response.body["error"]) == (401, "invalid_dpop_proof")


def test_a_bound_token_sent_as_bearer_is_refused(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = _bound_token(rsa_key, ec_key)
    response = make_api()({"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert response.body["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith('DPoP realm="jwt-split", error="invalid_token"')


def test_an_invalid_token_with_the_dpop_scheme_is_refused(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    forged = _bound_token(other_rsa_key, ec_key, kid="not-published")
    response = make_api()(_dpop(forged, make_proof(ec_key, "GET", URL, forged)))
    assert (response.status, response.body["error"]) == (401, "invalid_token")


def test_the_scope_is_still_needed(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = _bound_token(rsa_key, ec_key, scope="orders:write")
    response = make_api()(_dpop(token, make_proof(ec_key, "GET", URL, token)))
    assert (response.status, response.body["error"]) == (403, "insufficient_scope")


def test_an_api_requiring_dpop_refuses_bearer_tokens_and_says_so(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    call = make_api(require_dpop=True)
    bearer = sign(make_claims(audience=AUDIENCE, scope="orders:read"), rsa_key)
    response = call({"Authorization": f"Bearer {bearer}"})
    assert (response.status, response.body["error"]) == (401, "invalid_token")
    assert "accepts only DPoP-bound tokens" in response.body["error_description"]
    _refused(call({}), 401, "unauthorized", f'DPoP realm="jwt-split", {METADATA}, {ALGS}')
    metadata = call({}, "/.well-known/oauth-protected-resource").body
    assert metadata["dpop_bound_access_tokens_required"] is True
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "PS256", "EdDSA"]
    token = _bound_token(rsa_key, ec_key)
    assert call(_dpop(token, make_proof(ec_key, "GET", URL, token))).status == 200


def test_an_unbound_token_is_still_a_bearer_token_where_dpop_is_optional(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    call = make_api()
    bearer = sign(make_claims(audience=AUDIENCE, scope="orders:read"), rsa_key)
    assert call({"Authorization": f"Bearer {bearer}"}).status == 200
    response = call(_dpop(bearer, make_proof(ec_key, "GET", URL, bearer)))
    assert (response.status, response.body["error"]) == (401, "invalid_token")


def test_a_required_nonce_is_handed_out_then_accepted(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    call = make_api(dpop_nonce_secret="shared by the workers")
    token = _bound_token(rsa_key, ec_key)
    response = call(_dpop(token, make_proof(ec_key, "GET", URL, token)))
    assert (response.status, response.body["error"]) == (401, "use_dpop_nonce")
    assert response.headers["WWW-Authenticate"].startswith('DPoP realm="jwt-split", error="use_dpop_nonce"')
    nonce = response.headers["DPoP-Nonce"]
    assert call(_dpop(token, make_proof(ec_key, "GET", URL, token, nonce=nonce))).status == 200


def test_an_expired_token_with_the_dpop_scheme_gets_a_dpop_challenge(
    make_api: Make, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = _bound_token(rsa_key, ec_key, exp=1_000_000_000)
    response = make_api()(_dpop(token, make_proof(ec_key, "GET", URL, token)))
    assert (response.status, response.body["error"]) == (401, "invalid_token")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('DPoP realm="jwt-split", error="invalid_token"')
    assert challenge.endswith(ALGS)


def test_a_head_request_run_as_get_is_checked_against_head(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    # The reports API's HeadAsGet runs HEAD as GET; the proof's htm must still be the request's method.
    jwks_server.serve_keys(rsa_key)
    api = fastapi_app(_config(jwks_server, tmp_path, {}))
    api.add_middleware(HeadAsGet)
    token = _bound_token(rsa_key, ec_key)
    with serve_asgi(api) as base_url:
        try:
            head = requests.head(
                base_url + "/orders", headers=_dpop(token, make_proof(ec_key, "HEAD", URL, token)), timeout=10
            )
            assert head.status_code == 200
            as_get = requests.head(
                base_url + "/orders", headers=_dpop(token, make_proof(ec_key, "GET", URL, token)), timeout=10
            )
            assert as_get.status_code == 401
            assert 'error="invalid_dpop_proof"' in as_get.headers["WWW-Authenticate"]
            get = requests.get(
                base_url + "/orders", headers=_dpop(token, make_proof(ec_key, "GET", URL, token)), timeout=10
            )
            assert get.status_code == 200
        finally:
            fastapi_protection(api).close()  # its background threads
            fastapi_protection(api).jwks.session.close()


def test_two_dpop_headers_at_a_flask_api_are_refused_as_such(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    # WSGI joins the two headers into one value: refused as two, not as a malformed proof.
    jwks_server.serve_keys(rsa_key)
    app = flask_app(_config(jwks_server, tmp_path, {}))
    token = _bound_token(rsa_key, ec_key)
    proof = make_proof(ec_key, "GET", URL, token)
    try:
        headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof), ("DPoP", proof)]
        response = app.test_client().get("/orders", headers=headers)
    finally:
        flask_protection(app).close()  # its background threads
        flask_protection(app).jwks.session.close()
    assert response.status_code == 401
    assert 'error_description="send exactly one DPoP header"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_a_proof_for_a_path_with_an_encoded_question_mark_is_accepted(
    framework: str,
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    # The htu is the path the client called (`/orders/a%3Fb`), encoded as it sent it. The FastAPI
    # integration built it from Starlette's `request.url.path`, which is already encoded again,
    # and encoded it once more (`a%253Fb`): every proof for such a path was refused.
    jwks_server.serve_keys(rsa_key)
    config = _config(jwks_server, tmp_path, {})
    token = _bound_token(rsa_key, ec_key)
    headers = _dpop(token, make_proof(ec_key, "GET", f"{RESOURCE}/orders/a%3Fb", token))
    if framework == "flask":
        app = flask_app(config)

        @app.get("/orders/<name>")
        @FlaskAuth(config).require(scope="orders:read")
        def named(name: str) -> dict[str, str]:
            return {"name": name}

        seen = app.test_client().get("/orders/a%3Fb", headers=headers)
        flask_protection(app).jwks.session.close()
        assert (seen.status_code, seen.get_json()) == (200, {"name": "a?b"})
        return
    api = fastapi_app(config)

    @api.get("/orders/{name}")
    def named_api(name: str, claims: Annotated[Claims, Depends(require_scope("orders:read"))]) -> dict[str, str]:
        return {"name": name}

    with serve_asgi(api) as base_url:
        answer = requests.get(f"{base_url}/orders/a%3Fb", headers=headers, timeout=10)
    fastapi_protection(api).jwks.session.close()
    assert (answer.status_code, answer.json()) == (200, {"name": "a?b"})


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_the_htu_is_the_path_as_the_client_sent_it_encoded_slash_and_all(
    framework: str,
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    # RFC 9449 section 4.3: `htu` matches the URI the request was sent to, after RFC 3986
    # syntax-based normalization, which decodes unreserved characters only: `a%2Fb` is one
    # segment, `a/b` two. Built from the framework's decoded path, a proof for the path the
    # client called was refused, and one for another path accepted.
    jwks_server.serve_keys(rsa_key)
    config = _config(jwks_server, tmp_path, {})
    token = _bound_token(rsa_key, ec_key)

    def proof(path: str) -> dict[str, str]:
        return _dpop(token, make_proof(ec_key, "GET", f"{RESOURCE}{path}", token))

    asked = {  # the path called: the proof's htu path, and whether it must be accepted
        "/orders/a%2Fb": [("/orders/a%2Fb", True), ("/orders/a%2fb", True), ("/orders/a/b", False)],
        "/orders/%61/b": [("/orders/a/b", True), ("/orders/%61/b", True)],  # `a` is unreserved
    }
    if framework == "flask":
        app = flask_app(config)

        @app.get("/orders/a/b")
        @FlaskAuth(config).require(scope="orders:read")
        def both() -> dict[str, str]:
            return {"name": "a/b"}

        client = app.test_client()
        seen = {
            (called, htu): client.get(called, headers=proof(htu)).status_code
            for called, htus in asked.items()
            for htu, _ in htus
        }
        flask_protection(app).jwks.session.close()
    else:
        api = fastapi_app(config)

        @api.get("/orders/a/b")
        def both_api(claims: Annotated[Claims, Depends(require_scope("orders:read"))]) -> dict[str, str]:
            return {"name": "a/b"}

        with serve_asgi(api) as base_url:
            seen = {
                (called, htu): requests.get(f"{base_url}{called}", headers=proof(htu), timeout=10).status_code
                for called, htus in asked.items()
                for htu, _ in htus
            }
        fastapi_protection(api).jwks.session.close()
    expected = {(called, htu): 200 if ok else 401 for called, htus in asked.items() for htu, ok in htus}
    assert seen == expected
