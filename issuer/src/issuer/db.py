"""The issuer's embedded SQLite database: connection set-up and schema."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from pathlib import Path

from flask import Flask, current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    scope         TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    username   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER,
    session_hash TEXT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE IF NOT EXISTS login_sessions (
    session_hash TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
CREATE TABLE IF NOT EXISTS authorization_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    username       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    session_hash   TEXT,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    family_id      TEXT
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid          TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired')),
    public_jwk   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    activated_at INTEGER,
    retiring_at  INTEGER,
    retired_at   INTEGER
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open the database in autocommit mode, waiting for locks held by other workers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def initialise(path: Path) -> None:
    """Create the schema if it is not there yet (safe to run from every worker at once).

    Workers starting together take turns through a file lock: switching a new database to WAL
    needs it to itself, and SQLite answers "database is locked" there without waiting.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".initialise.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = connect(path)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
            _migrate(conn)
        finally:
            conn.close()


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring databases made by earlier versions up to the current schema."""
    for table, column in (("refresh_tokens", "session_hash"), ("authorization_codes", "family_id")):
        columns = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # another worker added it a moment ago
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


_threads = threading.local()


def get_db() -> sqlite3.Connection:
    """Return this thread's connection to the app's database, opened once and kept.

    Worker threads live long, and so does their connection: opening one per request costs
    the connect and, when the last connection to a WAL database closes, a checkpoint.
    """
    path: Path = current_app.extensions["issuer.settings"].db_path
    connections: dict[Path, sqlite3.Connection] = _threads.__dict__.setdefault("connections", {})
    conn = connections.get(path)
    if conn is None:
        conn = connections[path] = connect(path)
    g.db = conn
    return conn


def _end_request(_exc: BaseException | None) -> None:
    """Leave the connection clean for the thread's next request."""
    conn: sqlite3.Connection | None = g.pop("db", None)
    if conn is not None and conn.in_transaction:
        conn.rollback()


def init_app(app: Flask) -> None:
    """Roll back whatever a request left open when it ends."""
    app.teardown_appcontext(_end_request)
