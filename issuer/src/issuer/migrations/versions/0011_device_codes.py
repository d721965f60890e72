"""The device authorization grant (RFC 8628): `device_codes`, owned by issuer.device.DeviceCodes."""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"

SCHEMA = """
CREATE TABLE device_codes (device_code_hash VARCHAR(64) NOT NULL, user_code_hash VARCHAR(64) NOT NULL, client_id VARCHAR(64) NOT NULL, scope TEXT, audience TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, poll_interval INTEGER NOT NULL, polled_at INTEGER, status VARCHAR(16) NOT NULL, user_id VARCHAR(32), session_hash VARCHAR(64), decided_at INTEGER, used_at INTEGER, PRIMARY KEY (device_code_hash), CONSTRAINT device_codes_user_code_hash_key UNIQUE (user_code_hash), FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE)
CREATE INDEX ix_device_codes_expires_at ON device_codes (expires_at)
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
