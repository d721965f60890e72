"""Clients and APIs in the database; tokens and codes remember the API they are for.

- `clients`: registered OAuth clients (the two built-in ones are seeded at start).
- `apis`: the resource servers tokens may be asked for with RFC 8707's `resource`.
- `client_assertions`: the `jti` of every accepted private_key_jwt assertion, until it expires.
- `refresh_tokens.audience`, `authorization_codes.audience`: the API a grant is for (NULL: the
  default API, as every grant before this revision was).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"

SCHEMA = """
CREATE TABLE clients (client_id VARCHAR(64) NOT NULL, grant_types TEXT NOT NULL, redirect_uris TEXT NOT NULL, scope TEXT, audiences TEXT, auth_method VARCHAR(32) NOT NULL, secret_hash VARCHAR(64), jwks TEXT, jwks_uri TEXT, created_at INTEGER NOT NULL, PRIMARY KEY (client_id))
CREATE TABLE apis (audience VARCHAR(255) NOT NULL, scope TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (audience))
CREATE TABLE client_assertions (jti_hash VARCHAR(64) NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (jti_hash))
CREATE INDEX ix_client_assertions_expires_at ON client_assertions (expires_at)
ALTER TABLE refresh_tokens ADD COLUMN audience TEXT
ALTER TABLE authorization_codes ADD COLUMN audience TEXT
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
