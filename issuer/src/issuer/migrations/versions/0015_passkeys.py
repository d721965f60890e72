"""Passkeys (issue 23): `passkeys` and `passkey_challenges`, owned by issuer.credentials.Passkeys."""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"

SCHEMA = """
CREATE TABLE passkeys (id VARCHAR(32) NOT NULL, credential_id VARCHAR(1400) NOT NULL, user_id VARCHAR(32) NOT NULL, public_key BYTEA_OR_BLOB NOT NULL, sign_count BIGINT NOT NULL, transports TEXT NOT NULL, backup_eligible BOOLEAN NOT NULL, backup_state BOOLEAN NOT NULL, name VARCHAR(64) NOT NULL, created_at INTEGER NOT NULL, last_used_at INTEGER, PRIMARY KEY (id), CONSTRAINT passkeys_credential_id_key UNIQUE (credential_id), FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE)
CREATE INDEX ix_passkeys_user_id ON passkeys (user_id)
CREATE TABLE passkey_challenges (challenge_hash VARCHAR(64) NOT NULL, purpose VARCHAR(16) NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (challenge_hash))
CREATE INDEX ix_passkey_challenges_expires_at ON passkey_challenges (expires_at)
"""


def upgrade() -> None:
    binary = "BYTEA" if op.get_bind().dialect.name == "postgresql" else "BLOB"
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement.replace("BYTEA_OR_BLOB", binary))
