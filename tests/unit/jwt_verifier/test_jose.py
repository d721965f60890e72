"""Unit tests for jwt_verifier.jose: base64url, RSA JWKs and RFC 7638 thumbprints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.errors import InvalidToken, JwkError, Reason
from jwt_verifier.jose import (
    b64url_decode,
    b64url_encode,
    load_verification_key,
    parse_compact,
    public_jwk,
    rsa_thumbprint,
    verify_rs256,
)
from tests.support.tokens import kid_of, overridden, sign, sign_raw

# RFC 7638 section 3.1: the example RSA key and its thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMst"
    "n64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91"
    "CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_E = "AQAB"
RFC7638_KID = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _jwk(key: rsa.RSAPrivateKey, **changes: Any) -> dict[str, Any]:
    """Return the key's public JWK with members changed (a value of None removes the member)."""
    return overridden(dict(public_jwk(key.public_key())), changes)


# -- base64url ----------------------------------------------------------------------------


def test_b64url_encode_uses_url_alphabet_without_padding() -> None:
    assert b64url_encode(b"\xfb\xff\xbf") == "-_-_"
    assert b64url_encode(b"a") == "YQ"


def test_b64url_decode_round_trips_every_length() -> None:
    for length in range(8):
        data = bytes(range(250, 250 - length, -1))
        assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize("text", ["+/8", "YQ==", "Y Q", "YQ\n", "Y.Q", "é"])
def test_b64url_decode_refuses_characters_outside_the_alphabet(text: str) -> None:
    with pytest.raises(ValueError, match=r"base64url|ascii"):
        b64url_decode(text)


def test_b64url_decode_refuses_impossible_length() -> None:
    with pytest.raises(ValueError, match="base64"):
        b64url_decode("Y")


# -- thumbprints and public JWKs ----------------------------------------------------------


def test_thumbprint_matches_rfc7638_example() -> None:
    assert rsa_thumbprint(RFC7638_N, RFC7638_E) == RFC7638_KID


def test_public_jwk_of_rfc7638_key_has_the_example_kid() -> None:
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(b64url_decode(RFC7638_E), "big"), int.from_bytes(b64url_decode(RFC7638_N), "big")
    )
    jwk = public_jwk(numbers.public_key())
    assert (jwk["n"], jwk["e"], jwk["kid"]) == (RFC7638_N, RFC7638_E, RFC7638_KID)


def test_public_jwk_has_only_public_members(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = public_jwk(rsa_key.public_key())
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["alg"], jwk["use"], jwk["e"]) == ("RSA", "RS256", "sig", "AQAB")
    assert jwk["kid"] == rsa_thumbprint(jwk["n"], jwk["e"])


def test_public_jwk_modulus_has_no_leading_zero_byte(rsa_key: rsa.RSAPrivateKey) -> None:
    modulus = b64url_decode(public_jwk(rsa_key.public_key())["n"])
    assert len(modulus) == 256
    assert modulus[0] != 0


def test_different_keys_have_different_kids(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    assert public_jwk(rsa_key.public_key())["kid"] != public_jwk(other_rsa_key.public_key())["kid"]


# -- load_verification_key ----------------------------------------------------------------


def test_load_verification_key_returns_kid_and_the_same_key(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = _jwk(rsa_key)
    kid, key = load_verification_key(jwk)
    assert kid == jwk["kid"]
    assert key.public_numbers() == rsa_key.public_key().public_numbers()


def test_load_verification_key_accepts_jwk_without_alg_and_use(rsa_key: rsa.RSAPrivateKey) -> None:
    kid, _ = load_verification_key(_jwk(rsa_key, alg=None, use=None))
    assert kid == _jwk(rsa_key)["kid"]


def test_load_verification_key_accepts_a_kid_that_is_not_a_thumbprint(rsa_key: rsa.RSAPrivateKey) -> None:
    kid, _ = load_verification_key(_jwk(rsa_key, kid="2024-key"))
    assert kid == "2024-key"


def test_load_verification_key_refuses_non_object() -> None:
    with pytest.raises(JwkError, match="JSON object"):
        load_verification_key(["kty", "RSA"])


@pytest.mark.parametrize("kty", ["EC", "oct", "OKP", "rsa", None])
def test_load_verification_key_refuses_wrong_kty(rsa_key: rsa.RSAPrivateKey, kty: str | None) -> None:
    jwk = _jwk(rsa_key, kty=kty)
    with pytest.raises(JwkError, match="only RSA"):
        load_verification_key(jwk)


@pytest.mark.parametrize("alg", ["RS512", "PS256", "HS256", "none", ""])
def test_load_verification_key_refuses_wrong_alg(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    with pytest.raises(JwkError, match="algorithm must be RS256"):
        load_verification_key(_jwk(rsa_key, alg=alg))


@pytest.mark.parametrize("use", ["enc", "", "SIG"])
def test_load_verification_key_refuses_wrong_use(rsa_key: rsa.RSAPrivateKey, use: str) -> None:
    with pytest.raises(JwkError, match="use must be 'sig'"):
        load_verification_key(_jwk(rsa_key, use=use))


@pytest.mark.parametrize("member", ["d", "p"])
def test_load_verification_key_refuses_private_members(rsa_key: rsa.RSAPrivateKey, member: str) -> None:
    secret = rsa_key.private_numbers().d if member == "d" else rsa_key.private_numbers().p
    jwk = _jwk(rsa_key, **{member: b64url_encode(secret.to_bytes((secret.bit_length() + 7) // 8, "big"))})
    with pytest.raises(JwkError, match="private key"):
        load_verification_key(jwk)


@pytest.mark.parametrize("kid", [None, "", 42])
def test_load_verification_key_refuses_missing_or_bad_kid(rsa_key: rsa.RSAPrivateKey, kid: object) -> None:
    jwk = _jwk(rsa_key, kid=None)
    if kid is not None:
        jwk["kid"] = kid
    with pytest.raises(JwkError, match="no 'kid'"):
        load_verification_key(jwk)


def test_load_verification_key_refuses_modulus_below_2048_bits(small_rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(JwkError, match="shorter than 2048 bits"):
        load_verification_key(_jwk(small_rsa_key))


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("n", None, "'n' must be a non-empty string"),
        ("n", "", "'n' must be a non-empty string"),
        ("n", 12345, "'n' must be a non-empty string"),
        ("n", "not+base64", "'n' is not base64url"),
        ("e", None, "'e' must be a non-empty string"),
        ("e", "AQ==", "'e' is not base64url"),
    ],
)
def test_load_verification_key_refuses_bad_numbers(
    rsa_key: rsa.RSAPrivateKey, member: str, value: object, message: str
) -> None:
    jwk = _jwk(rsa_key, **{member: None})
    if value is not None:
        jwk[member] = value
    with pytest.raises(JwkError, match=message):
        load_verification_key(jwk)


def test_load_verification_key_refuses_an_impossible_exponent(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(JwkError, match="not a valid RSA public key"):
        load_verification_key(_jwk(rsa_key, e=b64url_encode(b"\x01")))


# -- parse_compact and verify_rs256: the verifier's parser, for other readers of JWTs -------------


def test_parse_compact_returns_the_header_and_claims_and_verify_rs256_accepts_the_signers_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    token = sign({"sub": "alice"}, rsa_key, typ="JWT")
    jws = parse_compact(token)
    assert jws.header == {"alg": "RS256", "typ": "JWT", "kid": kid_of(rsa_key)}
    assert jws.claims == {"sub": "alice"}
    verify_rs256(jws, rsa_key.public_key())


def test_verify_rs256_refuses_another_keys_signature(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    jws = parse_compact(sign({"sub": "alice"}, rsa_key))
    with pytest.raises(InvalidToken) as caught:
        verify_rs256(jws, other_rsa_key.public_key())
    assert caught.value.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda key: sign({"sub": "alice"}, key) + "=", Reason.MALFORMED),  # padding: one spelling per token
        (lambda key: sign_raw(b'{"alg":"RS256"}', b'{"a":1,"a":2}', key), Reason.MALFORMED),
        (lambda key: sign_raw(b'{"alg":"RS256"}', b"[1]", key), Reason.MALFORMED),
        (lambda key: sign_raw(b'{"alg":"RS256","crit":["x"],"x":1}', b"{}", key), Reason.BAD_HEADER),
        (lambda key: "a.b", Reason.MALFORMED),
    ],
)
def test_parse_compact_refuses_what_the_verifier_refuses(
    rsa_key: rsa.RSAPrivateKey, make: Callable[[rsa.RSAPrivateKey], str], reason: Reason
) -> None:
    with pytest.raises(InvalidToken) as caught:
        parse_compact(make(rsa_key))
    assert caught.value.reason is reason
