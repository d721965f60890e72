"""Unit tests for jwt_verifier.verifier: the RFC 9068 / RFC 8725 claim policy, one test per rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jwt_verifier.config import VerifierConfig
from jwt_verifier.jose import b64url_decode, b64url_encode, parse_compact, verify_rs256
from jwt_verifier.jwks import JwksClient, UnknownKey
from jwt_verifier.verifier import (
    MAX_LIFETIME,
    CachedToken,
    InvalidToken,
    TokenExpired,
    VerifiedTokens,
    Verifier,
    strict_json,
)
from tests.support.fakes import FakeClock, JwksServer
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


# -- the signature's encoding: RSASSA-PKCS1-v1_5 verification (RFC 8017 section 8.2.2) ---------

_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")  # RFC 8017 section 9.2, note 1


def _rsasp1(key: rsa.RSAPrivateKey, encoded: int) -> bytes:
    """Apply the private key to any integer (RFC 8017 section 5.2.1), as a signer of any encoded message can."""
    private = key.private_numbers()
    n = private.public_numbers.n
    return pow(encoded, private.d, n).to_bytes((n.bit_length() + 7) // 8, "big")


def _encoded(t: bytes, *, block_type: int = 1, fill: int = 0xFF, k: int = 256) -> int:
    """An EMSA-PKCS1-v1_5 encoded message 0x00 || BT || PS || 0x00 || T (RFC 8017 section 9.2) as an integer."""
    return int.from_bytes(bytes([0, block_type]) + bytes([fill]) * (k - 3 - len(t)) + b"\x00" + t, "big")


def _encodings(signing_input: bytes) -> dict[str, int]:
    digest = hashlib.sha256(signing_input).digest()
    return {
        "DigestInfo without the NULL parameters": _encoded(
            bytes.fromhex("302f300b06096086480165030402010420") + digest
        ),
        "SHA-512's DigestInfo and hash": _encoded(
            bytes.fromhex("3051300d060960864801650304020305000440") + hashlib.sha512(signing_input).digest()
        ),
        "SHA-1's DigestInfo and hash": _encoded(
            bytes.fromhex("3021300906052b0e03021a05000414")
            + hashlib.sha1(signing_input, usedforsecurity=False).digest()
        ),
        "the bare hash, no DigestInfo": _encoded(digest),
        "garbage after the hash (Bleichenbacher 2006)": _encoded(_SHA256_DIGEST_INFO + digest + b"\x01" * 64),
        "garbage after the hash, short padding": int.from_bytes(
            b"\x00\x01" + b"\xff" * 8 + b"\x00" + _SHA256_DIGEST_INFO + digest + b"\x00" * 194, "big"
        ),
        "block type 2": _encoded(_SHA256_DIGEST_INFO + digest, block_type=2),
        "padding of zeros": _encoded(_SHA256_DIGEST_INFO + digest, fill=0),
        "the hash of other bytes": _encoded(_SHA256_DIGEST_INFO + hashlib.sha256(signing_input + b"x").digest()),
    }


def _signed_with(signing_input: str, signature: bytes) -> str:
    return f"{signing_input}.{b64url_encode(signature)}"


def _assert_refused_as_bad_signature(keys: StaticKeys, token: str) -> None:
    """Both readers of RS256 refuse it as the reference (`jwt.decode`, cryptography's own verify) does."""
    assert _assert_same_outcome(keys, token) == "InvalidToken"
    with pytest.raises(InvalidToken, match="signature is invalid"):
        Verifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=0).verify(token)
    jws = parse_compact(token)
    with pytest.raises(InvalidToken, match="signature is invalid"):
        verify_rs256(jws, keys.get(kid_of_token(token)))


def kid_of_token(token: str) -> str:
    kid: str = json.loads(b64url_decode(token.split(".")[0]))["kid"]
    return kid


def test_the_genuine_encoding_signed_by_hand_is_accepted(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey) -> None:
    """The hand-made signatures below are refused for their encoding, not for the arithmetic."""
    signing_input = sign(make_claims(), rsa_key).rpartition(".")[0]
    digest = hashlib.sha256(signing_input.encode()).digest()
    token = _signed_with(signing_input, _rsasp1(rsa_key, _encoded(_SHA256_DIGEST_INFO + digest)))
    assert _assert_same_outcome(keys, token) != "InvalidToken"
    assert Verifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)["sub"] == "alice"
    verify_rs256(parse_compact(token), rsa_key.public_key())


@pytest.mark.parametrize(
    "case",
    [
        "DigestInfo without the NULL parameters",
        "SHA-512's DigestInfo and hash",
        "SHA-1's DigestInfo and hash",
        "the bare hash, no DigestInfo",
        "garbage after the hash (Bleichenbacher 2006)",
        "garbage after the hash, short padding",
        "block type 2",
        "padding of zeros",
        "the hash of other bytes",
    ],
)
def test_a_signature_of_any_other_encoding_is_refused(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, case: str) -> None:
    signing_input = sign(make_claims(), rsa_key).rpartition(".")[0]
    encoded = _encodings(signing_input.encode())[case]
    _assert_refused_as_bad_signature(keys, _signed_with(signing_input, _rsasp1(rsa_key, encoded)))


def _token_whose_signature_starts_with_zero(key: rsa.RSAPrivateKey) -> str:
    for i in range(20_000):
        token = sign(make_claims(jti=f"jti-{i}"), key)
        if b64url_decode(token.rpartition(".")[2])[0] == 0:
            return token
    raise AssertionError("no signature with a leading zero octet in 20,000")


def test_a_signature_shorter_or_longer_than_the_modulus_is_refused(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey
) -> None:
    """RFC 8017 section 8.2.2 step 1: a signature of other than k octets is invalid, even one that
    is the genuine signature without its leading zero octet (the same integer, so the RSA
    arithmetic alone would accept it), or with one more zero octet in front."""
    token = _token_whose_signature_starts_with_zero(rsa_key)
    signing_input, _, signature_segment = token.rpartition(".")
    signature = b64url_decode(signature_segment)
    assert len(signature) == 256
    assert Verifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)["sub"] == "alice"
    _assert_refused_as_bad_signature(keys, _signed_with(signing_input, signature[1:]))
    _assert_refused_as_bad_signature(keys, _signed_with(signing_input, b"\x00" + signature))
    _assert_refused_as_bad_signature(keys, _signed_with(signing_input, b"\x00\x00" + signature[1:]))


def test_a_signature_not_below_the_modulus_is_refused(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey) -> None:
    """RFC 8017 section 5.2.2 step 1 (RSAVP1): the signature representative must be less than n."""
    n = rsa_key.public_key().public_numbers().n
    token = sign(make_claims(), rsa_key)
    signing_input, _, signature_segment = token.rpartition(".")
    s = int.from_bytes(b64url_decode(signature_segment), "big")
    for value in (n, n + 1, (1 << 2048) - 1, s + n):
        if value < 1 << 2048:
            _assert_refused_as_bad_signature(keys, _signed_with(signing_input, value.to_bytes(256, "big")))
        else:  # one octet more than the modulus
            _assert_refused_as_bad_signature(keys, _signed_with(signing_input, value.to_bytes(257, "big")))


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


# -- the fast path rejects exactly what jwt.decode rejects --------------------------------


def _stricter_than_pyjwt(token: str) -> None:
    """Our deliberate additions to PyJWT's rules: no `=` padding, strict JSON, NumericDates that are numbers."""
    if "=" in token:
        raise InvalidToken("padding")
    try:
        claims = strict_json(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    except (ValueError, IndexError, RecursionError):
        return  # malformed: jwt.decode refuses it on its own
    try:
        strict_json(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    except (ValueError, RecursionError) as exc:
        raise InvalidToken("duplicate header member") from exc
    if not isinstance(claims, dict):
        return
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidToken(name)


def _reference_verify(keys: StaticKeys, token: str, *, leeway: int = 10) -> dict[str, Any]:
    """The verifier as it was before the fast path: the same header policy, then `jwt.decode`."""
    if not token.isascii():
        raise InvalidToken("malformed")
    _stricter_than_pyjwt(token)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("malformed") from exc
    typ = header.get("typ")
    if (
        header.get("alg") not in ["RS256"]
        or not isinstance(typ, str)
        or typ.lower() not in {"at+jwt", "application/at+jwt"}
    ):
        raise InvalidToken("header")
    if "crit" in header or "b64" in header:
        raise InvalidToken("extension")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 128:
        raise InvalidToken("kid")
    key = keys.get(kid)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=leeway,
            options={"require": ["iss", "aud", "exp", "iat", "sub", "jti"], "strict_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired("expired") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("invalid") from exc
    for name in ("sub", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise InvalidToken(name)
    for name in ("scope", "client_id"):
        if name in claims and not isinstance(claims[name], str):
            raise InvalidToken(name)
    if claims["exp"] - claims["iat"] > MAX_LIFETIME:
        raise InvalidToken("lifetime")
    return claims


def _outcome(verify: Any, token: str) -> object:
    try:
        return verify(token)
    except TokenExpired:
        return "TokenExpired"
    except InvalidToken:
        return "InvalidToken"
    except UnknownKey:
        return "UnknownKey"


def _assert_same_outcome(keys: StaticKeys, token: str) -> object:
    fast = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=10, cache_size=0)
    expected = _outcome(lambda t: _reference_verify(keys, t), token)
    assert _outcome(fast.verify, token) == expected, token
    return expected


def _resign(header: dict[str, Any], claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    """Sign a hand-made header and claims (any JSON at all) with RS256."""
    unsigned = f"{_segment(header)}.{_segment(claims)}"
    signature = key.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{unsigned}.{b64url_encode(signature)}"


def _variants(token: str) -> list[str]:
    """Spellings of a valid token that jwt.decode may or may not accept."""
    header, payload, signature = token.split(".")
    out = [
        token,
        token + ".",
        "." + token,
        f"{header}.{payload}.{payload}.{signature}",  # a duplicated segment
        f"{header}.{header}.{payload}.{signature}",
        f"{header}..{signature}",
        f"{header}.{payload}",
        f"{header}.{payload}.",
        token + " ",
        " " + token,
        token + "\n",
        f"{header} .{payload}.{signature}",
        f"{header}.{payload}.{signature[:100]} {signature[100:]}",
        f"{header}.{payload}.{signature[:100]}\t{signature[100:]}",
        token.replace("-", "+").replace("_", "/"),
        f"{header}.{payload}.{signature}=",
        f"{header}.{payload}.{signature}==",
        f"{header}.{payload}.{signature}===",
        f"{header}=.{payload}.{signature}",
        f"{header}.{payload}=.{signature}",
        f"{header}.{payload}.{signature[:-1]}",
        f"{header}.{payload}.{signature[:-2]}",
        f"{header}.{payload}.{signature}A",
        f"{header}.{payload}.{signature}AA",
        f"{header}.{payload}.{signature}AAAA",
        f"{header}.{payload}.{signature[:10]}={signature[10:]}",
        f"{header}.{payload}.{signature}!",
        f"{header}.{payload}.{signature}\x00",
    ]
    # Non-canonical encodings: the same bytes with other unused trailing bits.
    for segment_index in range(3):
        parts = token.split(".")
        segment = parts[segment_index]
        if len(segment) % 4 in (2, 3):
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            value = alphabet.index(segment[-1])
            for flip in (1, 2, 3):
                parts[segment_index] = segment[:-1] + alphabet[value ^ flip]
                out.append(".".join(parts))
    # Padded but otherwise canonical spellings (PyJWT accepts `=` when the length is a multiple of 4).
    parts = token.split(".")
    out.append(".".join(part + "=" * (-len(part) % 4) for part in parts))
    return out


_NOT_BASE64URL = [chr(c) for c in range(128) if not (chr(c).isalnum() or chr(c) in "-_")]


def _token_spelling_both(rsa_key: rsa.RSAPrivateKey) -> str:
    """A valid token whose signature segment holds both `-` and `_`."""
    for i in range(200):
        token = sign(make_claims(jti=f"jti-{i}"), rsa_key)
        if "-" in token.split(".")[2] and "_" in token.split(".")[2]:
            return token
    raise AssertionError("no signature spelled both '-' and '_'")


def test_standard_base64_spellings_are_refused_even_after_the_header_is_known(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = _token_spelling_both(rsa_key)
    header, payload, signature = token.split(".")
    verifier = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    assert verifier.verify(token)
    spellings = [
        f"{header}.{payload}.{signature.replace('-', '+')}",  # the same bytes in base64's alphabet
        f"{header}.{payload}.{signature.replace('_', '/')}",
        f"{header}.{payload}.{signature}{'=' * (-len(signature) % 4)}",  # the same bytes, padded
    ]
    for spelling in spellings:
        assert spelling != token
        with pytest.raises(InvalidToken, match="not a well-formed"):
            verifier.verify(spelling)


@pytest.mark.parametrize("segment_index", [0, 1, 2])
def test_every_character_outside_base64url_is_refused_in_every_segment(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, segment_index: int
) -> None:
    token = sign(make_claims(), rsa_key)
    fresh = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    seen = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    seen.verify(token)  # its header is now known: a known header must not skip any check
    for char in _NOT_BASE64URL:
        for position in (0, 5, -1):
            parts = token.split(".")
            segment = parts[segment_index]
            parts[segment_index] = segment[:position] + char + segment[position:] if position >= 0 else segment + char
            mutated = ".".join(parts)
            for verifier in (fresh, seen):
                with pytest.raises(InvalidToken):
                    verifier.verify(mutated)


def test_fast_path_agrees_with_jwt_decode_on_spellings_of_a_valid_token(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey
) -> None:
    outcomes = [_assert_same_outcome(keys, variant) for variant in _variants(sign(make_claims(), rsa_key))]
    assert outcomes[0] != "InvalidToken"
    assert outcomes.count("InvalidToken") > 20


def test_padded_segments_are_refused_though_jwt_decode_accepts_them(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey
) -> None:
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key)}
    for pad in range(4):
        claims = make_claims(jti="j" * (pad + 10))
        # The signature covers the segments as sent, so sign the padded spelling itself.
        unsigned = ".".join(_padded(_segment(part)) for part in (header, claims))
        signature = rsa_key.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{unsigned}.{_padded(b64url_encode(signature))}"
        assert "=" in token
        assert jwt.decode(token, rsa_key.public_key(), algorithms=["RS256"], audience=AUDIENCE)["jti"] == claims["jti"]
        assert _assert_same_outcome(keys, token) == "InvalidToken"


def test_a_padded_signature_is_a_second_spelling_and_is_refused(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(make_claims(), rsa_key)
    assert len(token.rsplit(".", 1)[1]) % 4 == 2  # a 2048-bit signature: 256 bytes, two `=` when padded
    verifier.verify(token)
    _refused(verifier, token + "==", "well-formed")


def _padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "at+jwt"},
        {"alg": "HS256", "typ": "at+jwt"},
        {"alg": "RS256"},
        {"alg": "RS256", "typ": "JWT"},
        {"alg": "RS256", "typ": None},
        {"alg": "RS256", "typ": ["at+jwt"]},
        {"alg": "RS256", "typ": "at+jwt", "crit": ["b64"], "b64": False},
        {"alg": "RS256", "typ": "at+jwt", "crit": []},
        {"alg": "RS256", "typ": "at+jwt", "b64": True},
        {"alg": "RS256", "typ": "at+jwt", "kid": 7},
        {"alg": "RS256", "typ": "application/AT+JWT"},
        {"alg": "RS256", "typ": "at+jwt", "jku": "https://evil.example/jwks"},
    ],
)
def test_fast_path_agrees_with_jwt_decode_on_headers(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, header: dict[str, Any]
) -> None:
    full = {"kid": kid_of(rsa_key), **header}
    _assert_same_outcome(keys, _resign({k: v for k, v in full.items() if v is not None}, make_claims(), rsa_key))


def _claim_cases() -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        {},
        {"exp": str(now + 300)},
        {"exp": float(now + 300)},
        {"exp": now + 300.9},
        {"exp": True},
        {"exp": [now + 300]},
        {"exp": "soon"},
        {"exp": now - 5},
        {"exp": now - 11},
        {"exp": now - 10},
        {"iat": now + 9},
        {"iat": now + 11},
        {"iat": "now"},
        {"iat": None},
        {"nbf": now + 5},
        {"nbf": now + 60},
        {"nbf": "later"},
        {"nbf": None},
        {"iss": ["http://localhost:8000"]},
        {"iss": ""},
        {"iss": 8000},
        {"aud": ""},
        {"aud": []},
        {"aud": [AUDIENCE]},
        {"aud": [AUDIENCE, 5]},
        {"aud": {"a": AUDIENCE}},
        {"aud": 0},
        {"aud": AUDIENCE + " "},
        {"sub": ""},
        {"sub": None},
        {"sub": ["alice"]},
        {"jti": 5},
        {"jti": ""},
        {"scope": None},
        {"scope": 5},
        {"client_id": {"id": "cli"}},
        {"extra": {"nested": [1, 2, {"deep": None}]}},
    ]


@pytest.mark.parametrize("overrides", _claim_cases())
def test_fast_path_agrees_with_jwt_decode_on_claims(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any]
) -> None:
    claims = make_claims()
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key)}
    _assert_same_outcome(keys, _resign(header, claims, rsa_key))  # by hand: PyJWT refuses to sign some


@pytest.mark.parametrize("payload", [b"[]", b"null", b"1", b'"claims"', b"{", b"\xff\xfe{}", b"{}"])
def test_fast_path_agrees_with_jwt_decode_on_payloads_that_are_not_claims(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, payload: bytes
) -> None:
    header = _segment({"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key)})
    unsigned = f"{header}.{b64url_encode(payload)}"
    signature = rsa_key.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert _assert_same_outcome(keys, f"{unsigned}.{b64url_encode(signature)}") == "InvalidToken"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_agrees_with_jwt_decode_on_random_mutations(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, data: st.DataObject
) -> None:
    token = _valid_tokens(rsa_key)[data.draw(st.integers(0, 1))]
    chars = list(token)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(chars)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        char = data.draw(st.sampled_from(list("AQgw09-_+/=. \t\n\x00é") + [chr(c) for c in range(33, 127)]))
        if action == "insert":
            chars.insert(position, char)
        elif chars and position < len(chars):
            if action == "replace":
                chars[position] = char
            else:
                del chars[position]
    _assert_same_outcome(keys, "".join(chars))


_VALID_TOKENS: dict[int, list[str]] = {}


def _valid_tokens(key: rsa.RSAPrivateKey) -> list[str]:
    """Two valid tokens per key, made once (hypothesis calls the test many times)."""
    if id(key) not in _VALID_TOKENS:
        now = int(time.time())
        _VALID_TOKENS[id(key)] = [
            sign(make_claims(iat=now, exp=now + 3600), key),
            sign(make_claims(iat=now, exp=now + 3600, aud=[AUDIENCE], nbf=now), key, typ="application/at+jwt"),
        ]
    return _VALID_TOKENS[id(key)]


def test_a_header_seen_before_is_still_held_to_the_signature(verifier: Verifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert verifier.verify(sign(make_claims(), rsa_key))
    header, payload, signature = sign(make_claims(scope="profile"), rsa_key).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["scope"] = "profile admin"
    _refused(verifier, f"{header}.{_segment(claims)}.{signature}", "signature is invalid")


def test_time_claims_are_judged_on_the_injected_clock(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey) -> None:
    clock = FakeClock(start=2_000_000_000.0)
    verifier = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=0, clock=clock)
    token = sign(make_claims(iat=2_000_000_000, exp=2_000_000_060), rsa_key)
    assert verifier.verify(token)["exp"] == 2_000_000_060
    clock.advance(-100)
    with pytest.raises(InvalidToken, match="not valid yet"):
        Verifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=0, clock=clock).verify(token)


# -- the verified-token cache -------------------------------------------------------------


class CountingKeys(StaticKeys):
    """Static keys that can withdraw or replace a key."""

    def withdraw(self, key: rsa.RSAPrivateKey) -> None:
        del self.keys[kid_of(key)]

    def replace(self, key: rsa.RSAPrivateKey, with_key: rsa.RSAPrivateKey) -> None:
        self.keys[kid_of(key)] = with_key.public_key()


@pytest.fixture
def clock_now() -> FakeClock:
    return FakeClock(start=float(int(time.time())))


def _cached_verifier(keys: StaticKeys, clock: FakeClock, **options: Any) -> Verifier:
    return Verifier(keys, issuer=ISSUER, audience=AUDIENCE, clock=clock, **{"leeway": 10, **options})


def _claims_at(clock: FakeClock, ttl: int = 60, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now)
    return make_claims(iat=now, exp=now + ttl, **overrides)


def _remembered(verifier: Verifier, token: str) -> dict[str, Any]:
    """Verify `token` until the cache holds it (its second sight) and return its claims."""
    verifier.verify(token)
    claims = verifier.verify(token)
    assert token in verifier.cache
    return claims


def test_repeated_token_is_served_from_the_cache(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    keys = CountingKeys(rsa_key)
    verifier = _cached_verifier(keys, clock_now)
    token = sign(_claims_at(clock_now), rsa_key)
    first = verifier.verify(token)
    assert token not in verifier.cache  # the first sight only notes that it was seen
    assert verifier.verify(token) == first
    assert token in verifier.cache  # the second stores it
    with mock.patch.object(Verifier, "_verify", side_effect=AssertionError("verified again")):
        assert verifier.verify(token) == first
    assert keys.asked == [kid_of(rsa_key)] * 3  # the key is still looked up: a withdrawn key is noticed


def test_tokens_seen_once_do_not_evict_a_token_in_use(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key), clock_now, cache_size=3)
    in_use = sign(_claims_at(clock_now, sub="in-use"), rsa_key)
    _remembered(verifier, in_use)
    for i in range(10):  # a burst of one-shot tokens, three times the cache
        verifier.verify(sign(_claims_at(clock_now, sub=f"once-{i}"), rsa_key))
    assert len(verifier.cache) == 1
    with mock.patch.object(Verifier, "_verify", side_effect=AssertionError("verified again")):
        assert verifier.verify(in_use)["sub"] == "in-use"


def test_cached_claims_cannot_be_changed_through_a_returned_dict(
    rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock
) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key), clock_now)
    token = sign(_claims_at(clock_now, scope="profile"), rsa_key)
    verifier.verify(token)["scope"] = "profile admin"
    verifier.verify(token)["scope"] = "profile admin"  # stored as it is returned
    assert verifier.verify(token)["scope"] == "profile"


def test_expiry_is_enforced_on_a_cached_token(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key), clock_now, leeway=0)
    token = sign(_claims_at(clock_now, ttl=60), rsa_key)
    _remembered(verifier, token)
    clock_now.advance(59)
    assert verifier.verify(token)
    clock_now.advance(1)
    with pytest.raises(TokenExpired):
        verifier.verify(token)
    assert token not in verifier.cache


def test_leeway_after_exp_is_allowed_but_never_from_the_cache(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key), clock_now, leeway=10)
    token = sign(_claims_at(clock_now, ttl=60), rsa_key)
    _remembered(verifier, token)
    clock_now.advance(65)
    assert verifier.verify(token)  # within the leeway, verified in full
    assert token not in verifier.cache
    clock_now.advance(5)
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_entry_is_gone_after_exp_even_if_never_asked_for_again(
    clock_now: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    cache = VerifiedTokens(10, clock=clock_now, sweep_interval=1.0)
    cache.put("a", CachedToken({"sub": "a"}, "kid", rsa_key.public_key(), clock_now.now + 5))
    cache.put("b", CachedToken({"sub": "b"}, "kid", rsa_key.public_key(), clock_now.now + 500))
    clock_now.advance(5)
    cache.put("c", CachedToken({"sub": "c"}, "kid", rsa_key.public_key(), clock_now.now + 500))
    assert "a" not in cache
    assert len(cache) == 2
    assert cache.get("a") is None


def test_a_token_already_past_exp_is_not_cached(clock_now: FakeClock, rsa_key: rsa.RSAPrivateKey) -> None:
    cache = VerifiedTokens(10, clock=clock_now)
    cache.put("a", CachedToken({}, "kid", rsa_key.public_key(), clock_now.now))
    assert len(cache) == 0


def test_cache_is_bounded_and_evicts_the_least_recently_used(clock_now: FakeClock, rsa_key: rsa.RSAPrivateKey) -> None:
    cache = VerifiedTokens(3, clock=clock_now)
    for name in "abc":
        cache.put(name, CachedToken({}, "kid", rsa_key.public_key(), clock_now.now + 60))
    assert cache.get("a") is not None  # now the most recently used
    cache.put("d", CachedToken({}, "kid", rsa_key.public_key(), clock_now.now + 60))
    assert len(cache) == 3
    assert "b" not in cache
    assert all(name in cache for name in "acd")


def test_verifier_cache_holds_at_most_cache_size_tokens(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key), clock_now, cache_size=5)
    for _ in range(8):
        _remembered(verifier, sign(_claims_at(clock_now), rsa_key))
    assert len(verifier.cache) == 5


def test_cache_size_zero_turns_the_cache_off(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key), clock_now, cache_size=0)
    token = sign(_claims_at(clock_now), rsa_key)
    verifier.verify(token)
    assert len(verifier.cache) == 0


def test_cached_token_of_a_withdrawn_key_is_refused(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    keys = CountingKeys(rsa_key)
    verifier = _cached_verifier(keys, clock_now)
    token = sign(_claims_at(clock_now), rsa_key)
    _remembered(verifier, token)
    keys.withdraw(rsa_key)
    with pytest.raises(UnknownKey):
        verifier.verify(token)
    assert token not in verifier.cache


def test_cached_token_is_verified_again_when_its_kid_names_another_key(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock
) -> None:
    keys = CountingKeys(rsa_key)
    verifier = _cached_verifier(keys, clock_now)
    token = sign(_claims_at(clock_now), rsa_key)
    _remembered(verifier, token)
    keys.replace(rsa_key, other_rsa_key)
    _refused(verifier, token, "signature is invalid")


def test_keys_changed_purges_tokens_of_withdrawn_kids(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock
) -> None:
    verifier = _cached_verifier(StaticKeys(rsa_key, other_rsa_key), clock_now)
    old = sign(_claims_at(clock_now), rsa_key)
    new = sign(_claims_at(clock_now), other_rsa_key)
    _remembered(verifier, old)
    _remembered(verifier, new)
    verifier.keys_changed(frozenset({kid_of(other_rsa_key)}))
    assert old not in verifier.cache
    assert new in verifier.cache


def test_withdrawing_a_kid_from_the_jwks_purges_its_cached_tokens(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    jwks_server.serve_keys(rsa_key, other_rsa_key)
    with requests.Session() as session:
        jwks = JwksClient(
            VerifierConfig(
                issuer=ISSUER, audience=AUDIENCE, resource="http://api.test", jwks_url=jwks_server.url, jwks_cooldown=0
            ),
            session=session,
        )
        verifier = Verifier(jwks, issuer=ISSUER, audience=AUDIENCE)
        withdrawn = sign(make_claims(), rsa_key)
        kept = sign(make_claims(), other_rsa_key)
        _remembered(verifier, withdrawn)
        _remembered(verifier, kept)
        assert len(verifier.cache) == 2
        jwks_server.serve_keys(other_rsa_key)
        with pytest.raises(UnknownKey):
            verifier.verify(sign(make_claims(), rsa_key, kid="a-new-kid"))  # makes the client refetch
        assert withdrawn not in verifier.cache
        assert kept in verifier.cache
        with pytest.raises(UnknownKey):
            verifier.verify(withdrawn)


def test_cache_is_safe_under_concurrent_use(rsa_key: rsa.RSAPrivateKey, clock_now: FakeClock) -> None:
    cache = VerifiedTokens(50, clock=clock_now, sweep_interval=0.0)
    key = rsa_key.public_key()

    def hammer(worker: int) -> None:
        for i in range(2000):
            token = f"{worker}-{i % 120}"
            if cache.get(token) is None:
                cache.put(token, CachedToken({"i": i}, f"kid{i % 3}", key, clock_now.now + 60))
            if i % 500 == 0:
                cache.purge_kids({"kid0", "kid1"})

    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(hammer, n) for n in range(8)]:
            done.result()  # re-raises whatever a thread hit
    assert len(cache) <= 50


@pytest.mark.parametrize(
    "extra",
    ['"sub": "root"', '"exp": NaN', '"nbf": Infinity', '"exp": 1e400'],
)
def test_verify_rejects_duplicate_members_and_non_numbers_even_when_signed(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, extra: str
) -> None:
    payload = json.dumps(make_claims())[:-1] + ", " + extra + "}"
    header = json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key)})
    signing_input = f"{b64url_encode(header.encode())}.{b64url_encode(payload.encode())}"
    token = (
        f"{signing_input}.{b64url_encode(rsa_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"
    )
    with pytest.raises(InvalidToken) as caught:
        Verifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)
    assert not isinstance(caught.value, TokenExpired)


@pytest.mark.parametrize(
    "exp", [str(int(time.time()) + 300), True, 10**400, 2**53], ids=["string", "boolean", "10**400", "2**53"]
)
def test_verify_rejects_time_claims_that_are_not_sane_numbers(
    keys: StaticKeys, rsa_key: rsa.RSAPrivateKey, exp: Any
) -> None:
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid_of(rsa_key)}
    token = _resign(header, {**make_claims(), "exp": exp}, rsa_key)
    with pytest.raises(InvalidToken, match=r"malformed|lifetime"):
        Verifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)


def test_verify_rejects_a_token_living_longer_than_the_maximum(keys: StaticKeys, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    token = sign(make_claims(iat=now, exp=now + 2 * 86400), rsa_key)
    with pytest.raises(InvalidToken, match="lifetime"):
        Verifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)
    assert Verifier(keys, issuer=ISSUER, audience=AUDIENCE, max_lifetime=3 * 86400).verify(token)["sub"] == "alice"


@pytest.mark.parametrize("token", [b"a.b.c", None, 42, ["a.b.c"]], ids=["bytes", "none", "int", "list"])
def test_verify_refuses_a_token_that_is_not_text_as_malformed(verifier: Verifier, token: Any) -> None:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason == "malformed"
