"""Stable user ids; sessions, tokens and codes keyed by them; refresh families end; keys in the database.

- `users.id`: a random id per user. Sessions, refresh tokens and codes refer to it, with
  ON DELETE CASCADE: deleting a user ends everything of theirs, and a new user with the
  same name inherits nothing.
- `refresh_tokens.family_expires_at`: the absolute end of a refresh token family. Existing
  tokens get their own expiry as their family's end.
- `signing_keys.private_key`: the encrypted private half (imported from the key files by the
  key store at start, where it holds the key-encryption key).
- Authorization codes live a minute: the old ones are dropped, not converted.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    conn = op.get_bind()
    old_users = conn.execute(sa.text("SELECT username, password_hash, scope, created_at FROM users")).all()
    ids = {row.username: uuid.uuid4().hex for row in old_users}
    old_sessions = conn.execute(
        sa.text("SELECT session_hash, username, created_at, expires_at, ended_at FROM login_sessions")
    ).all()
    old_tokens = conn.execute(
        sa.text(
            "SELECT token_hash, family_id, username, client_id, scope, issued_at, expires_at, used_at,"
            " revoked_at, session_hash FROM refresh_tokens"
        )
    ).all()
    for table in ("authorization_codes", "refresh_tokens", "login_sessions", "users"):
        op.drop_table(table)

    users = op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
    )
    sessions = op.create_table(
        "login_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.Column("ended_at", sa.Integer),
    )
    op.create_index("ix_login_sessions_user_id", "login_sessions", ["user_id"])
    tokens = op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.Column("family_expires_at", sa.Integer, nullable=False),
        sa.Column("used_at", sa.Integer),
        sa.Column("revoked_at", sa.Integer),
        sa.Column("session_hash", sa.String(64)),
    )
    op.create_index("refresh_tokens_family", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_index("ix_refresh_tokens_session_hash", "refresh_tokens", ["session_hash"])
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("session_hash", sa.String(64)),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.Column("used_at", sa.Integer),
        sa.Column("family_id", sa.String(32)),
    )
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("private_key", sa.LargeBinary))

    op.bulk_insert(users, [{"id": ids[row.username], **row._asdict()} for row in old_users])
    op.bulk_insert(
        sessions,
        [
            {**_without(row._asdict(), "username"), "user_id": ids[row.username]}
            for row in old_sessions
            if row.username in ids
        ],
    )
    op.bulk_insert(
        tokens,
        [
            {**_without(row._asdict(), "username"), "user_id": ids[row.username], "family_expires_at": row.expires_at}
            for row in old_tokens
            if row.username in ids
        ],
    )


def _without(row: dict[str, object], name: str) -> dict[str, object]:
    return {key: value for key, value in row.items() if key != name}
