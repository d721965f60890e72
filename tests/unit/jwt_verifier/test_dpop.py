"""Unit tests for jwt_verifier.dpop: every check of RFC 9449 section 4.3, with real keys and proofs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from jwt_verifier.dpop import Nonces, Proof, access_token_hash, jwk_thumbprint, normalize_htu, verify_proof
from jwt_verifier.errors import InvalidDPoPProof, Reason, UseDPoPNonce
from jwt_verifier.jose import b64url_encode
from jwt_verifier.replay import MemoryReplayStore
from tests.support.dpop import ProofKey, make_proof, private_jwk, proof_jwk, thumbprint
from tests.support.fakes import FakeClock
from tests.support.tokens import compact

URL = "https://orders.example/orders"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
ALGS = ("ES256", "RS256", "PS256", "EdDSA")


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def check(proof: str, key: ProofKey | None = None, **options: Any) -> Proof:
    """Verify `proof` as an API at URL receiving TOKEN bound to `key`."""
    arguments: dict[str, Any] = {
        "method": "GET",
        "url": URL,
        "access_token": TOKEN,
        "jkt": thumbprint(key) if key is not None else None,
        "now": time.time(),
        "algs": ALGS,
        "max_age": 60,
        "leeway": 10,
        "replay": MemoryReplayStore(),
    }
    arguments.update(options)
    return verify_proof(proof, **arguments)


def refused(proof: str, key: ProofKey | None = None, **options: Any) -> InvalidDPoPProof:
    with pytest.raises(InvalidDPoPProof) as caught:
        check(proof, key, **options)
    return caught.value


# -- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_a_proof_of_each_algorithm_is_accepted(
    alg: str, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    keys: dict[str, ProofKey] = {"ES256": ec_key, "EdDSA": ed_key}
    key = keys.get(alg, rsa_key)
    proof = check(make_proof(key, "GET", URL, TOKEN, alg=alg), key)
    assert proof.jkt == thumbprint(key)
    assert proof.htu == URL


def test_the_thumbprint_is_rfc_7638s_example() -> None:
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    # RFC 9449 section 7.1's example token and its ath.
    assert (
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
        == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


# -- section 4.3, item by item -----------------------------------------------------------


def test_a_proof_that_is_not_a_jwt_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    good = make_proof(ec_key, "GET", URL, TOKEN)
    for proof in ["", "a.b", good + ".x", "!!!." + good.split(".", 1)[1], compact({"typ": "dpop+jwt"}, {})[:-1] + "*"]:
        assert refused(proof, ec_key).reason == Reason.DPOP_INVALID
    assert refused("x" * 9000, ec_key).reason == Reason.DPOP_INVALID


def test_a_proof_whose_header_is_not_an_object_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN)
    assert refused("WzFd." + proof.split(".", 1)[1], ec_key).description == "the DPoP proof is not a well-formed JWT"


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "DPOP+JWT-x"])
def test_a_proof_of_another_typ_is_refused(typ: str | None, ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, header={"typ": typ})
    assert "typ" in refused(proof, ec_key).description


def test_alg_none_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, alg="none")
    assert refused(proof, ec_key).description == "the DPoP proof's algorithm is not accepted"


def test_an_hmac_proof_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, alg="HS256")
    assert refused(proof, ec_key).description == "the DPoP proof's algorithm is not accepted"


def test_an_algorithm_outside_the_apis_list_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    proof = make_proof(rsa_key, "GET", URL, TOKEN, alg="RS256")
    error = refused(proof, rsa_key, algs=("ES256",))
    assert error.description == "the DPoP proof's algorithm is not accepted"
    assert error.www_authenticate().endswith('algs="ES256"')


def test_a_proof_without_a_jwk_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, header={"jwk": None})
    assert refused(proof).description == "the DPoP proof carries no jwk"


def test_a_proof_carrying_a_private_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    proof = make_proof(rsa_key, "GET", URL, TOKEN, header={"jwk": private_jwk(rsa_key)})
    assert refused(proof, rsa_key).description == "the DPoP proof's jwk holds private key material"


@pytest.mark.parametrize("member", ["d", "k", "qi"])
def test_any_private_member_is_refused(member: str, ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, header={"jwk": {**proof_jwk(ec_key), member: "AQAB"}})
    assert refused(proof, ec_key).description == "the DPoP proof's jwk holds private key material"


def test_a_jwk_unfit_for_the_algorithm_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, small_rsa_key: rsa.RSAPrivateKey
) -> None:
    # An EC key named under RS256, and a 1024-bit RSA key.
    mismatched = make_proof(ec_key, "GET", URL, TOKEN, alg="ES256", header={"jwk": proof_jwk(rsa_key)})
    assert "usable key" in refused(mismatched).description
    assert "usable key" in refused(make_proof(small_rsa_key, "GET", URL, TOKEN)).description
    off_curve = {**proof_jwk(ec_key), "y": proof_jwk(ec_key)["x"]}
    assert "usable key" in refused(make_proof(ec_key, "GET", URL, TOKEN, header={"jwk": off_curve})).description


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, signer=other_ec_key)
    assert refused(proof, ec_key).description == "the DPoP proof's signature does not verify"


def test_a_tampered_proof_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    header, _, signature = make_proof(ec_key, "GET", URL, TOKEN).split(".")
    _, claims, _ = make_proof(ec_key, "POST", URL, TOKEN).split(".")
    assert refused(f"{header}.{claims}.{signature}", ec_key, method="POST").reason == Reason.DPOP_INVALID


def test_critical_extensions_are_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, header={"crit": ["exp"]})
    assert "critical" in refused(proof, ec_key).description


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_a_proof_missing_a_required_claim_is_refused(claim: str, ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, **{claim: None})
    assert refused(proof, ec_key).reason == Reason.DPOP_INVALID


@pytest.mark.parametrize("iat", ["now", True, float("inf")])
def test_an_iat_that_is_not_a_number_is_refused(iat: object, ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, TOKEN, iat=iat)
    assert refused(proof, ec_key).description == "the DPoP proof has no valid iat"


def test_a_proof_for_another_method_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    for htm in ("POST", "get"):
        proof = make_proof(ec_key, htm, URL, TOKEN)
        assert refused(proof, ec_key).description == "the DPoP proof was made for another HTTP method"


def test_a_proof_for_another_api_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    for htu in ("https://reports.example/orders", "https://orders.example/orders/1", "http://orders.example/orders"):
        proof = make_proof(ec_key, "GET", htu, TOKEN)
        assert refused(proof, ec_key).description == "the DPoP proof was made for another URL"
    assert "not an http(s) URL" in refused(make_proof(ec_key, "GET", "urn:x", TOKEN), ec_key).description


def test_htu_is_compared_without_query_and_fragment_and_normalized(ec_key: ec.EllipticCurvePrivateKey) -> None:
    for htu in ("HTTPS://Orders.EXAMPLE:443/orders?page=2#top", "https://orders.example/a/../orders"):
        assert check(make_proof(ec_key, "GET", htu, TOKEN), ec_key).htu == URL


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://API.example:80", "http://api.example/"),
        ("https://api.example:8443/x?y#z", "https://api.example:8443/x"),
        ("https://api.example/%7euser/a%2fb", "https://api.example/~user/a%2Fb"),
        ("https://api.example/a/./b/../c", "https://api.example/a/c"),
        ("https://[::1]:443/", "https://[::1]/"),
    ],
)
def test_normalize_htu(url: str, normalized: str) -> None:
    assert normalize_htu(url) == normalized


def test_a_stale_proof_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    now = float(int(time.time()))
    assert check(make_proof(ec_key, "GET", URL, TOKEN, iat=int(now) - 70), ec_key, now=now)
    stale = make_proof(ec_key, "GET", URL, TOKEN, iat=int(now) - 71)
    assert refused(stale, ec_key, now=now).description == "the DPoP proof is too old or from the future"


def test_a_proof_from_the_future_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    now = float(int(time.time()))
    future = make_proof(ec_key, "GET", URL, TOKEN, iat=int(now) + 11)
    assert refused(future, ec_key, now=now).description == "the DPoP proof is too old or from the future"


def test_a_proof_for_another_token_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    proof = make_proof(ec_key, "GET", URL, "another.access.token")
    error = refused(proof, ec_key)
    assert (error.reason, error.description) == (
        Reason.DPOP_BINDING,
        "the DPoP proof was made for another access token",
    )
    assert refused(make_proof(ec_key, "GET", URL), ec_key).reason == Reason.DPOP_BINDING  # no ath at all


def test_a_proof_by_another_key_than_the_tokens_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    proof = make_proof(other_ec_key, "GET", URL, TOKEN)
    error = refused(proof, ec_key)
    assert error.reason == Reason.DPOP_BINDING
    assert error.description == "the DPoP proof was not signed by the key the access token is bound to"


def test_a_replayed_proof_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    store = MemoryReplayStore()
    proof = make_proof(ec_key, "GET", URL, TOKEN)
    check(proof, ec_key, replay=store)
    error = refused(proof, ec_key, replay=store)
    assert (error.reason, error.description) == (Reason.DPOP_REPLAY, "the DPoP proof was already used")


def test_a_refused_proof_does_not_burn_its_jti(
    ec_key: ec.EllipticCurvePrivateKey, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    store = MemoryReplayStore()
    forged = make_proof(ec_key, "GET", URL, TOKEN, jti="one")
    refused(forged, other_ec_key, replay=store)
    check(forged, ec_key, replay=store)


def test_the_same_jti_for_another_url_is_another_proof(ec_key: ec.EllipticCurvePrivateKey) -> None:
    store = MemoryReplayStore()
    check(make_proof(ec_key, "GET", URL, TOKEN, jti="j"), ec_key, replay=store)
    other = "https://orders.example/other"
    check(make_proof(ec_key, "GET", other, TOKEN, jti="j"), ec_key, replay=store, url=other)


# -- nonces (section 9) -------------------------------------------------------------------


def test_a_required_nonce_is_asked_for_then_accepted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    clock = FakeClock(time.time())
    nonces = Nonces("a secret of the API", 300, clock)
    with pytest.raises(UseDPoPNonce) as caught:
        check(make_proof(ec_key, "GET", URL, TOKEN), ec_key, nonces=nonces, now=clock())
    nonce = caught.value.headers["DPoP-Nonce"]
    assert caught.value.status == 401
    assert caught.value.error == "use_dpop_nonce"
    assert caught.value.www_authenticate().startswith('DPoP realm="jwt-split", error="use_dpop_nonce"')
    check(make_proof(ec_key, "GET", URL, TOKEN, nonce=nonce), ec_key, nonces=nonces, now=clock())
    clock.advance(601)
    with pytest.raises(UseDPoPNonce):
        check(make_proof(ec_key, "GET", URL, TOKEN, nonce=nonce, iat=int(clock())), ec_key, nonces=nonces, now=clock())


def test_a_nonce_of_another_secret_is_refused() -> None:
    ours, theirs = Nonces("ours", 300), Nonces("theirs", 300)
    assert ours.valid(ours.current())
    assert not ours.valid(theirs.current())
    assert not ours.valid("12.x")
    assert not ours.valid(12)


# -- hostile values are refusals, never crashes -------------------------------------------


def test_hostile_claim_values_are_refused_or_accepted_never_a_crash(ec_key: ec.EllipticCurvePrivateKey) -> None:
    store = MemoryReplayStore()
    assert check(make_proof(ec_key, "GET", URL, TOKEN, jti="\ud800 é"), ec_key, replay=store).jti == "\ud800 é"
    assert refused(make_proof(ec_key, "GET", URL, TOKEN, iat=10**400), ec_key).reason == Reason.DPOP_INVALID
    assert refused(make_proof(ec_key, "GET", URL, TOKEN, ath="é\ud800"), ec_key).reason == Reason.DPOP_BINDING
    assert refused(make_proof(ec_key, "GET", "https://\ud800/", TOKEN), ec_key).reason == Reason.DPOP_INVALID
    assert refused(make_proof(ec_key, "GET", URL, TOKEN), ec_key, url="urn:not-http").reason == Reason.DPOP_INVALID


def test_hostile_nonces_are_refused() -> None:
    nonces = Nonces("ours", 300)
    for nonce in ["²³.abc", "1.é", "\ud800", "1" * 100, ".", ""]:
        assert not nonces.valid(nonce)


def _nested(depth: int) -> str:
    """A JSON object holding arrays nested `depth` deep: more than the parser's recursion allows."""
    return b64url_encode(('{"typ":"dpop+jwt","x":' + "[" * depth + "]" * depth + "}").encode())


@pytest.mark.parametrize("segment", [0, 1])
def test_a_deeply_nested_header_or_claims_is_refused_not_a_crash(
    segment: int, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    parts = make_proof(ec_key, "GET", URL, TOKEN).split(".")
    parts[segment] = _nested(1200)
    error = refused(".".join(parts), ec_key)
    assert error.reason == Reason.DPOP_INVALID
    assert error.description == "the DPoP proof is not a well-formed JWT"


def test_an_rsa_proof_key_outside_the_issuers_client_key_bounds_is_refused(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # A huge exponent (each verification ~60 times dearer) or modulus: refused before any signature check.
    n = proof_jwk(rsa_key)["n"]
    huge_e = b64url_encode(((1 << 3069) | 1).to_bytes(384, "big"))
    huge_n = b64url_encode(((1 << 4103) | 1).to_bytes(513, "big"))
    for jwk in (
        {"kty": "RSA", "n": n, "e": huge_e},
        {"kty": "RSA", "n": huge_n, "e": "AQAB"},
        {"kty": "RSA", "n": n, "e": "Aw"},
    ):
        proof = make_proof(rsa_key, "GET", URL, TOKEN, header={"jwk": jwk})
        assert refused(proof).description == "the DPoP proof's jwk is not a usable key for its algorithm"


def test_the_token_binding_is_checked_before_the_signature(
    ec_key: ec.EllipticCurvePrivateKey, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # A proof key that is not the token's is refused as such, without the dearer signature check.
    header, claims, _ = make_proof(other_ec_key, "GET", URL, TOKEN).split(".")
    error = refused(f"{header}.{claims}.{b64url_encode(bytes(64))}", ec_key)
    assert error.reason == Reason.DPOP_BINDING
    assert error.description == "the DPoP proof was not signed by the key the access token is bound to"
