"""Unit tests for issuer.totp: sealed seeds, one use per code, one step of drift, recovery codes spent once."""

from __future__ import annotations

import base64

import pyotp
import pytest
from sqlalchemy import insert, update

from issuer.db import Database, totp_factors, users
from issuer.kek import new_key_encryption_key
from issuer.totp import PERIOD, FactorError, SeedUnreadable, TotpFactors
from tests.support.sql import rows

NOW = 1_800_000_000  # a step boundary is not needed: steps are NOW // 30 and its neighbours


@pytest.fixture
def kek() -> bytes:
    return new_key_encryption_key()


@pytest.fixture
def store(database: Database, kek: bytes) -> TotpFactors:
    """Factors on a fresh database with users alice and bob."""
    with database.transaction() as conn:
        for user_id in ("alice", "bob"):
            conn.execute(insert(users).values(id=user_id, username=user_id, password_hash="-", scope="", created_at=0))
    return TotpFactors(database, (kek,), issuer_name="jwt-split test")


def _code(secret: str, at: int) -> str:
    return pyotp.TOTP(secret).at(at)


def _enrolled(store: TotpFactors, user_id: str = "alice") -> tuple[str, list[str]]:
    secret = store.start(user_id, now=NOW - 10 * PERIOD)
    codes = store.confirm(user_id, _code(secret, NOW - 10 * PERIOD), now=NOW - 10 * PERIOD)
    assert codes is not None
    return secret, codes


def test_the_seed_is_sealed_never_stored_in_plaintext(store: TotpFactors, database: Database) -> None:
    secret = store.start("alice", now=NOW)
    (row,) = rows(database, "SELECT sealed_seed FROM totp_factors WHERE user_id = 'alice'")
    stored = bytes(row["sealed_seed"])
    assert secret.encode() not in stored
    assert base64.b32decode(secret) not in stored
    assert len(stored) > len(secret)


def test_a_seed_moved_onto_another_users_row_does_not_open(store: TotpFactors, database: Database) -> None:
    store.start("alice", now=NOW)
    store.start("bob", now=NOW)
    (row,) = rows(database, "SELECT sealed_seed FROM totp_factors WHERE user_id = 'alice'")
    with database.transaction() as conn:
        conn.execute(update(totp_factors).where(totp_factors.c.user_id == "bob").values(sealed_seed=row["sealed_seed"]))
    with pytest.raises(SeedUnreadable, match="damaged"):
        store.confirm("bob", "123456", now=NOW)


def test_a_seed_sealed_under_another_kek_is_unreadable_not_a_wrong_code(store: TotpFactors, database: Database) -> None:
    secret, _ = _enrolled(store)
    other = TotpFactors(database, (new_key_encryption_key(),), issuer_name="x")
    with pytest.raises(SeedUnreadable, match="another key-encryption key"):
        other.verify("alice", _code(secret, NOW), now=NOW)


def test_enrollment_is_active_only_after_the_first_code(store: TotpFactors) -> None:
    secret = store.start("alice", now=NOW)
    assert not store.active("alice")
    assert store.confirm("alice", "000000" if _code(secret, NOW) != "000000" else "111111", now=NOW) is None
    assert not store.active("alice")
    codes = store.confirm("alice", _code(secret, NOW), now=NOW)
    assert codes is not None
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert store.active("alice")
    status = store.status("alice")
    assert status is not None
    assert status.recovery_codes_left == 10
    assert not store.active("bob")


def test_a_second_enrollment_is_refused_while_one_is_active(store: TotpFactors) -> None:
    _enrolled(store)
    with pytest.raises(FactorError):
        store.start("alice", now=NOW)


def test_a_code_is_accepted_once_no_replay_within_its_window(store: TotpFactors) -> None:
    secret, _ = _enrolled(store)
    code = _code(secret, NOW)
    assert store.verify("alice", code, now=NOW) == "otp"
    assert store.verify("alice", code, now=NOW) is None
    assert store.verify("alice", code, now=NOW + PERIOD) is None  # still within its window of drift
    # The next step's code is new, and an older step's can no longer be used.
    assert store.verify("alice", _code(secret, NOW - PERIOD), now=NOW) is None
    assert store.verify("alice", _code(secret, NOW + PERIOD), now=NOW + PERIOD) == "otp"


def test_the_confirming_code_cannot_log_in_again(store: TotpFactors) -> None:
    secret = store.start("alice", now=NOW)
    code = _code(secret, NOW)
    assert store.confirm("alice", code, now=NOW) is not None
    assert store.verify("alice", code, now=NOW) is None


@pytest.mark.parametrize("offset", [-1, 1])
def test_one_step_of_drift_either_side_is_accepted(store: TotpFactors, offset: int) -> None:
    secret, _ = _enrolled(store)
    assert store.verify("alice", _code(secret, NOW + offset * PERIOD), now=NOW) == "otp"


@pytest.mark.parametrize("offset", [-2, 2])
def test_two_steps_away_is_refused(store: TotpFactors, offset: int) -> None:
    secret, _ = _enrolled(store)
    assert store.verify("alice", _code(secret, NOW + offset * PERIOD), now=NOW) is None


def test_a_recovery_code_works_once_and_for_its_user_only(store: TotpFactors) -> None:
    _, codes = _enrolled(store)
    _enrolled(store, "bob")
    assert store.verify("bob", codes[0], now=NOW) is None
    assert store.verify("alice", codes[0].upper().replace("-", " "), now=NOW) == "recovery"
    assert store.verify("alice", codes[0], now=NOW) is None
    status = store.status("alice")
    assert status is not None
    assert status.recovery_codes_left == 9


def test_recovery_codes_are_stored_hashed(store: TotpFactors, database: Database) -> None:
    _, codes = _enrolled(store)
    stored = {row["code_hash"] for row in rows(database, "SELECT code_hash FROM recovery_codes")}
    assert len(stored) == 10
    assert not any(code.replace("-", "") in value or code in value for code in codes for value in stored)


def test_codes_of_a_removed_factor_do_nothing(store: TotpFactors) -> None:
    secret, codes = _enrolled(store)
    assert store.remove("alice")
    assert not store.active("alice")
    assert store.verify("alice", _code(secret, NOW), now=NOW) is None
    assert store.verify("alice", codes[1], now=NOW) is None
    assert not store.remove("alice")


def test_deleting_the_user_deletes_the_factor_and_codes(store: TotpFactors, database: Database) -> None:
    _enrolled(store)
    with database.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM users WHERE id = 'alice'")
    assert rows(database, "SELECT user_id FROM totp_factors") == []
    assert rows(database, "SELECT user_id FROM recovery_codes") == []


def test_reseal_moves_seeds_to_a_new_kek(store: TotpFactors, database: Database, kek: bytes) -> None:
    secret, _ = _enrolled(store)
    new = new_key_encryption_key()
    assert store.reseal(new) == 1
    assert store.reseal(new) == 0
    moved = TotpFactors(database, (new,), issuer_name="x")
    assert moved.verify("alice", _code(secret, NOW), now=NOW) == "otp"


def test_provisioning_uri_is_what_authenticator_apps_read(store: TotpFactors) -> None:
    uri = store.provisioning_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "alice")
    assert uri.startswith("otpauth://totp/")
    assert "secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" in uri
    assert "alice" in uri
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.digits == 6
    assert parsed.interval == 30
