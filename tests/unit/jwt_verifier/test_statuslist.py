"""Unit tests for jwt_verifier.statuslist: the entries of a list, and every list token that must be refused."""

from __future__ import annotations

import base64
import time
import zlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.errors import InvalidToken, Reason, StatusListInvalid, UnknownKey
from jwt_verifier.jose import b64url_encode
from jwt_verifier.statuslist import StatusList, inflate, parse_list_token, status_ref
from tests.support.statuslists import encode_lst, list_claims, pack, sign_list
from tests.support.tokens import compact, kid_of

ISSUER = "https://issuer.example"
URI = "https://issuer.example/statuslists/1"


class Keys:
    """A key source holding a fixed set of keys."""

    def __init__(self, *keys: rsa.RSAPrivateKey) -> None:
        self.keys = {kid_of(key): key.public_key() for key in keys}

    def get(self, kid: str) -> rsa.RSAPublicKey:
        """Return the key for `kid`, or raise UnknownKey."""
        if kid not in self.keys:
            raise UnknownKey(kid)
        return self.keys[kid]


def _parse(token: str, key: rsa.RSAPrivateKey, *, max_bytes: int = 1 << 20) -> StatusList:
    return parse_list_token(
        token, uri=URI, issuer=ISSUER, keys=Keys(key), now=time.time(), leeway=10, max_bytes=max_bytes
    )


# -- the entries --------------------------------------------------------------------------


def test_the_drafts_example_reads_least_significant_bit_first() -> None:
    # draft-ietf-oauth-status-list section 4.1: bytes 0xB9 0xA3 with 1 bit per entry.
    listed = StatusList(1, bytes([0xB9, 0xA3]), None, None)
    assert [listed.status(i) for i in range(16)] == [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_every_entry_reads_back_for_each_width(bits: int) -> None:
    values = [(i * 7 + 3) % (1 << bits) for i in range(61)]
    listed = StatusList(bits, pack(values, bits), None, None)
    assert [listed.status(i) for i in range(len(values))] == values
    assert len(listed) >= len(values)


def test_two_bit_entries_fill_a_byte_from_its_low_end() -> None:
    listed = StatusList(2, bytes([0b11_10_01_00]), None, None)
    assert [listed.status(i) for i in range(4)] == [0, 1, 2, 3]


def test_an_index_beyond_the_list_is_refused() -> None:
    listed = StatusList(4, bytes(2), None, None)
    assert listed.status(3) == 0
    with pytest.raises(StatusListInvalid) as caught:
        listed.status(4)
    assert caught.value.reason == Reason.STATUS_INVALID
    assert caught.value.error == "invalid_token"


# -- the token's claim --------------------------------------------------------------------


def test_a_token_without_status_has_no_reference() -> None:
    assert status_ref({"sub": "alice"}) is None
    assert status_ref({"status": {"other_mechanism": {}}}) is None


def test_a_token_reference_is_read() -> None:
    assert status_ref({"status": {"status_list": {"idx": 5, "uri": URI}}}) == (5, URI)


@pytest.mark.parametrize(
    "status",
    [
        "revoked",
        {"status_list": "x"},
        {"status_list": {"idx": -1, "uri": URI}},
        {"status_list": {"idx": 1.0, "uri": URI}},
        {"status_list": {"idx": True, "uri": URI}},
        {"status_list": {"idx": "1", "uri": URI}},
        {"status_list": {"idx": 1}},
        {"status_list": {"idx": 1, "uri": ""}},
        {"status_list": {"idx": 1, "uri": 7}},
    ],
)
def test_a_malformed_status_claim_is_refused(status: Any) -> None:
    with pytest.raises(InvalidToken) as caught:
        status_ref({"status": status})
    assert caught.value.reason == Reason.BAD_CLAIMS


# -- the list token -----------------------------------------------------------------------


def test_a_good_list_token_is_read(rsa_key: rsa.RSAPrivateKey) -> None:
    listed = _parse(sign_list(list_claims(URI, ISSUER, [0, 1, 0, 2], bits=2, ttl=30), rsa_key), rsa_key)
    assert (listed.bits, listed.ttl) == (2, 30)
    assert [listed.status(i) for i in range(4)] == [0, 1, 0, 2]


def test_a_list_signed_by_another_key_is_refused(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_list(list_claims(URI, ISSUER, [0]), other_rsa_key)
    with pytest.raises(StatusListInvalid, match="status cannot be established") as caught:
        _parse(token, rsa_key)
    assert "does not publish" in caught.value.detail


def test_a_list_naming_our_kid_but_signed_by_another_key_is_refused(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign_list(list_claims(URI, ISSUER, [0]), other_rsa_key, kid=kid_of(rsa_key))
    with pytest.raises(StatusListInvalid) as caught:
        _parse(token, rsa_key)
    assert "signature" in caught.value.detail


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"iss": "https://evil.example"}, "trusted issuer"),
        ({"iss": None}, "trusted issuer"),
        ({"sub": "https://issuer.example/statuslists/2"}, "'sub'"),
        ({"sub": None}, "'sub'"),
        ({"iat": None}, "'iat'"),
        ({"iat": "1700000000"}, "'iat'"),
        ({"iat": int(time.time()) + 3600}, "future"),
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"ttl": -1}, "'ttl'"),
        ({"status_list": None}, "'status_list'"),
        ({"status_list": {"bits": 3, "lst": encode_lst(b"\0")}}, "'bits'"),
        ({"status_list": {"bits": 16, "lst": encode_lst(b"\0")}}, "'bits'"),
        ({"status_list": {"bits": "1", "lst": encode_lst(b"\0")}}, "'bits'"),
        ({"status_list": {"bits": True, "lst": encode_lst(b"\0")}}, "'bits'"),
        ({"status_list": {"bits": 1}}, "'lst'"),
        ({"status_list": {"bits": 1, "lst": "not base64!"}}, "base64url"),
        ({"status_list": {"bits": 1, "lst": b64url_encode(b"plain bytes")}}, "zlib"),
        ({"status_list": {"bits": 1, "lst": b64url_encode(zlib.compress(b"\0" * 64)[:-6])}}, "truncated"),
        ({"status_list": {"bits": 1, "lst": b64url_encode(zlib.compress(b"\0") + b"junk")}}, "after"),
        ({"status_list": {"bits": 1, "lst": encode_lst(b"")}}, "empty"),
    ],
)
def test_a_list_with_bad_claims_is_refused(rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any], detail: str) -> None:
    token = sign_list(list_claims(URI, ISSUER, [0, 1], **overrides), rsa_key)
    with pytest.raises(StatusListInvalid) as caught:
        _parse(token, rsa_key)
    assert detail in caught.value.detail


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None, "statuslist+cwt"])
def test_a_list_of_another_type_is_refused(rsa_key: rsa.RSAPrivateKey, typ: str | None) -> None:
    with pytest.raises(StatusListInvalid) as caught:
        _parse(sign_list(list_claims(URI, ISSUER, [0]), rsa_key, typ=typ), rsa_key)
    assert "type" in caught.value.detail


def test_the_media_type_spelling_of_typ_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_list(list_claims(URI, ISSUER, [1]), rsa_key, typ="application/statuslist+jwt")
    assert _parse(token, rsa_key).status(0) == 1


def test_an_unsigned_list_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    header = {"alg": "none", "typ": "statuslist+jwt", "kid": kid_of(rsa_key)}
    with pytest.raises(StatusListInvalid) as caught:
        _parse(compact(header, list_claims(URI, ISSUER, [0])), rsa_key)
    assert "algorithm" in caught.value.detail


def test_a_list_with_a_critical_extension_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_list(list_claims(URI, ISSUER, [0]), rsa_key, crit=["exp"])
    with pytest.raises(StatusListInvalid) as caught:
        _parse(token, rsa_key)
    assert "extension" in caught.value.detail


@pytest.mark.parametrize("cut", [1, 10, 200])
def test_a_truncated_list_token_is_refused(rsa_key: rsa.RSAPrivateKey, cut: int) -> None:
    token = sign_list(list_claims(URI, ISSUER, [0] * 100), rsa_key)
    with pytest.raises(StatusListInvalid):
        _parse(token[:-cut], rsa_key)


@pytest.mark.parametrize("text", ["", "a.b", "a.b.c.d", "é.b.c", "e30.e30"])
def test_what_is_not_a_compact_jws_is_refused(rsa_key: rsa.RSAPrivateKey, text: str) -> None:
    with pytest.raises(StatusListInvalid):
        _parse(text, rsa_key)


def test_a_zlib_bomb_is_refused_without_inflating_it() -> None:
    bomb = base64.urlsafe_b64encode(zlib.compress(b"\0" * (64 << 20), 9)).rstrip(b"=").decode()
    assert len(bomb) < 200_000
    with pytest.raises(StatusListInvalid) as caught:
        inflate(bomb, 1 << 20)
    assert "more than" in caught.value.detail


def test_a_list_inflating_past_the_bound_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_list(list_claims(URI, ISSUER, [0] * 8 * 4096), rsa_key)
    assert _parse(token, rsa_key, max_bytes=4096).status(0) == 0
    with pytest.raises(StatusListInvalid):
        _parse(token, rsa_key, max_bytes=4095)
