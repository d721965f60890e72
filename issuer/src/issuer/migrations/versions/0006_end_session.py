"""RP-Initiated Logout: sessions found by their `sid`, and clients' post-logout redirect URIs.

- `login_sessions.sid`: the session's OpenID Connect id, unique, so that an end-session
  request's `id_token_hint` finds the session it names. Existing rows get theirs here, derived
  from the stored hash as `issuer.sessions.public_id` derives it (repeated here: a migration
  must not change when the code does).
- `client_post_logout_redirect_uris`: the exact URIs a client may name as
  `post_logout_redirect_uri`; deleting the client deletes them.
"""

from __future__ import annotations

import hashlib

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"

SCHEMA = """
ALTER TABLE login_sessions ADD COLUMN sid VARCHAR(32)
CREATE UNIQUE INDEX ix_login_sessions_sid ON login_sessions (sid)
CREATE TABLE client_post_logout_redirect_uris (client_id VARCHAR(64) NOT NULL, uri VARCHAR(2048) NOT NULL, PRIMARY KEY (client_id, uri), FOREIGN KEY (client_id) REFERENCES clients (client_id) ON DELETE CASCADE)
"""


def _sid(session_hash: str) -> str:
    return hashlib.sha256(f"oidc-sid:{session_hash}".encode()).hexdigest()[:32]


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
    conn = op.get_bind()
    hashes = conn.execute(text("SELECT session_hash FROM login_sessions")).scalars().all()
    if hashes:
        conn.execute(
            text("UPDATE login_sessions SET sid = :sid WHERE session_hash = :hash"),
            [{"sid": _sid(value), "hash": value} for value in hashes],
        )
