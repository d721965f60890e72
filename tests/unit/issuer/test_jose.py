"""Unit tests for issuer.jose: what it signs, and each TokenKind's refusals with their reasons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import jose
from issuer.jose import ACCESS_TOKEN, CLIENT_ASSERTION, END_SESSION_HINT, ID_TOKEN, JwtRefused, TokenKind
from issuer.keys import SigningKey
from jwt_verifier.errors import Reason, UnknownKey
from jwt_verifier.jose import b64url_decode
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    assertion_claims,
    compact,
    forge_hs256,
    kid_of,
    make_claims,
    overridden,
    public_pem,
    sign,
    sign_raw,
)

CLIENT_ID = "svc-reports"
TOKEN_ENDPOINT = f"{ISSUER}/token"


def _keys(*keys: rsa.RSAPrivateKey) -> Callable[[str], rsa.RSAPublicKey]:
    """Return a key source over these keys: the issuer's published keys, by kid."""
    published = {kid_of(key): key.public_key() for key in keys}

    def get(kid: str) -> rsa.RSAPublicKey:
        if kid not in published:
            raise UnknownKey(kid)
        return published[kid]

    return get


def _header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return header


def _refused(reason: Reason, call: Callable[[], object]) -> JwtRefused:
    with pytest.raises(JwtRefused) as caught:
        call()
    assert caught.value.reason is reason, str(caught.value)
    return caught.value


def _id_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "sub": "user-1", "aud": "web", "exp": now + 300, "iat": now}
    return overridden(claims, overrides)


def _assertion(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    return sign(assertion_claims(CLIENT_ID, ISSUER, **overrides), key, typ=None)


def _verify_assertion(token: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jws = jose.parse(token, CLIENT_ASSERTION)
    return jose.verify(jws, CLIENT_ASSERTION, key.public_key(), issuer=CLIENT_ID, audience=ISSUER, subject=CLIENT_ID)


# -- signing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "typ"), [(ACCESS_TOKEN, "at+jwt"), (ID_TOKEN, "JWT")])
def test_sign_writes_rs256_with_the_kinds_typ_and_the_keys_kid(
    rsa_key: rsa.RSAPrivateKey, kind: TokenKind, typ: str
) -> None:
    token = jose.sign(SigningKey(kid_of(rsa_key), rsa_key), kind, make_claims())
    assert _header(token) == {"alg": "RS256", "typ": typ, "kid": kid_of(rsa_key)}
    assert jose.read(token, kind, _keys(rsa_key), issuer=ISSUER, audience=AUDIENCE)["sub"] == "alice"


def test_sign_refuses_a_kind_the_issuer_never_signs(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="client assertion"):
        jose.sign(SigningKey(kid_of(rsa_key), rsa_key), CLIENT_ASSERTION, assertion_claims(CLIENT_ID, ISSUER))


# -- header: alg, typ, kid --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "typ"),
    [
        (ACCESS_TOKEN, "JWT"),  # an ID token presented as an access token
        (ID_TOKEN, "at+jwt"),  # an access token presented as an ID token
        (END_SESSION_HINT, "at+jwt"),  # an access token is no end-session hint
        (END_SESSION_HINT, None),
    ],
)
def test_read_refuses_a_wrong_typ(rsa_key: rsa.RSAPrivateKey, kind: TokenKind, typ: str | None) -> None:
    token = sign(make_claims(), rsa_key, typ=typ)
    error = _refused(Reason.BAD_HEADER, lambda: jose.read(token, kind, _keys(rsa_key), issuer=ISSUER, audience=None))
    assert "typ" in str(error)


def test_read_accepts_the_media_type_spelling_of_at_jwt(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(make_claims(), rsa_key, typ="application/at+jwt")
    assert jose.read(token, ACCESS_TOKEN, _keys(rsa_key), issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize("kind", [ACCESS_TOKEN, ID_TOKEN, END_SESSION_HINT, CLIENT_ASSERTION])
def test_alg_none_is_refused_for_every_kind(rsa_key: rsa.RSAPrivateKey, kind: TokenKind) -> None:
    token = compact({"alg": "none", "typ": kind.typ or "JWT", "kid": kid_of(rsa_key)}, make_claims())
    _refused(Reason.BAD_HEADER, lambda: jose.parse(token, kind))


@pytest.mark.parametrize("kind", [ACCESS_TOKEN, ID_TOKEN, END_SESSION_HINT, CLIENT_ASSERTION])
def test_hs256_keyed_with_the_public_key_is_refused_for_every_kind(rsa_key: rsa.RSAPrivateKey, kind: TokenKind) -> None:
    token = forge_hs256(make_claims(), public_pem(rsa_key), kid_of(rsa_key))
    error = _refused(Reason.BAD_HEADER, lambda: jose.parse(token, kind))
    assert "algorithm" in str(error)


def test_unknown_kid_is_refused(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(_id_claims(), other_rsa_key, typ="JWT")
    _refused(Reason.UNKNOWN_KEY, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


def test_missing_kid_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = compact({"alg": "RS256", "typ": "JWT"}, _id_claims())
    _refused(Reason.BAD_HEADER, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


def test_a_jws_extension_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(_id_claims(), rsa_key, typ="JWT", crit=["exp"], exp=1)
    _refused(Reason.BAD_HEADER, lambda: jose.parse(token, ID_TOKEN))


def test_a_signature_by_another_key_is_refused(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(_id_claims(), other_rsa_key, kid=kid_of(rsa_key), typ="JWT")
    _refused(Reason.BAD_SIGNATURE, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9=.e30.AA",  # padding: one token, one spelling
        "é.e30.AA",
    ],
)
def test_malformed_tokens_are_refused_as_malformed(token: str) -> None:
    _refused(Reason.MALFORMED, lambda: jose.parse(token, ID_TOKEN))


def test_duplicate_claims_are_refused_as_malformed(rsa_key: rsa.RSAPrivateKey) -> None:
    header = json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid_of(rsa_key)}).encode()
    token = sign_raw(header, b'{"iss":"x","iss":"y"}', rsa_key)
    _refused(Reason.MALFORMED, lambda: jose.parse(token, ID_TOKEN))


def test_oversized_tokens_are_refused_before_parsing() -> None:
    _refused(Reason.TOO_LARGE, lambda: jose.parse("a" * 9000, ID_TOKEN))
    _refused(Reason.TOO_LARGE, lambda: jose.parse("a" * 101, ID_TOKEN, max_bytes=100))


# -- claims -----------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", ["other-api", ["other-api", "another"], 7])
def test_a_wrong_aud_is_refused(rsa_key: rsa.RSAPrivateKey, aud: object) -> None:
    token = sign(make_claims(aud=aud), rsa_key)
    _refused(
        Reason.WRONG_AUDIENCE,
        lambda: jose.read(token, ACCESS_TOKEN, _keys(rsa_key), issuer=ISSUER, audience=AUDIENCE),
    )


def test_an_aud_list_naming_the_audience_is_accepted_for_tokens_of_the_issuer(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(make_claims(aud=[AUDIENCE, f"{ISSUER}/userinfo"]), rsa_key)
    assert jose.read(token, ACCESS_TOKEN, _keys(rsa_key), issuer=ISSUER, audience=AUDIENCE)


def test_a_wrong_iss_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(_id_claims(iss="http://evil"), rsa_key, typ="JWT")
    _refused(Reason.WRONG_ISSUER, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


@pytest.mark.parametrize("kind", [ACCESS_TOKEN, ID_TOKEN])
def test_a_missing_exp_is_refused(rsa_key: rsa.RSAPrivateKey, kind: TokenKind) -> None:
    token = sign(make_claims(exp=None), rsa_key, typ=kind.typ)
    error = _refused(
        Reason.BAD_CLAIMS, lambda: jose.read(token, kind, _keys(rsa_key), issuer=ISSUER, audience=AUDIENCE)
    )
    assert "'exp'" in str(error)


def test_an_expired_id_token_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    token = sign(_id_claims(iat=now - 7200, exp=now - 3600), rsa_key, typ="JWT")
    _refused(Reason.EXPIRED, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


@pytest.mark.parametrize("exp", [int(time.time()) - 86400, None], ids=["a-day-ago", "none"])
def test_an_end_session_hint_is_read_expired_or_without_exp(rsa_key: rsa.RSAPrivateKey, exp: int | None) -> None:
    now = int(time.time())
    token = sign(_id_claims(iat=now - 90000, exp=exp, aud="some-client"), rsa_key, typ="JWT")
    claims = jose.read(token, END_SESSION_HINT, _keys(rsa_key), issuer=ISSUER, audience=None)
    assert claims["aud"] == "some-client"


def test_an_end_session_hint_still_needs_the_issuers_key_and_its_iss(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    foreign = sign(_id_claims(), other_rsa_key, typ="JWT")
    _refused(
        Reason.UNKNOWN_KEY, lambda: jose.read(foreign, END_SESSION_HINT, _keys(rsa_key), issuer=ISSUER, audience=None)
    )
    elsewhere = sign(_id_claims(iss="http://other-op"), rsa_key, typ="JWT")
    _refused(
        Reason.WRONG_ISSUER,
        lambda: jose.read(elsewhere, END_SESSION_HINT, _keys(rsa_key), issuer=ISSUER, audience=None),
    )


def test_an_iat_in_the_future_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    token = sign(_id_claims(iat=now + 3600, exp=now + 4000), rsa_key, typ="JWT")
    _refused(Reason.NOT_YET_VALID, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


@pytest.mark.parametrize("exp", ["1999999999", True, 2**60, float("inf")])
def test_an_exp_that_is_not_a_numeric_date_is_refused(rsa_key: rsa.RSAPrivateKey, exp: object) -> None:
    header = json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid_of(rsa_key)}).encode()
    claims = {**_id_claims(), "exp": exp}
    if exp == float("inf"):
        payload = json.dumps(claims).replace("Infinity", "1e400").encode()  # no NaN/Infinity literals
    else:
        payload = json.dumps(claims).encode()
    token = sign_raw(header, payload, rsa_key)
    _refused(Reason.BAD_CLAIMS, lambda: jose.read(token, ID_TOKEN, _keys(rsa_key), issuer=ISSUER, audience="web"))


# -- client assertions (RFC 7523 section 3) ------------------------------------------------------


def test_a_valid_client_assertion_is_read(rsa_key: rsa.RSAPrivateKey) -> None:
    assert _verify_assertion(_assertion(rsa_key), rsa_key)["sub"] == CLIENT_ID


@pytest.mark.parametrize("aud", [TOKEN_ENDPOINT, [ISSUER], [ISSUER, TOKEN_ENDPOINT], "http://other-as"])
def test_a_client_assertion_aud_other_than_the_issuer_alone_is_refused(rsa_key: rsa.RSAPrivateKey, aud: object) -> None:
    token = _assertion(rsa_key, aud=aud)
    _refused(Reason.WRONG_AUDIENCE, lambda: _verify_assertion(token, rsa_key))


@pytest.mark.parametrize("claim", ["exp", "jti", "iss", "sub", "aud"])
def test_a_client_assertion_without_a_required_claim_is_refused(rsa_key: rsa.RSAPrivateKey, claim: str) -> None:
    token = _assertion(rsa_key, **{claim: None})
    error = _refused(Reason.BAD_CLAIMS, lambda: _verify_assertion(token, rsa_key))
    assert f"'{claim}'" in str(error)


def test_a_client_assertion_for_another_subject_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(assertion_claims("someone-else", ISSUER, iss=CLIENT_ID), rsa_key, typ=None)
    _refused(Reason.BAD_CLAIMS, lambda: _verify_assertion(token, rsa_key))


def test_a_client_assertion_signed_by_another_client_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(assertion_claims("other-client", ISSUER), rsa_key, typ=None)
    _refused(Reason.WRONG_ISSUER, lambda: _verify_assertion(token, rsa_key))


def test_a_client_assertion_living_too_long_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    ahead = _assertion(rsa_key, exp=now + jose.MAX_ASSERTION_LIFETIME + jose.LEEWAY + 5)
    assert "ahead" in str(_refused(Reason.BAD_CLAIMS, lambda: _verify_assertion(ahead, rsa_key)))
    long = _assertion(rsa_key, iat=now - 200, exp=now + 200)
    assert "longer" in str(_refused(Reason.BAD_CLAIMS, lambda: _verify_assertion(long, rsa_key)))


@pytest.mark.parametrize("jti", ["", "j" * (jose.MAX_JTI_LENGTH + 1), 7])
def test_a_client_assertion_with_an_unusable_jti_is_refused(rsa_key: rsa.RSAPrivateKey, jti: object) -> None:
    token = _assertion(rsa_key, jti=jti)
    _refused(Reason.BAD_CLAIMS, lambda: _verify_assertion(token, rsa_key))


def test_an_expired_client_assertion_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    token = _assertion(rsa_key, iat=now - 200, exp=now - 100)
    _refused(Reason.EXPIRED, lambda: _verify_assertion(token, rsa_key))
