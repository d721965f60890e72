"""Unit tests for issuer.tokens: RFC 9068 access tokens and rotating refresh tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer.db import Database
from issuer.keys import SigningKey
from issuer.tokens import Grant, RefreshError, RefreshReused, RefreshTokens, mint_access_token
from issuer.users import User
from jwt_verifier.verifier import Verifier
from tests.support.fakes import FakeClock
from tests.support.sql import rows
from tests.support.tokens import kid_of

ISSUER = "http://issuer.test"
AUDIENCE = "jwt-split-api"
GRANT = Grant("alice-id", "alice", "cli", "admin profile")


@pytest.fixture
def signing_key(rsa_key: rsa.RSAPrivateKey) -> SigningKey:
    return SigningKey(kid_of(rsa_key), rsa_key)


def _store(database: Database, ttl: int = 3600, family_ttl: int = 30 * 86400, reuse_grace: int = 30) -> RefreshTokens:
    return RefreshTokens(database, ttl=ttl, family_ttl=family_ttl, reuse_grace=reuse_grace, successor_key=b"k" * 32)


@pytest.fixture
def refresh(database: Database) -> RefreshTokens:
    return _store(database)


@pytest.fixture
def grant(alice: User) -> Grant:
    return Grant(alice.id, "alice", "cli", "admin profile")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> FakeClock:
    """The refresh token store's clock, moved by hand."""
    monkeypatch.setattr("issuer.tokens.time.time", clock)
    return clock


def _mint(signing_key: SigningKey, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "ttl": 600, **kwargs}
    return mint_access_token(signing_key, GRANT, **options)


# -- access tokens ------------------------------------------------------------------------


def test_access_token_header_is_rs256_at_jwt_with_the_kid(signing_key: SigningKey) -> None:
    token, _ = _mint(signing_key)
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "at+jwt", "kid": signing_key.kid}


def test_access_token_carries_every_rfc9068_claim(signing_key: SigningKey) -> None:
    token, claims = _mint(signing_key, now=1_700_000_000, ttl=300)
    decoded = jwt.decode(
        token,
        signing_key.private_key.public_key(),
        algorithms=["RS256"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded == claims
    assert set(decoded) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "preferred_username"}
    assert decoded["iss"] == ISSUER
    assert decoded["sub"] == GRANT.user_id  # the stable id (RFC 9068 section 2.2), never the name
    assert decoded["preferred_username"] == "alice"
    assert decoded["aud"] == AUDIENCE
    assert decoded["iat"] == 1_700_000_000
    assert decoded["exp"] == 1_700_000_300
    assert decoded["client_id"] == "cli"
    assert decoded["scope"] == "admin profile"
    assert len(decoded["jti"]) == 32


def test_a_clients_own_token_has_the_client_as_sub_and_no_preferred_username(signing_key: SigningKey) -> None:
    _, claims = mint_access_token(
        signing_key, Grant("", "batch", "batch", "orders:read"), issuer=ISSUER, audience=AUDIENCE, ttl=60
    )
    assert (claims["sub"], claims["client_id"]) == ("batch", "batch")
    assert "preferred_username" not in claims


def test_each_access_token_has_a_new_jti(signing_key: SigningKey) -> None:
    assert _mint(signing_key)[1]["jti"] != _mint(signing_key)[1]["jti"]


def test_access_token_defaults_to_the_current_time(signing_key: SigningKey) -> None:
    _, claims = _mint(signing_key)
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 60


def test_access_token_is_accepted_by_the_resource_verifier(signing_key: SigningKey) -> None:
    class Keys:
        def get(self, kid: str) -> rsa.RSAPublicKey:
            assert kid == signing_key.kid
            return signing_key.private_key.public_key()

    token, claims = _mint(signing_key)
    assert Verifier(Keys(), issuer=ISSUER, audience=AUDIENCE).verify(token) == claims


# -- refresh tokens -----------------------------------------------------------------------


def test_refresh_token_is_random_and_stored_only_as_a_hash(
    refresh: RefreshTokens, database: Database, grant: Grant
) -> None:
    token = refresh.issue(grant)
    assert len(token) >= 43
    assert token != refresh.issue(grant)
    hashes = [row["token_hash"] for row in rows(database, "SELECT token_hash FROM refresh_tokens")]
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes


def test_rotate_returns_the_grant_and_a_working_successor(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    grant, successor = refresh.rotate(token, "cli")
    assert grant == grant
    assert successor != token
    again, third = refresh.rotate(successor, "cli")
    assert again == grant
    assert third not in {token, successor}


def test_successor_stays_in_the_same_family(refresh: RefreshTokens, database: Database, grant: Grant) -> None:
    token = refresh.issue(grant)
    refresh.rotate(token, "cli")
    families = {row["family_id"] for row in rows(database, "SELECT family_id FROM refresh_tokens")}
    assert len(families) == 1


def test_reused_refresh_token_revokes_the_whole_family(refresh: RefreshTokens, grant: Grant, now: FakeClock) -> None:
    token = refresh.issue(grant)
    _, successor = refresh.rotate(token, "cli")
    now.advance(31)
    with pytest.raises(RefreshReused, match="already used; its session has been revoked"):
        refresh.rotate(token, "cli")
    with pytest.raises(RefreshError, match="has been revoked"):
        refresh.rotate(successor, "cli")


def test_reuse_leaves_other_families_alone(refresh: RefreshTokens, grant: Grant, now: FakeClock) -> None:
    token = refresh.issue(grant)
    other = refresh.issue(grant)
    refresh.rotate(token, "cli")
    now.advance(31)
    with pytest.raises(RefreshReused):
        refresh.rotate(token, "cli")
    assert refresh.rotate(other, "cli")[0] == grant


# -- the reuse grace: two tabs, or a retry after a lost response ----------------------------


def test_token_presented_again_within_the_grace_gets_the_same_successor(
    refresh: RefreshTokens, grant: Grant, now: FakeClock
) -> None:
    token = refresh.issue(grant)
    _, successor = refresh.rotate(token, "cli")
    now.advance(29)
    again, same = refresh.rotate(token, "cli")
    assert (again, same) == (grant, successor)
    # Nothing was revoked: the successor still works, and so does its own successor.
    assert refresh.rotate(successor, "cli")[0] == grant


def test_retry_within_the_grace_from_another_client_is_refused_and_revokes_nothing(
    refresh: RefreshTokens, grant: Grant
) -> None:
    token = refresh.issue(grant)
    _, successor = refresh.rotate(token, "cli")
    with pytest.raises(RefreshError, match="another client"):
        refresh.rotate(token, "resource-web")
    assert refresh.rotate(successor, "cli")[0] == grant


def test_grace_ends_when_the_successor_was_revoked(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    _, successor = refresh.rotate(token, "cli")
    refresh.revoke(successor, "cli")
    with pytest.raises(RefreshError, match="revoked"):
        refresh.rotate(token, "cli")


def test_no_grace_when_it_is_configured_off(database: Database, grant: Grant, now: FakeClock) -> None:
    store = _store(database, reuse_grace=0)
    token = store.issue(grant)
    store.rotate(token, "cli")
    now.advance(1)
    with pytest.raises(RefreshReused):
        store.rotate(token, "cli")


def test_concurrent_refreshes_of_one_token_all_succeed_with_one_successor(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    barrier = threading.Barrier(4)
    results: list[tuple[Grant, str] | BaseException] = []

    def tab() -> None:
        barrier.wait()
        try:
            results.append(refresh.rotate(token, "cli"))
        except RefreshError as exc:
            results.append(exc)

    threads = [threading.Thread(target=tab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(result, tuple) for result in results), results
    successors = {result[1] for result in results if isinstance(result, tuple)}
    assert len(successors) == 1
    assert refresh.rotate(successors.pop(), "cli")[0] == grant


# -- the family's absolute lifetime ---------------------------------------------------------


def test_family_ends_at_its_absolute_lifetime_however_often_refreshed(
    database: Database, grant: Grant, now: FakeClock
) -> None:
    store = _store(database, ttl=3600, family_ttl=2 * 3600)
    token = store.issue(grant)
    for _ in range(2):
        now.advance(3000)
        _, token = store.rotate(token, "cli")
    now.advance(1300)  # 7300 s: within the last token's own hour, past the family's two
    with pytest.raises(RefreshError, match="maximum lifetime"):
        store.rotate(token, "cli")


def test_a_successor_never_outlives_its_family(database: Database, grant: Grant, now: FakeClock) -> None:
    store = _store(database, ttl=3600, family_ttl=5000)
    token = store.issue(grant)
    now.advance(2000)
    store.rotate(token, "cli")
    expiries = [row["expires_at"] for row in rows(database, "SELECT expires_at FROM refresh_tokens")]
    assert max(expiries) == (1_700_000_000 + 5000)


def test_expired_refresh_token_is_refused(database: Database, grant: Grant) -> None:
    token = _store(database, ttl=0).issue(grant)
    with pytest.raises(RefreshError, match="has expired"):
        _store(database).rotate(token, "cli")


def test_revoked_refresh_token_is_refused(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    assert refresh.revoke(token, "cli") == ""
    with pytest.raises(RefreshError, match="has been revoked"):
        refresh.rotate(token, "cli")


def test_revoking_a_successor_revokes_its_family(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    _, successor = refresh.rotate(token, "cli")
    refresh.revoke(successor, "cli")
    with pytest.raises(RefreshError, match="has been revoked"):
        refresh.rotate(successor, "cli")


def test_revoke_of_unknown_token_returns_none(refresh: RefreshTokens, grant: Grant) -> None:
    assert refresh.revoke("not-a-token", "cli") is None


def test_revoke_by_another_client_returns_none_and_leaves_the_token(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    assert refresh.revoke(token, "resource-web") is None
    assert refresh.rotate(token, "cli")[0] == grant


def test_refresh_token_of_another_client_is_refused_and_not_spent(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)
    with pytest.raises(RefreshError, match="issued to another client"):
        refresh.rotate(token, "evil-client")
    assert refresh.rotate(token, "cli")[0] == grant


def test_unknown_refresh_token_is_refused(refresh: RefreshTokens, grant: Grant) -> None:
    with pytest.raises(RefreshError, match="not known"):
        refresh.rotate("made-up", "cli")


def test_failed_rotation_leaves_the_database_writable(refresh: RefreshTokens, grant: Grant) -> None:
    with pytest.raises(RefreshError):
        refresh.rotate("made-up", "cli")
    assert refresh.rotate(refresh.issue(grant), "cli")[0] == grant


def test_the_grace_never_hands_out_a_successor_that_was_used(refresh: RefreshTokens, grant: Grant) -> None:
    """A stolen spent token must not lead along the chain to the token the client holds now."""
    first = refresh.issue(grant)
    _, second = refresh.rotate(first, "cli")
    _, third = refresh.rotate(second, "cli")  # the rightful client has moved on
    with pytest.raises(RefreshReused):
        refresh.rotate(first, "cli")
    with pytest.raises(RefreshError, match="revoked"):
        refresh.rotate(third, "cli")


def test_every_replica_derives_the_same_successor(database: Database, grant: Grant) -> None:
    one, other = _store(database), _store(database)
    first = one.issue(grant)
    _, successor = one.rotate(first, "cli")
    assert other.rotate(first, "cli")[1] == successor  # a retry that reached another replica


def test_the_successor_holds_the_narrowed_grant(refresh: RefreshTokens, grant: Grant) -> None:
    # A grant narrowed once stays narrowed (RFC 6749 section 6): the next refresh starts from it.
    token = refresh.issue(grant)
    narrowed, successor = refresh.rotate(token, "cli", lambda held: dataclasses.replace(held, scope="profile"))
    assert narrowed.scope == "profile"
    assert refresh.rotate(successor, "cli")[0].scope == "profile"


def test_a_refusal_while_narrowing_leaves_the_token_unspent(refresh: RefreshTokens, grant: Grant) -> None:
    token = refresh.issue(grant)

    def refuse(held: Grant) -> Grant:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        refresh.rotate(token, "cli", refuse)
    assert refresh.rotate(token, "cli")[0] == grant
