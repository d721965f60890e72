"""Stable user ids; sessions, tokens and codes keyed by them; refresh families end; keys in the database.

- `users.id`: a random id per user. Sessions, refresh tokens and codes refer to it, with
  ON DELETE CASCADE: deleting a user ends everything of theirs, and a new user with the
  same name inherits nothing.
- `refresh_tokens.family_expires_at`: the absolute end of a refresh token family. Existing
  tokens get their own expiry as their family's end.
- `signing_keys.private_key`: the sealed private half; kid and state become non-null VARCHARs (the key store imports the old key
  files into it at start, where it holds the key-encryption key).
- Authorization codes live a minute: the old ones are dropped, not converted.

The old rows are read, the tables recreated, and the rows written back converted; rows of
users who no longer exist are dropped.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

# One statement a line; {binary} is the dialect's type for bytes.
SCHEMA = """
CREATE TABLE users (id VARCHAR(32) NOT NULL, username VARCHAR(64) NOT NULL, password_hash TEXT NOT NULL, scope TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (id), CONSTRAINT users_username_key UNIQUE (username))
CREATE TABLE login_sessions (session_hash VARCHAR(64) NOT NULL, user_id VARCHAR(32) NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, ended_at INTEGER, PRIMARY KEY (session_hash), FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)
CREATE INDEX ix_login_sessions_user_id ON login_sessions (user_id)
CREATE TABLE refresh_tokens (token_hash VARCHAR(64) NOT NULL, family_id VARCHAR(32) NOT NULL, user_id VARCHAR(32) NOT NULL, client_id VARCHAR(64) NOT NULL, scope TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, family_expires_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER, session_hash VARCHAR(64), PRIMARY KEY (token_hash), FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)
CREATE INDEX ix_refresh_tokens_user_id ON refresh_tokens (user_id)
CREATE INDEX ix_refresh_tokens_session_hash ON refresh_tokens (session_hash)
CREATE TABLE authorization_codes (code_hash VARCHAR(64) NOT NULL, client_id VARCHAR(64) NOT NULL, redirect_uri TEXT NOT NULL, code_challenge VARCHAR(64) NOT NULL, user_id VARCHAR(32) NOT NULL, scope TEXT NOT NULL, session_hash VARCHAR(64), expires_at INTEGER NOT NULL, used_at INTEGER, family_id VARCHAR(32), PRIMARY KEY (code_hash), FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)
CREATE TABLE signing_keys (kid VARCHAR(64) NOT NULL, state VARCHAR(16) NOT NULL, public_jwk TEXT NOT NULL, private_key {binary}, created_at INTEGER NOT NULL, activated_at INTEGER, retiring_at INTEGER, retired_at INTEGER, PRIMARY KEY (kid), CONSTRAINT signing_keys_state CHECK (state IN ('next', 'active', 'retiring', 'retired')))
"""

READ = {
    "users": "SELECT username, password_hash, scope, created_at FROM users",
    "login_sessions": "SELECT session_hash, username, created_at, expires_at, ended_at FROM login_sessions",
    "signing_keys": "SELECT kid, state, public_jwk, created_at, activated_at, retiring_at, retired_at FROM signing_keys",
    "refresh_tokens": "SELECT token_hash, family_id, username, client_id, scope, issued_at, expires_at, used_at, revoked_at, session_hash FROM refresh_tokens",
}
WRITE = {
    "users": "INSERT INTO users (id, username, password_hash, scope, created_at) VALUES (:id, :username, :password_hash, :scope, :created_at)",
    "login_sessions": "INSERT INTO login_sessions (session_hash, user_id, created_at, expires_at, ended_at) VALUES (:session_hash, :user_id, :created_at, :expires_at, :ended_at)",
    "signing_keys": "INSERT INTO signing_keys (kid, state, public_jwk, created_at, activated_at, retiring_at, retired_at) VALUES (:kid, :state, :public_jwk, :created_at, :activated_at, :retiring_at, :retired_at)",
    "refresh_tokens": "INSERT INTO refresh_tokens (token_hash, family_id, user_id, client_id, scope, issued_at, expires_at, family_expires_at, used_at, revoked_at, session_hash) VALUES (:token_hash, :family_id, :user_id, :client_id, :scope, :issued_at, :expires_at, :expires_at, :used_at, :revoked_at, :session_hash)",
}


def upgrade() -> None:
    conn = op.get_bind()
    old = {table: [row._asdict() for row in conn.execute(sa.text(query))] for table, query in READ.items()}
    ids = {user["username"]: uuid.uuid4().hex for user in old["users"]}
    for table in ("authorization_codes", "refresh_tokens", "login_sessions", "users", "signing_keys"):
        op.execute(f"DROP TABLE {table}")
    binary = sa.LargeBinary().compile(dialect=conn.dialect)
    for statement in filter(None, SCHEMA.format(binary=binary).splitlines()):
        op.execute(statement)
    for table, rows in old.items():
        if table != "signing_keys":  # the others belong to a user: give them the user's id, or drop them
            rows = [
                {**row, "id": ids[row["username"]], "user_id": ids[row["username"]]}
                for row in rows
                if row["username"] in ids
            ]
        if rows:
            conn.execute(sa.text(WRITE[table]), rows)
