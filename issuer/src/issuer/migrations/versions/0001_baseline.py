"""The schema of the first release, as databases made before migrations have it."""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None

# One statement a line, exactly as the first release created them.
SCHEMA = """
CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, scope TEXT NOT NULL, created_at INTEGER NOT NULL)
CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL, username TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER, session_hash TEXT)
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)
CREATE TABLE login_sessions (session_hash TEXT PRIMARY KEY, username TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, ended_at INTEGER)
CREATE TABLE authorization_codes (code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL, username TEXT NOT NULL, scope TEXT NOT NULL, session_hash TEXT, expires_at INTEGER NOT NULL, used_at INTEGER, family_id TEXT)
CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, state TEXT NOT NULL CONSTRAINT signing_keys_state CHECK (state IN ('next', 'active', 'retiring', 'retired')), public_jwk TEXT NOT NULL, created_at INTEGER NOT NULL, activated_at INTEGER, retiring_at INTEGER, retired_at INTEGER)
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
