"""Unit tests for issuer.sessions: server-side login sessions, known to the browser only by a random id."""

from __future__ import annotations

import hashlib
import types

import pytest
from sqlalchemy import insert

from issuer import sessions
from issuer.db import Database, users
from issuer.opaque import secret_hash
from issuer.sessions import LoginSessions, public_id
from issuer.tokens import Login
from tests.support.fakes import FakeClock
from tests.support.sql import rows

TTL = 3600


@pytest.fixture
def store(database: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> LoginSessions:
    """Login sessions on a fresh database with users alice and bob, time read from the test's clock."""
    monkeypatch.setattr(sessions, "time", types.SimpleNamespace(time=clock))
    with database.transaction() as conn:
        for user_id in ("alice", "bob"):
            conn.execute(insert(users).values(id=user_id, username=user_id, password_hash="-", scope="", created_at=0))
    return LoginSessions(database, TTL)


def _ended_at(database: Database, session_id: str) -> int | None:
    (row,) = rows(database, "SELECT ended_at FROM login_sessions WHERE session_hash = :h", h=secret_hash(session_id))
    value: int | None = row["ended_at"]
    return value


# -- create and look up -------------------------------------------------------------------


def test_created_session_belongs_to_its_user(store: LoginSessions) -> None:
    assert store.user_id(store.create("alice")) == "alice"


def test_each_session_id_is_new_and_long(store: LoginSessions) -> None:
    ids = {store.create("alice") for _ in range(20)}
    assert len(ids) == 20
    assert all(len(session_id) >= 43 for session_id in ids)


def test_sessions_of_different_users_are_told_apart(store: LoginSessions) -> None:
    alice, bob = store.create("alice"), store.create("bob")
    assert (store.user_id(alice), store.user_id(bob)) == ("alice", "bob")


@pytest.mark.parametrize("session_id", [None, "", "made-up-session-id"])
def test_missing_or_unknown_session_has_no_user(store: LoginSessions, session_id: str | None) -> None:
    store.create("alice")
    assert store.user_id(session_id) is None


def test_session_ids_are_stored_only_as_their_sha256(store: LoginSessions, database: Database) -> None:
    session_id = store.create("alice")
    (row,) = rows(database, "SELECT * FROM login_sessions")
    assert row["session_hash"] == hashlib.sha256(session_id.encode()).hexdigest()
    assert secret_hash(session_id) == row["session_hash"]
    assert session_id not in [str(value) for value in row.values()]


def test_the_stored_hash_is_not_itself_a_session_id(store: LoginSessions) -> None:
    session_id = store.create("alice")
    assert store.user_id(secret_hash(session_id)) is None


# -- expiry -------------------------------------------------------------------------------


def test_session_lives_until_just_before_its_ttl(store: LoginSessions, clock: FakeClock) -> None:
    session_id = store.create("alice")
    clock.advance(TTL - 1)
    assert store.user_id(session_id) == "alice"


def test_session_expires_after_its_ttl(store: LoginSessions, clock: FakeClock) -> None:
    session_id = store.create("alice")
    clock.advance(TTL)
    assert store.user_id(session_id) is None


def test_expiry_follows_the_configured_ttl(database: Database, store: LoginSessions) -> None:
    short = LoginSessions(database, 60).create("alice")
    (row,) = rows(
        database, "SELECT created_at, expires_at FROM login_sessions WHERE session_hash = :h", h=secret_hash(short)
    )
    assert row["expires_at"] - row["created_at"] == 60


# -- ending -------------------------------------------------------------------------------


def test_end_logs_the_session_out(store: LoginSessions) -> None:
    session_id = store.create("alice")
    store.end(secret_hash(session_id))
    assert store.user_id(session_id) is None


def test_end_leaves_other_sessions_of_the_same_user_alone(store: LoginSessions) -> None:
    ended, kept = store.create("alice"), store.create("alice")
    store.end(secret_hash(ended))
    assert store.user_id(kept) == "alice"


def test_end_of_an_unknown_session_changes_nothing(store: LoginSessions) -> None:
    live = store.create("alice")
    assert store.end(secret_hash("made-up-session-id")) is False
    assert store.user_id(live) == "alice"


def test_end_ends_the_session_known_by_its_hash(store: LoginSessions) -> None:
    session_id = store.create("alice")
    store.end(secret_hash(session_id))
    assert store.user_id(session_id) is None


def test_ending_twice_keeps_the_first_end_time(store: LoginSessions, clock: FakeClock, database: Database) -> None:
    session_id = store.create("alice")
    store.end(secret_hash(session_id))
    first = _ended_at(database, session_id)
    clock.advance(100)
    store.end(secret_hash(session_id))
    assert first == int(clock.now - 100)
    assert _ended_at(database, session_id) == first


def test_an_ended_session_stays_ended_within_its_ttl(store: LoginSessions, clock: FakeClock) -> None:
    session_id = store.create("alice")
    store.end(secret_hash(session_id))
    clock.advance(1)
    assert store.user_id(session_id) is None


def test_deleting_the_user_ends_their_sessions(store: LoginSessions, database: Database) -> None:
    session_id = store.create("alice")
    with database.transaction() as conn:
        conn.execute(users.delete().where(users.c.id == "alice"))
    assert store.user_id(session_id) is None
    assert rows(database, "SELECT * FROM login_sessions") == []


@pytest.mark.parametrize("session_id", [None, "", 42, ["list"]])
def test_a_malformed_session_id_has_no_user(store: LoginSessions, session_id: object) -> None:
    assert store.user_id(session_id) is None  # type: ignore[arg-type]


# -- the public sid (OpenID Connect) --------------------------------------------------------


def test_a_session_is_found_by_its_public_sid(store: LoginSessions) -> None:
    session_id = store.create("alice")
    session_hash = secret_hash(session_id)
    assert store.hash_of(public_id(session_hash)) == session_hash
    assert rows(store.database, "SELECT sid FROM login_sessions") == [{"sid": public_id(session_hash)}]


def test_an_expired_session_is_still_found_by_its_sid(store: LoginSessions, clock: FakeClock) -> None:
    session_hash = secret_hash(store.create("alice"))
    clock.advance(TTL + 1)
    assert store.hash_of(public_id(session_hash)) == session_hash  # its refresh tokens outlive it


def test_an_ended_session_is_not_found_by_its_sid(store: LoginSessions) -> None:
    session_hash = secret_hash(store.create("alice"))
    store.end(session_hash)
    assert store.hash_of(public_id(session_hash)) is None


@pytest.mark.parametrize("sid", ["", "nul\x00" * 6, "A" * 32, "0" * 33, "made-up"])
def test_a_sid_no_session_could_have_finds_nothing(store: LoginSessions, sid: str) -> None:
    store.create("alice")
    assert store.hash_of(sid) is None


# -- what the login proved (issuer.assurance) ---------------------------------------------


def test_a_session_remembers_what_its_login_proved_and_when(store: LoginSessions, clock: FakeClock) -> None:
    password = store.create("alice")
    clock.advance(10)
    two_factors = store.create("bob", amr=("pwd", "otp", "mfa"))
    assert store.login(secret_hash(password)) == Login(("pwd",), int(clock()) - 10)
    assert store.login(secret_hash(two_factors)) == Login(("pwd", "otp", "mfa"), int(clock()))
    assert store.login("0" * 64) is None


def test_an_ended_session_tells_no_login(store: LoginSessions) -> None:
    session_hash = secret_hash(store.create("alice"))
    assert store.end(session_hash)
    assert store.login(session_hash) is None


def test_a_session_refuses_methods_rfc_8176_does_not_name(store: LoginSessions) -> None:
    with pytest.raises(ValueError, match="RFC 8176"):
        store.create("alice", amr=("pwd", "magic"))
    with pytest.raises(ValueError, match="RFC 8176"):
        store.create("alice", amr=())
