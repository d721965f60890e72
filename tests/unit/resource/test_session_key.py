"""Unit tests for resource_server.session_key: the browser session's DPoP key in its cookie."""

from __future__ import annotations

import base64

import pytest

from jwt_verifier.dpop import jwk_thumbprint
from jwt_verifier.errors import DPoPInvalidToken, Reason
from resource_server.session_key import KEY_CACHE_SIZE, check_binding, decode, encode, new_key
from shared.dpop_client import ServerNonces


def test_a_key_survives_its_cookie() -> None:
    nonces = ServerNonces()
    key = new_key(nonces)
    value = encode(key)
    assert len(value) == 43
    again = decode(value, nonces)
    assert again is not None
    assert again.jkt == key.jkt == jwk_thumbprint(key.jwk)


def test_a_cookies_key_is_derived_once_while_it_is_among_the_last_decoded() -> None:
    nonces = ServerNonces()
    value = encode(new_key(nonces))
    first, again = decode(value, nonces), decode(value, nonces)
    assert first is not None
    assert again is not None
    assert again.key is first.key  # remembered, not derived again
    assert again.jkt == first.jkt
    for _ in range(KEY_CACHE_SIZE):  # as many other sessions push it out (the cache is bounded)
        decode(encode(new_key(nonces)), nonces)
    later = decode(value, nonces)
    assert later is not None
    assert later.key is not first.key
    assert later.jkt == first.jkt


def test_each_login_gets_a_key_of_its_own() -> None:
    assert new_key(ServerNonces()).jkt != new_key(ServerNonces()).jkt


@pytest.mark.parametrize(
    "value",
    [None, "", "A" * 43, "_" * 43, "A" * 42, "A" * 44, "not a key at all", "é" * 43, "AAAA.AAAA"],
    ids=["none", "empty", "zero", "above-the-order", "short", "long", "words", "non-ascii", "dots"],
)
def test_a_cookie_that_holds_no_p256_scalar_is_no_key(value: str | None) -> None:
    assert decode(value, ServerNonces()) is None


def test_keys_share_the_nonces_the_issuer_gave() -> None:
    nonces = ServerNonces()
    first = new_key(nonces)
    assert first.remember_nonce("http://issuer.test/token", {"DPoP-Nonce": "n-1"})
    later = decode(encode(new_key(nonces)), nonces)
    assert later is not None
    assert '"nonce":"n-1"' in _claims_json(later.proof("POST", "http://issuer.test/token"))


def _claims_json(proof: str) -> str:
    payload = proof.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


def test_a_bound_token_needs_the_sessions_key_and_an_unbound_one_passes() -> None:
    key = new_key(ServerNonces())
    check_binding({"sub": "alice", "cnf": {"jkt": key.jkt}}, key)
    check_binding({"sub": "alice"}, None)  # a login from before DPoP: a bearer token, as it was
    for held in (None, new_key(ServerNonces())):
        with pytest.raises(DPoPInvalidToken) as refused:
            check_binding({"sub": "alice", "cnf": {"jkt": key.jkt}}, held)
        assert refused.value.reason is Reason.DPOP_BINDING
