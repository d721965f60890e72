"""DPoP (RFC 9449) for an API: `apis.require_dpop`, the API gets DPoP-bound tokens only (`apis add --require-dpop`)."""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.execute("ALTER TABLE apis ADD COLUMN require_dpop BOOLEAN DEFAULT false NOT NULL")
