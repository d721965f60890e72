"""Unit tests for issuer.second_factor: whether a user has one-time codes or a passkey, on each engine."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, update

from issuer.credentials import Passkeys
from issuer.db import Database, totp_factors, users
from issuer.second_factor import has_second_factor


@pytest.fixture
def database_with_users(database: Database) -> Database:
    """A fresh database with users u1 and u2 and no factor."""
    with database.transaction() as conn:
        for user_id, name in (("u1", "alice"), ("u2", "bob")):
            conn.execute(insert(users).values(id=user_id, username=name, password_hash="-", scope="", created_at=0))
    return database


def _codes(database: Database, user_id: str) -> None:
    with database.transaction() as conn:
        conn.execute(insert(totp_factors).values(user_id=user_id, sealed_seed=b"sealed", created_at=1))


def _confirm(database: Database, user_id: str) -> None:
    with database.transaction() as conn:
        conn.execute(update(totp_factors).where(totp_factors.c.user_id == user_id).values(confirmed_at=2))


def _passkey(database: Database, user_id: str) -> None:
    Passkeys(database).add(
        user_id,
        credential_id=f"cred-{user_id}",
        public_key=b"\xa5cose",
        sign_count=0,
        transports=("internal",),
        backup_eligible=False,
        backup_state=False,
        name="Laptop",
    )


def test_a_user_with_no_factor_has_none(database_with_users: Database) -> None:
    assert has_second_factor(database_with_users, "u1") is False
    assert has_second_factor(database_with_users, "nobody") is False


def test_one_time_codes_count_once_confirmed_and_for_their_user_only(database_with_users: Database) -> None:
    _codes(database_with_users, "u1")
    assert has_second_factor(database_with_users, "u1") is False  # enrollment waits for its first code
    _confirm(database_with_users, "u1")
    assert has_second_factor(database_with_users, "u1") is True
    assert has_second_factor(database_with_users, "u2") is False


def test_a_passkey_counts_for_its_user_only(database_with_users: Database) -> None:
    _passkey(database_with_users, "u2")
    assert has_second_factor(database_with_users, "u2") is True
    assert has_second_factor(database_with_users, "u1") is False


def test_both_factors_count_as_one(database_with_users: Database) -> None:
    _codes(database_with_users, "u1")
    _confirm(database_with_users, "u1")
    _passkey(database_with_users, "u1")
    assert has_second_factor(database_with_users, "u1") is True
