"""Unit tests for jwt_verifier.dpop_scheme: the DPoP scheme, bearer use of bound tokens, and how the protector counts."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jwt_verifier import observe
from jwt_verifier.dpop_scheme import DPoPPolicy, DPoPRequest, dpop_token, request_url
from jwt_verifier.errors import DPoPInvalidToken, InvalidDPoPProof, InvalidToken, Reason
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.replay import MemoryReplayStore
from jwt_verifier.verifier import Verifier
from tests.support.dpop import make_proof, thumbprint
from tests.support.tokens import AUDIENCE, ISSUER, make_claims, sign
from tests.unit.jwt_verifier.test_dpop import ALGS, TOKEN, URL
from tests.unit.jwt_verifier.test_observe import Recorder
from tests.unit.jwt_verifier.test_verifier import StaticKeys

# -- the policy: the DPoP scheme and bearer use -------------------------------------------


def _policy(**options: Any) -> DPoPPolicy:
    arguments: dict[str, Any] = {
        "algorithms": ALGS,
        "max_age": 60,
        "leeway": 10,
        "required": False,
        "replay": MemoryReplayStore(),
    }
    return DPoPPolicy(**{**arguments, **options})


def test_a_bound_token_sent_as_bearer_is_refused_even_when_dpop_is_optional(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    with pytest.raises(DPoPInvalidToken) as caught:
        _policy().check_bearer({"sub": "alice", "cnf": {"jkt": thumbprint(ec_key)}})
    assert caught.value.reason == Reason.DPOP_REQUIRED
    assert caught.value.error == "invalid_token"
    assert caught.value.www_authenticate().startswith('DPoP realm="jwt-split", error="invalid_token"')


def test_an_api_requiring_dpop_refuses_any_bearer_token() -> None:
    _policy().check_bearer({"sub": "alice"})
    with pytest.raises(DPoPInvalidToken) as caught:
        _policy(required=True).check_bearer({"sub": "alice"})
    assert caught.value.reason == Reason.DPOP_REQUIRED


def test_an_unbound_token_sent_with_the_dpop_scheme_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    request = DPoPRequest("GET", URL, (make_proof(ec_key, "GET", URL, TOKEN),))
    with pytest.raises(DPoPInvalidToken) as caught:
        _policy().check_proof(TOKEN, {"sub": "alice"}, request)
    assert caught.value.reason == Reason.DPOP_BINDING


def test_exactly_one_dpop_header_is_needed(ec_key: ec.EllipticCurvePrivateKey) -> None:
    claims = {"cnf": {"jkt": thumbprint(ec_key)}}
    proof = make_proof(ec_key, "GET", URL, TOKEN)
    # Two headers as a WSGI server joins them (gunicorn with ",", Werkzeug's test client with ", "):
    # a proof never holds a comma.
    for proofs in [(), (proof, proof), (f"{proof},{proof}",), (f"{proof}, {proof}",)]:
        with pytest.raises(InvalidDPoPProof, match="exactly one DPoP header"):
            _policy().check_proof(TOKEN, claims, DPoPRequest("GET", URL, proofs))
    assert _policy().check_proof(TOKEN, claims, DPoPRequest("GET", URL, (proof,))).jkt == thumbprint(ec_key)


def test_the_policy_refuses_unknown_algorithms() -> None:
    with pytest.raises(ValueError, match="DPoP algorithms"):
        _policy(algorithms=("HS256",))
    with pytest.raises(ValueError, match="DPoP algorithms"):
        _policy(algorithms=())


def test_the_dpop_scheme_is_read_case_insensitively() -> None:
    assert dpop_token(["DPoP abc"]) == "abc"
    assert dpop_token(["dpop  abc "]) == "abc"
    assert dpop_token(["Bearer abc"]) is None
    assert dpop_token([]) is None
    with pytest.raises(InvalidToken):
        dpop_token(["DPoP "])


def test_the_invalid_proof_challenge_names_the_algorithms() -> None:
    error = InvalidDPoPProof("bad", algs=ALGS)
    assert error.status == 401
    assert error.www_authenticate("https://orders.example/.well-known/oauth-protected-resource") == (
        'DPoP realm="jwt-split", error="invalid_dpop_proof", error_description="bad", '
        'resource_metadata="https://orders.example/.well-known/oauth-protected-resource", '
        'algs="ES256 RS256 PS256 EdDSA"'
    )


# -- the protector counts DPoP refusals by reason -----------------------------------------


def test_the_protector_counts_dpop_refusals_by_reason(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    recorder = Recorder()
    previous = observe.current()
    observe.install(recorder)
    try:
        verifier = Verifier(StaticKeys(rsa_key), issuer=ISSUER, audience=AUDIENCE)
        protector = ResourceProtector(verifier, dpop=_policy())
        token = sign(make_claims(cnf={"jkt": thumbprint(ec_key)}), rsa_key)
        request = DPoPRequest("GET", URL, (make_proof(ec_key, "GET", URL, token),))
        assert protector.authenticate([f"DPoP {token}"], dpop=request)["sub"] == "alice"
        with pytest.raises(InvalidDPoPProof):
            protector.authenticate([f"DPoP {token}"], dpop=request)
        with pytest.raises(DPoPInvalidToken):
            protector.authenticate([f"Bearer {token}"])
        with pytest.raises(InvalidDPoPProof):
            protector.authenticate([f"DPoP {token}"], dpop=DPoPRequest("GET", URL, ()))  # no DPoP header
    finally:
        observe.install(previous)
    assert recorder.verifications == [
        ("valid", "none"),
        ("invalid", "dpop_replay"),
        ("invalid", "dpop_required"),
        ("invalid", "dpop_invalid"),
    ]
    assert {"dpop_invalid", "dpop_replay", "dpop_binding", "dpop_required", "dpop_nonce"} <= set(observe.REASONS)


def test_a_protector_without_a_policy_still_refuses_a_bound_token_as_bearer(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    protector = ResourceProtector(Verifier(StaticKeys(rsa_key), issuer=ISSUER, audience=AUDIENCE))
    token = sign(make_claims(cnf={"jkt": thumbprint(ec_key)}), rsa_key)
    with pytest.raises(DPoPInvalidToken) as caught:
        protector.authenticate([f"Bearer {token}"])
    assert caught.value.reason == Reason.DPOP_REQUIRED


def test_the_request_url_is_the_public_origin_and_the_request_path() -> None:
    assert request_url("https://api.example/ignored", "/orders/a b") == "https://api.example/orders/a%20b"
    assert request_url("http://localhost:8001", "/api/me") == "http://localhost:8001/api/me"


def test_the_request_url_keeps_the_path_as_sent_when_the_server_recorded_it() -> None:
    assert request_url("https://api.example", "/orders/a/b", "/orders/a%2Fb?x=1") == "https://api.example/orders/a%2Fb"
    assert request_url("https://api.example", "/orders/a/b", "/orders/%61/b") == "https://api.example/orders/%61/b"
    # Not that path (a proxy moved it under a prefix): the decoded one, encoded again.
    assert request_url("https://api.example", "/v1/orders", "/orders") == "https://api.example/v1/orders"
    assert request_url("https://api.example", "/orders", "https://api.example/orders") == "https://api.example/orders"
    # An absolute-form target (RFC 9112 section 3.2.2): its path, as sent.
    assert request_url("https://api.example", "/a/b", "HTTP://10.0.0.1:8001/a%2Fb?x") == "https://api.example/a%2Fb"
    assert request_url("https://api.example", "/a b", None) == "https://api.example/a%20b"
    # A target no URL parser takes (a server may pass it on): the decoded path, never an exception.
    assert request_url("https://api.example", "/x", "http://[::1/x") == "https://api.example/x"
