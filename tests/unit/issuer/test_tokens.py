"""Unit tests for issuer.tokens: RFC 9068 access tokens and rotating refresh tokens."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import db
from issuer.keys import SigningKey
from issuer.tokens import Grant, RefreshError, RefreshTokens, mint_access_token
from shared.verifier import Verifier
from tests.support.tokens import kid_of

ISSUER = "http://issuer.test"
AUDIENCE = "jwt-split-api"
GRANT = Grant("alice", "cli", "admin profile")


@pytest.fixture
def signing_key(rsa_key: rsa.RSAPrivateKey) -> SigningKey:
    return SigningKey(kid_of(rsa_key), rsa_key)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "issuer.sqlite3"
    db.initialise(path)
    connection = db.connect(path)
    yield connection
    connection.close()


@pytest.fixture
def refresh(conn: sqlite3.Connection) -> RefreshTokens:
    return RefreshTokens(conn, ttl=3600)


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
    assert set(decoded) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"}
    assert decoded["iss"] == ISSUER
    assert decoded["sub"] == "alice"
    assert decoded["aud"] == AUDIENCE
    assert decoded["iat"] == 1_700_000_000
    assert decoded["exp"] == 1_700_000_300
    assert decoded["client_id"] == "cli"
    assert decoded["scope"] == "admin profile"
    assert len(decoded["jti"]) == 32


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


def test_refresh_token_is_random_and_stored_only_as_a_hash(refresh: RefreshTokens, conn: sqlite3.Connection) -> None:
    token = refresh.issue(GRANT)
    assert len(token) >= 43
    assert token != refresh.issue(GRANT)
    hashes = [row["token_hash"] for row in conn.execute("SELECT token_hash FROM refresh_tokens")]
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes


def test_rotate_returns_the_grant_and_a_working_successor(refresh: RefreshTokens) -> None:
    token = refresh.issue(GRANT)
    grant, successor = refresh.rotate(token, "cli")
    assert grant == GRANT
    assert successor != token
    again, third = refresh.rotate(successor, "cli")
    assert again == GRANT
    assert third not in {token, successor}


def test_successor_stays_in_the_same_family(refresh: RefreshTokens, conn: sqlite3.Connection) -> None:
    token = refresh.issue(GRANT)
    refresh.rotate(token, "cli")
    families = {row["family_id"] for row in conn.execute("SELECT family_id FROM refresh_tokens")}
    assert len(families) == 1


def test_reused_refresh_token_revokes_the_whole_family(refresh: RefreshTokens) -> None:
    token = refresh.issue(GRANT)
    _, successor = refresh.rotate(token, "cli")
    with pytest.raises(RefreshError, match="already used; its session has been revoked"):
        refresh.rotate(token, "cli")
    with pytest.raises(RefreshError, match="has been revoked"):
        refresh.rotate(successor, "cli")


def test_reuse_leaves_other_families_alone(refresh: RefreshTokens) -> None:
    token = refresh.issue(GRANT)
    other = refresh.issue(GRANT)
    refresh.rotate(token, "cli")
    with pytest.raises(RefreshError):
        refresh.rotate(token, "cli")
    assert refresh.rotate(other, "cli")[0] == GRANT


def test_expired_refresh_token_is_refused(conn: sqlite3.Connection) -> None:
    token = RefreshTokens(conn, ttl=0).issue(GRANT)
    with pytest.raises(RefreshError, match="has expired"):
        RefreshTokens(conn, ttl=3600).rotate(token, "cli")


def test_revoked_refresh_token_is_refused(refresh: RefreshTokens) -> None:
    token = refresh.issue(GRANT)
    assert refresh.revoke(token) is True
    with pytest.raises(RefreshError, match="has been revoked"):
        refresh.rotate(token, "cli")


def test_revoking_a_successor_revokes_its_family(refresh: RefreshTokens) -> None:
    token = refresh.issue(GRANT)
    _, successor = refresh.rotate(token, "cli")
    refresh.revoke(successor)
    with pytest.raises(RefreshError, match="has been revoked"):
        refresh.rotate(successor, "cli")


def test_revoke_of_unknown_token_returns_false(refresh: RefreshTokens) -> None:
    assert refresh.revoke("not-a-token") is False


def test_refresh_token_of_another_client_is_refused_and_not_spent(refresh: RefreshTokens) -> None:
    token = refresh.issue(GRANT)
    with pytest.raises(RefreshError, match="issued to another client"):
        refresh.rotate(token, "evil-client")
    assert refresh.rotate(token, "cli")[0] == GRANT


def test_unknown_refresh_token_is_refused(refresh: RefreshTokens) -> None:
    with pytest.raises(RefreshError, match="not known"):
        refresh.rotate("made-up", "cli")


def test_failed_rotation_leaves_no_open_transaction(refresh: RefreshTokens, conn: sqlite3.Connection) -> None:
    with pytest.raises(RefreshError):
        refresh.rotate("made-up", "cli")
    assert not conn.in_transaction
