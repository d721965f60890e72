"""DPoP (RFC 9449) at the token endpoint.

- `clients.require_dpop`: the client's tokens must be DPoP-bound (`clients add --require-dpop`).
- `clients.require_dpop_nonce`: the client's proofs must carry a server nonce (`--require-dpop-nonce`).
- `refresh_tokens.dpop_jkt`: a public client's refresh tokens are bound to its DPoP key (section 5).
- `authorization_codes.dpop_jkt`: the `dpop_jkt` of the authorization request (section 10).
- `dpop_proofs`: the proofs already accepted, each once until it is stale (section 11.1).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"

SCHEMA = """
ALTER TABLE clients ADD COLUMN require_dpop BOOLEAN DEFAULT false NOT NULL
ALTER TABLE clients ADD COLUMN require_dpop_nonce BOOLEAN DEFAULT false NOT NULL
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt VARCHAR(64)
ALTER TABLE authorization_codes ADD COLUMN dpop_jkt VARCHAR(64)
CREATE TABLE dpop_proofs (key_hash VARCHAR(64) NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (key_hash))
CREATE INDEX ix_dpop_proofs_expires_at ON dpop_proofs (expires_at)
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
