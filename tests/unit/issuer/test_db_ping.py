"""Unit tests for issuer.db's check of idle PostgreSQL connections (no ping, and no commit, per busy request)."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from issuer import db
from issuer.db import Database


def _backend(database: Database) -> int:
    with database.reading() as conn:
        pid: int = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def _terminate(postgres_url: str, pid: int) -> None:
    """End a server process as a restarted server would have, and wait until it is gone."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.05)


def test_a_connection_closed_by_the_server_while_idle_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)
    database = Database(postgres_url)
    try:
        first = _backend(database)
        _terminate(postgres_url, first)
        assert _backend(database) != first
    finally:
        database.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The counterpart: no check within PING_IDLE_AFTER, so a connection killed meanwhile fails its request.
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 3600.0)
    database = Database(postgres_url)
    try:
        first = _backend(database)
        _terminate(postgres_url, first)
        with pytest.raises(OperationalError):
            _backend(database)
        assert _backend(database) != first  # the pool replaced it after the error
    finally:
        database.dispose()
