"""Unit tests for issuer.prune: what the issuer no longer needs is deleted, what it still needs is kept."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert

from issuer import create_app, extensions, prune, statuslist
from issuer.cli import main
from issuer.db import Database, authorization_codes, login_sessions, refresh_tokens, users
from issuer.settings import IssuerSettings
from tests.support.browsing import VERIFIER, get_code
from tests.support.sql import rows

NOW = 1_000_000_000
DAY = 86400
REDIRECT = "http://rs.test/callback"
CLIENT_ID = "resource-web"


@pytest.fixture
def database(database: Database) -> Database:
    """The fresh database with the user alice."""
    with database.transaction() as conn:
        conn.execute(insert(users).values(id="alice", username="alice", password_hash="-", scope="", created_at=0))
    return database


def _code(database: Database, name: str, *, expires_at: int, session: str | None = None) -> None:
    values = {
        "code_hash": name,
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "code_challenge": "c",
        "user_id": "alice",
        "scope": "profile",
        "session_hash": session,
        "expires_at": expires_at,
    }
    with database.transaction() as conn:
        conn.execute(insert(authorization_codes).values(values))


def _token(database: Database, name: str, *, family_expires_at: int, session: str | None = None, **extra: Any) -> None:
    values = {
        "token_hash": name,
        "family_id": f"family-{name}",
        "user_id": "alice",
        "client_id": CLIENT_ID,
        "scope": "profile",
        "issued_at": NOW - DAY,
        "expires_at": min(NOW, family_expires_at),
        "family_expires_at": family_expires_at,
        "session_hash": session,
        **extra,
    }
    with database.transaction() as conn:
        conn.execute(insert(refresh_tokens).values(values))


def _session(database: Database, name: str, *, expires_at: int, ended_at: int | None = None) -> None:
    values = {
        "session_hash": name,
        "user_id": "alice",
        "created_at": expires_at - 3600,
        "expires_at": expires_at,
        "ended_at": ended_at,
        "sid": name,
    }
    with database.transaction() as conn:
        conn.execute(insert(login_sessions).values(values))


def _left(database: Database, table: str, key: str) -> set[str]:
    return {row[key] for row in rows(database, f"SELECT {key} FROM {table}")}  # noqa: S608 - the test's own names


# -- authorization codes ------------------------------------------------------------------


def test_codes_expired_more_than_a_day_ago_are_deleted(database: Database) -> None:
    _code(database, "old", expires_at=NOW - DAY - 1)
    _code(database, "recent", expires_at=NOW - DAY + 60)  # expired, but its reuse may still be detected
    _code(database, "live", expires_at=NOW + 60)
    pruned = prune.prune(database, NOW)
    assert pruned.authorization_codes == 1
    assert _left(database, "authorization_codes", "code_hash") == {"recent", "live"}


# -- refresh tokens -----------------------------------------------------------------------


def test_tokens_of_expired_families_are_deleted_and_live_families_kept(database: Database) -> None:
    _token(database, "ended", family_expires_at=NOW - 1)
    _token(database, "ended-revoked", family_expires_at=NOW - DAY, revoked_at=NOW - 2 * DAY)
    _token(database, "live", family_expires_at=NOW + DAY)
    _token(database, "live-used", family_expires_at=NOW + DAY, used_at=NOW - 10)  # its reuse is still detected
    pruned = prune.prune(database, NOW)
    assert pruned.refresh_tokens == 2
    assert _left(database, "refresh_tokens", "token_hash") == {"live", "live-used"}


# -- login sessions -----------------------------------------------------------------------


def test_expired_and_ended_sessions_are_deleted_and_live_ones_kept(database: Database) -> None:
    _session(database, "expired", expires_at=NOW - 3600)
    _session(database, "ended", expires_at=NOW + 3600, ended_at=NOW - 3600)
    _session(database, "live", expires_at=NOW + 3600)
    pruned = prune.prune(database, NOW)
    assert pruned.login_sessions == 2
    assert _left(database, "login_sessions", "session_hash") == {"live"}


def test_a_session_a_live_family_refers_to_is_kept_until_the_family_ends(database: Database) -> None:
    _session(database, "expired", expires_at=NOW - 3600)
    _session(database, "ended", expires_at=NOW + 3600, ended_at=NOW - 3600)
    _token(database, "of-expired", family_expires_at=NOW + DAY, session="expired")
    _token(database, "of-ended", family_expires_at=NOW + DAY, session="ended")
    assert prune.prune(database, NOW).login_sessions == 0
    assert _left(database, "login_sessions", "session_hash") == {"expired", "ended"}
    later = prune.prune(database, NOW + DAY + 1)
    assert (later.refresh_tokens, later.login_sessions) == (2, 2)
    assert _left(database, "login_sessions", "session_hash") == set()


def test_a_session_that_just_ended_is_kept_while_a_code_it_issued_may_be_redeemed(database: Database) -> None:
    _session(database, "just-ended", expires_at=NOW + 3600, ended_at=NOW - 1)
    _code(database, "its-code", expires_at=NOW + 59, session="just-ended")
    assert prune.prune(database, NOW).login_sessions == 0
    assert prune.prune(database, NOW + 3600).login_sessions == 1


# -- batches, repeats ---------------------------------------------------------------------


def test_a_backlog_larger_than_a_batch_is_deleted_whole(database: Database) -> None:
    count = 2 * prune.BATCH + 5
    with database.transaction() as conn:
        conn.execute(
            insert(authorization_codes),
            [
                {
                    "code_hash": f"code-{index}",
                    "client_id": CLIENT_ID,
                    "redirect_uri": REDIRECT,
                    "code_challenge": "c",
                    "user_id": "alice",
                    "scope": "profile",
                    "expires_at": NOW - 2 * DAY,
                }
                for index in range(count)
            ],
        )
    _code(database, "live", expires_at=NOW + 60)
    assert prune.prune(database, NOW, batch=100).authorization_codes == count
    assert _left(database, "authorization_codes", "code_hash") == {"live"}


def test_pruning_twice_or_together_deletes_each_row_once(database: Database) -> None:
    for index in range(50):
        _token(database, f"t{index}", family_expires_at=NOW - 1)
        _session(database, f"s{index}", expires_at=NOW - 3600)
    results: list[prune.Pruned] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(prune.prune(database, NOW, batch=7))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result.refresh_tokens for result in results) == 50
    assert sum(result.login_sessions for result in results) == 50
    assert prune.prune(database, NOW) == prune.Pruned(0, 0, 0)


# -- the refresh of a pruned-around session still gives an ID token -----------------------


@pytest.fixture
def settings(on_each_engine: IssuerSettings) -> IssuerSettings:
    """The issuer with the demo users and a web client, on SQLite, then on PostgreSQL."""
    return dataclasses.replace(on_each_engine, web_redirect_uris=(REDIRECT,))


class _At:
    """A `time` module whose clock reads `now`."""

    def __init__(self, now: int) -> None:
        self.now = now

    def time(self) -> float:
        return float(self.now)


def test_a_refresh_after_its_session_expired_and_was_pruned_around_still_gives_an_id_token(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = get_code(client, REDIRECT, scope="openid profile")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "code_verifier": VERIFIER,
    }
    first = client.post("/token", data=form).get_json()
    assert "id_token" in first
    settings = extensions.of(app).settings
    # When the login session has long expired, but the refresh token family has not.
    later = int(time.time()) + settings.login_session_ttl + DAY
    assert later < int(time.time()) + settings.refresh_family_ttl
    pruned = prune.prune(extensions.of(app).database, later)
    assert pruned.login_sessions == 0
    # The status lists pruned with that clock too: the worker hands out indexes on it (a block of
    # indexes it holds on PostgreSQL would otherwise name a list deleted "in its future").
    monkeypatch.setattr(statuslist, "time", _At(later))
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID}
    )
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    assert "id_token" in refreshed.get_json()


# -- the command line ---------------------------------------------------------------------


def test_db_prune_prints_how_many_rows_of_each_kind_it_deleted(issuer_settings: IssuerSettings) -> None:
    database = issuer_settings.database()
    try:
        with database.transaction() as conn:
            conn.execute(insert(users).values(id="alice", username="alice", password_hash="-", scope="", created_at=0))
        now = int(time.time())
        _code(database, "old", expires_at=now - 2 * DAY)
        _token(database, "ended", family_expires_at=now - 1)
        _token(database, "live", family_expires_at=now + DAY)
        _session(database, "expired", expires_at=now - DAY)
    finally:
        database.dispose()
    result = CliRunner(env={"ISSUER_DATA_DIR": str(issuer_settings.data_dir)}).invoke(main, ["db", "prune"])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert json.loads(result.output) == {
        "authorization_codes": 1,
        "refresh_tokens": 1,
        "login_sessions": 1,
        "status_lists": 0,
        "device_codes": 0,
        "passkey_challenges": 0,
    }


# -- the background thread ----------------------------------------------------------------


def test_the_pruning_loop_goes_on_after_a_failure_with_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'issuer.sqlite3'}")  # never migrated: it has no tables
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="issuer.prune")
    thread = prune.start(broken, 0.01, stop=stop)
    deadline = time.monotonic() + 10
    while len([r for r in caplog.records if r.name == "issuer.prune"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    failures = [record for record in caplog.records if record.name == "issuer.prune"]
    assert len(failures) >= 3
    assert thread.daemon
    assert not thread.is_alive()
    for record in failures:
        assert record.levelno == logging.ERROR
        assert record.exc_info is None  # one line, no traceback
        assert "\n" not in record.getMessage()


def _pruning_threads() -> int:
    return sum(thread.name == "issuer-prune" for thread in threading.enumerate())


def test_each_app_prunes_in_a_daemon_thread_unless_the_interval_is_zero(issuer_settings: IssuerSettings) -> None:
    before = _pruning_threads()
    off = create_app(issuer_settings)  # the fixture's interval is 0
    assert _pruning_threads() == before
    on = create_app(dataclasses.replace(issuer_settings, prune_interval=3600))
    assert _pruning_threads() == before + 1
    for app in (off, on):
        extensions.of(app).database.dispose()
