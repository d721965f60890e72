"""Schema migrations (Alembic), run by `python -m issuer db upgrade` and at every start.

A database made before migrations existed (it has the tables but no `alembic_version`) is
first brought to the last hand-migrated schema and stamped as revision 0001, then upgraded
like any other: today's data directories upgrade in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from issuer.db import Database

HERE = Path(__file__).parent
BASELINE = "0001"

# The first release's tables (revision 0001), one statement a line, as it created them.
FIRST_RELEASE_SCHEMA = """
CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, scope TEXT NOT NULL, created_at INTEGER NOT NULL)
CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL, username TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER, session_hash TEXT)
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)
CREATE TABLE login_sessions (session_hash TEXT PRIMARY KEY, username TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, ended_at INTEGER)
CREATE TABLE authorization_codes (code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL, username TEXT NOT NULL, scope TEXT NOT NULL, session_hash TEXT, expires_at INTEGER NOT NULL, used_at INTEGER, family_id TEXT)
CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, state TEXT NOT NULL CONSTRAINT signing_keys_state CHECK (state IN ('next', 'active', 'retiring', 'retired')), public_jwk TEXT NOT NULL, created_at INTEGER NOT NULL, activated_at INTEGER, retiring_at INTEGER, retired_at INTEGER)
"""


def config(conn: Connection) -> Config:
    """Return an Alembic configuration that migrates over `conn`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(database: Database) -> None:
    """Upgrade the database to the newest revision."""
    with database.engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        cfg = config(conn)
        if "alembic_version" not in tables and "users" in tables:
            _complete_baseline(conn)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")


def head() -> str:
    """Return the newest revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    newest = ScriptDirectory.from_config(cfg).get_current_head()
    assert newest is not None
    return newest


def current(database: Database) -> str | None:
    """Return the revision the database is at (None before the first migration)."""
    with database.engine.connect() as conn:
        if "alembic_version" not in inspect(conn).get_table_names():
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _complete_baseline(conn: Connection) -> None:
    """Add the tables and columns that the first releases added by hand, where a database lacks them."""
    tables = set(inspect(conn).get_table_names())
    for statement in FIRST_RELEASE_SCHEMA.splitlines():
        words = statement.split()
        if words[:2] == ["CREATE", "TABLE"] and words[2] not in tables:
            conn.execute(text(statement))
    for table, column in (("refresh_tokens", "session_hash"), ("authorization_codes", "family_id")):
        columns = {c["name"] for c in inspect(conn).get_columns(table)}
        if column not in columns:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} TEXT"))
