"""Unit tests for resource_server.verifier: the RFC 9068 / RFC 8725 claim policy, one test per rule."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resource_server.jwks import UnknownKey
from resource_server.verifier import InvalidToken, Verifier
from shared.jose import b64url_decode, b64url_encode
from tests.support.tokens import AUDIENCE, ISSUER, kid_of, make_claims, sign


class StaticKeys:
    """A key source holding fixed keys, raising UnknownKey like the JWKS client does."""

    def __init__(self, *keys: rsa.RSAPrivateKey) -> None:
        self.keys = {kid_of(key): key.public_key() for key in keys}
        self.asked: list[str] = []

    def get(self, kid: str) -> rsa.RSAPublicKey:
        self.asked.append(kid)
        try:
            return self.keys[kid]
        except KeyError:
            raise UnknownKey(kid) from None


@pytest.fixture
def keys(rsa_key: rsa.RSAPrivateKey) -> StaticKeys:
    return StaticKeys(rsa_key)


@pytest.fixture
def verifier(keys: StaticKeys) -> Verifier:
    return Verifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=10, max_token_bytes=4096)


def _segment(part: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(part, separators=(",", ":")).encode())


def _compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_segment(header)}.{_segment(claims)}.{b64url_encode(signature)}"


def _refused(verifier: Verifier, token: str, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        verifier.verify(token)


# -- accepted -----------------------------------------------------------------------------


def test_valid_token_returns_its_claims(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = make_claims()
    assert verifier.verify(sign(claims, rsa_key)) == claims


def test_key_is_chosen_by_kid(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    keys = StaticKeys(rsa_key, other_rsa_key)
    verifier = Verifier(keys, issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(sign(make_claims(sub="bob"), other_rsa_key))["sub"] == "bob"
    assert keys.asked == [kid_of(other_rsa_key)]


def test_audience_list_containing_ours_is_accepted(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = make_claims(aud=["billing-api", AUDIENCE])
    assert verifier.verify(sign(claims, rsa_key))["aud"] == ["billing-api", AUDIENCE]


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_at_jwt_type_is_accepted_in_every_spelling(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, typ: str) -> None:
    assert verifier.verify(sign(make_claims(), rsa_key, typ=typ))["sub"] == "alice"


def test_expiry_within_leeway_is_accepted(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    assert verifier.verify(sign(make_claims(iat=now - 300, exp=now - 5), rsa_key))


def test_claims_without_scope_and_client_id_are_accepted(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = make_claims(scope=None, client_id=None)
    assert verifier.verify(sign(claims, rsa_key)) == claims


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_key_carrying_headers_are_ignored(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, header: str) -> None:
    value: Any = ["MIIB"] if header == "x5c" else {"kty": "RSA"} if header == "jwk" else "https://evil.example/k"
    assert verifier.verify(sign(make_claims(), rsa_key, **{header: value}))["sub"] == "alice"


# -- time ---------------------------------------------------------------------------------


def test_expired_token_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    _refused(verifier, sign(make_claims(iat=now - 900, exp=now - 60), rsa_key), "has expired")


def test_token_with_future_nbf_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(nbf=int(time.time()) + 120), rsa_key), "not valid yet")


def test_token_issued_in_the_future_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    _refused(verifier, sign(make_claims(iat=now + 120, exp=now + 600), rsa_key), "not valid yet")


def test_non_integer_exp_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(exp="tomorrow"), rsa_key), "malformed or its claims are invalid")


# -- issuer, audience and required claims -------------------------------------------------


def test_token_from_another_issuer_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(issuer="https://evil.example"), rsa_key), "not issued by the trusted issuer")


def test_token_for_other_audience_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(audience="billing-api"), rsa_key), "not meant for this API")


def test_audience_list_without_ours_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(aud=["billing-api", "orders-api"]), rsa_key), "not meant for this API")


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub", "jti"])
def test_token_missing_a_required_claim_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, claim: str) -> None:
    removed: dict[str, Any] = {claim: None}
    _refused(verifier, sign(make_claims(**removed), rsa_key), f"lacks the required '{claim}' claim")


@pytest.mark.parametrize("claim", ["sub", "jti"])
def test_empty_sub_or_jti_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, claim: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(make_claims(**{claim: ""}), rsa_key))


@pytest.mark.parametrize("claim", ["sub", "jti"])
def test_non_string_sub_or_jti_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, claim: str) -> None:
    wrong: dict[str, Any] = {claim: 12345}
    with pytest.raises(InvalidToken):
        verifier.verify(sign(make_claims(**wrong), rsa_key))


@pytest.mark.parametrize("claim", ["scope", "client_id"])
def test_non_string_scope_or_client_id_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, claim: str) -> None:
    wrong: dict[str, Any] = {claim: ["admin"]}
    _refused(verifier, sign(make_claims(**wrong), rsa_key), f"'{claim}' claim must be a string")


# -- header -------------------------------------------------------------------------------


def test_token_without_typ_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(), rsa_key, typ=None), "type must be at\\+jwt")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "id_token+jwt", "at+jwt "])
def test_token_of_other_type_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, typ: str) -> None:
    _refused(verifier, sign(make_claims(), rsa_key, typ=typ), "type must be at\\+jwt")


def test_alg_none_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = _compact({"alg": "none", "typ": "at+jwt", "kid": kid_of(rsa_key)}, make_claims())
    _refused(verifier, token, "algorithm is not accepted")


def test_hs256_signed_with_the_public_key_pem_is_refused(
    verifier: Verifier, keys: StaticKeys, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    unsigned = f"{_segment({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid_of(rsa_key)})}.{_segment(make_claims())}"
    signature = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    _refused(verifier, f"{unsigned}.{b64url_encode(signature)}", "algorithm is not accepted")
    assert keys.asked == []


@pytest.mark.parametrize("alg", ["RS512", "PS256", "ES256", "HS256", ["RS256"]])
def test_any_algorithm_but_rs256_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, alg: object) -> None:
    token = _compact({"alg": alg, "typ": "at+jwt", "kid": kid_of(rsa_key)}, make_claims(), b"sig")
    _refused(verifier, token, "algorithm is not accepted")


def test_crit_header_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verifier, sign(make_claims(), rsa_key, crit=["exp"]), "JWS")


def test_crit_b64_extension_that_pyjwt_understands_is_still_refused(
    verifier: Verifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    # RFC 7797 detached payload: PyJWT parses this header, so only our own check stops it.
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key), "crit": ["b64"], "b64": False}
    token = f"{_segment(header)}..{b64url_encode(b'sig')}"
    _refused(verifier, token, "uses a JWS extension this server does not accept")


def test_b64_header_without_crit_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = _compact({"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key), "b64": False}, make_claims())
    _refused(verifier, token, "JWS")


@pytest.mark.parametrize("kid", [None, "", 42, ["k"], "k" * 129])
def test_missing_or_unusable_kid_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey, kid: object) -> None:
    header: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt"}
    if kid is not None:
        header["kid"] = kid
    _refused(verifier, _compact(header, make_claims(), b"sig"), "no usable 'kid'|not a well-formed")


def test_unknown_kid_raises_the_key_sources_error(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(UnknownKey):
        verifier.verify(sign(make_claims(), rsa_key, kid="not-published"))


# -- signature ----------------------------------------------------------------------------


def test_tampered_payload_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, payload, signature = sign(make_claims(scope="profile"), rsa_key).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["scope"] = "profile admin"
    _refused(verifier, f"{header}.{_segment(claims)}.{signature}", "signature is invalid")


def test_signature_by_another_key_with_the_real_kid_is_refused(
    verifier: Verifier, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    _refused(verifier, sign(make_claims(), other_rsa_key, kid=kid_of(rsa_key)), "signature is invalid")


def test_token_with_signature_removed_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, payload, _ = sign(make_claims(), rsa_key).split(".")
    _refused(verifier, f"{header}.{payload}.", "signature is invalid|malformed")


# -- size and garbage ---------------------------------------------------------------------


def test_oversized_token_is_refused_before_parsing(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, max_token_bytes=1024)
    token = sign(make_claims(padding="x" * 1024), rsa_key)
    _refused(verifier, token, "larger than 1024 bytes")
    _refused(verifier, "x" * 100_000, "larger than 1024 bytes")
    assert keys.asked == []


def test_token_at_the_size_limit_is_accepted(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(make_claims(), rsa_key)
    assert Verifier(keys, issuer=ISSUER, audience=AUDIENCE, max_token_bytes=len(token)).verify(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d.e",
        "eyJ.eyJ.eyJ",
        "\x00\x01\x02",
        "caf\u00e9.caf\u00e9.caf\u00e9",
        "\ud800.\ud800.\ud800",
        "\U0001f600",
        _compact({"alg": "RS256", "typ": "at+jwt", "kid": "k"}, {}).replace(".", "", 1),
        f"{b64url_encode(b'[1,2]')}.{b64url_encode(b'{}')}.c2ln",
        f"{b64url_encode(b'not json')}.{b64url_encode(b'{}')}.c2ln",
        f"{b64url_encode(b'null')}.{b64url_encode(b'{}')}.c2ln",
    ],
)
def test_garbage_is_invalid_token_never_another_error(verifier: Verifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_payload_that_is_not_json_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(make_claims(), rsa_key).split(".")
    _refused(verifier, f"{header}.{b64url_encode(b'not json')}.{signature}", "malformed|signature")
