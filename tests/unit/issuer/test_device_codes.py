"""Unit tests for issuer.device_codes: user codes (RFC 8628 section 6.1) and the poll's answers, on a clock of the test's."""

from __future__ import annotations

import hashlib
import types

import pytest
from sqlalchemy import insert

from issuer import device_codes
from issuer.db import Database, users
from issuer.device_codes import SLOW_DOWN, USER_CODE_ALPHABET, DeviceCodes, display, new_user_code, normalise
from tests.support.fakes import FakeClock
from tests.support.sql import rows

TTL = 600
INTERVAL = 5


@pytest.fixture
def store(database: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> DeviceCodes:
    """Device codes on a fresh database, time read from the test's clock."""
    monkeypatch.setattr(device_codes, "time", types.SimpleNamespace(time=clock))
    with database.transaction() as conn:
        conn.execute(insert(users).values(id="u", username="alice", password_hash="-", scope="", created_at=0))
    return DeviceCodes(database)


def _issue(store: DeviceCodes) -> tuple[str, str]:
    return store.issue("cli", "profile", "jwt-split-api", ttl=TTL, interval=INTERVAL)


def test_user_codes_are_eight_characters_of_the_alphabet_without_vowels() -> None:
    codes = {new_user_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(code) == 8 and set(code) <= set(USER_CODE_ALPHABET) for code in codes)
    assert not set("AEIOUY0123456789") & set(USER_CODE_ALPHABET)
    assert display("BCDFGHJK") == "BCDF-GHJK"


@pytest.mark.parametrize("typed", ["BCDF-GHJK", "bcdf-ghjk", "bcdfghjk", " BCDF GHJK ", "bcdf - ghjk"])
def test_typed_codes_are_normalised(typed: str) -> None:
    assert normalise(typed) == "BCDFGHJK"


@pytest.mark.parametrize(
    "typed", ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1", "BCDF\u00adGHJK", "x" * 1000]
)
def test_what_cannot_be_a_code_is_refused(typed: str) -> None:
    assert normalise(typed) is None


def test_codes_are_stored_only_as_their_sha256(store: DeviceCodes, database: Database) -> None:
    device_code, user_code = _issue(store)
    (row,) = rows(database, "SELECT * FROM device_codes")
    assert row["device_code_hash"] == hashlib.sha256(device_code.encode()).hexdigest()
    assert row["user_code_hash"] == hashlib.sha256(user_code.encode()).hexdigest()
    assert device_code not in repr(row)
    assert user_code not in repr(row)


def test_a_poll_is_pending_and_one_too_soon_slows_the_device_down(store: DeviceCodes, clock: FakeClock) -> None:
    device_code, _ = _issue(store)
    assert store.poll(device_code, "cli").error == "authorization_pending"
    clock.advance(INTERVAL - 1)
    assert store.poll(device_code, "cli").error == "slow_down"
    clock.advance(INTERVAL)  # the old interval is no longer enough
    assert store.poll(device_code, "cli").error == "slow_down"
    clock.advance(INTERVAL + 2 * SLOW_DOWN)
    assert store.poll(device_code, "cli").error == "authorization_pending"


def test_a_code_expires(store: DeviceCodes, clock: FakeClock) -> None:
    device_code, user_code = _issue(store)
    clock.advance(TTL)
    assert store.pending(user_code) is None
    assert store.poll(device_code, "cli").error == "expired_token"


def test_another_clients_code_is_unknown_to_it(store: DeviceCodes) -> None:
    device_code, _ = _issue(store)
    assert store.poll(device_code, "someone-else").error == "invalid_grant"
    assert store.poll("no-such-code", "cli").error == "invalid_grant"


def test_a_decision_is_taken_once(store: DeviceCodes) -> None:
    _, user_code = _issue(store)
    pending = store.pending(user_code)
    assert pending is not None
    assert store.decide(pending.device_code_hash, approved=False, user_id="u", scope="", session_hash=None)
    assert not store.decide(pending.device_code_hash, approved=True, user_id="u", scope="profile", session_hash=None)
    assert store.pending(user_code) is None


def test_expired_requests_are_pruned_a_day_later(store: DeviceCodes, database: Database, clock: FakeClock) -> None:
    _issue(store)
    now = int(clock())
    assert DeviceCodes.prune(database, now + TTL + device_codes.DEVICE_CODE_KEPT - 1, batch=10) == 0
    assert DeviceCodes.prune(database, now + TTL + device_codes.DEVICE_CODE_KEPT + 1, batch=10) == 1


def test_a_deleted_clients_requests_are_spent(store: DeviceCodes, database: Database) -> None:
    device_code, _ = _issue(store)
    assert DeviceCodes.spend_client(database, "cli") == 1
    assert store.poll(device_code, "cli").error == "invalid_grant"
