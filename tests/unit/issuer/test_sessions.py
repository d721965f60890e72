"""Unit tests for issuer.sessions: server-side login sessions, known to the browser only by a random id."""

from __future__ import annotations

import hashlib
import sqlite3
import types

import pytest

from issuer import sessions
from issuer.sessions import LoginSessions
from tests.support.fakes import FakeClock

TTL = 3600


@pytest.fixture
def store(issuer_conn: sqlite3.Connection, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> LoginSessions:
    """Login sessions on a fresh database, with time read from the test's clock."""
    monkeypatch.setattr(sessions, "time", types.SimpleNamespace(time=clock))
    return LoginSessions(issuer_conn, TTL)


def _ended_at(conn: sqlite3.Connection, session_id: str) -> int | None:
    row = conn.execute(
        "SELECT ended_at FROM login_sessions WHERE session_hash = ?", (LoginSessions.hash_of(session_id),)
    ).fetchone()
    value: int | None = row["ended_at"]
    return value


# -- create and look up -------------------------------------------------------------------


def test_created_session_belongs_to_its_user(store: LoginSessions) -> None:
    assert store.user(store.create("alice")) == "alice"


def test_each_session_id_is_new_and_long(store: LoginSessions) -> None:
    ids = {store.create("alice") for _ in range(20)}
    assert len(ids) == 20
    assert all(len(session_id) >= 43 for session_id in ids)


def test_sessions_of_different_users_are_told_apart(store: LoginSessions) -> None:
    alice, bob = store.create("alice"), store.create("bob")
    assert (store.user(alice), store.user(bob)) == ("alice", "bob")


@pytest.mark.parametrize("session_id", [None, "", "made-up-session-id"])
def test_missing_or_unknown_session_has_no_user(store: LoginSessions, session_id: str | None) -> None:
    store.create("alice")
    assert store.user(session_id) is None


def test_session_ids_are_stored_only_as_their_sha256(store: LoginSessions, issuer_conn: sqlite3.Connection) -> None:
    session_id = store.create("alice")
    row = issuer_conn.execute("SELECT * FROM login_sessions").fetchone()
    assert row["session_hash"] == hashlib.sha256(session_id.encode()).hexdigest()
    assert LoginSessions.hash_of(session_id) == row["session_hash"]
    assert session_id not in [str(value) for value in tuple(row)]


def test_the_stored_hash_is_not_itself_a_session_id(store: LoginSessions) -> None:
    session_id = store.create("alice")
    assert store.user(LoginSessions.hash_of(session_id)) is None


# -- expiry -------------------------------------------------------------------------------


def test_session_lives_until_just_before_its_ttl(store: LoginSessions, clock: FakeClock) -> None:
    session_id = store.create("alice")
    clock.advance(TTL - 1)
    assert store.user(session_id) == "alice"


def test_session_expires_after_its_ttl(store: LoginSessions, clock: FakeClock) -> None:
    session_id = store.create("alice")
    clock.advance(TTL)
    assert store.user(session_id) is None


def test_expiry_follows_the_configured_ttl(issuer_conn: sqlite3.Connection, store: LoginSessions) -> None:
    short = LoginSessions(issuer_conn, 60).create("alice")
    row = issuer_conn.execute(
        "SELECT created_at, expires_at FROM login_sessions WHERE session_hash = ?", (LoginSessions.hash_of(short),)
    ).fetchone()
    assert row["expires_at"] - row["created_at"] == 60


# -- ending -------------------------------------------------------------------------------


def test_end_logs_the_session_out(store: LoginSessions) -> None:
    session_id = store.create("alice")
    store.end(session_id)
    assert store.user(session_id) is None


def test_end_leaves_other_sessions_of_the_same_user_alone(store: LoginSessions) -> None:
    ended, kept = store.create("alice"), store.create("alice")
    store.end(ended)
    assert store.user(kept) == "alice"


@pytest.mark.parametrize("session_id", [None, "", "made-up-session-id"])
def test_end_of_missing_or_unknown_session_changes_nothing(store: LoginSessions, session_id: str | None) -> None:
    live = store.create("alice")
    store.end(session_id)
    assert store.user(live) == "alice"


def test_end_hash_ends_the_session_known_by_its_hash(store: LoginSessions) -> None:
    session_id = store.create("alice")
    store.end_hash(LoginSessions.hash_of(session_id))
    assert store.user(session_id) is None


def test_ending_twice_keeps_the_first_end_time(
    store: LoginSessions, clock: FakeClock, issuer_conn: sqlite3.Connection
) -> None:
    session_id = store.create("alice")
    store.end(session_id)
    first = _ended_at(issuer_conn, session_id)
    clock.advance(100)
    store.end_hash(LoginSessions.hash_of(session_id))
    assert first == int(clock.now - 100)
    assert _ended_at(issuer_conn, session_id) == first


def test_an_ended_session_stays_ended_within_its_ttl(store: LoginSessions, clock: FakeClock) -> None:
    session_id = store.create("alice")
    store.end(session_id)
    clock.advance(1)
    assert store.user(session_id) is None
