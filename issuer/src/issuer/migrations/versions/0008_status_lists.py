"""Token Status Lists (draft-ietf-oauth-status-list-21): the lists, and the index each grant's tokens carry.

- `status_lists`: one row a list, its bits in one blob (`capacity` / 8 bytes), with how many
  indexes it has handed out, until when it takes more (`open_until`) and when every token
  referring to it has expired (`expires_at`, pruned after).
- `status_grants`: the list and index of a refresh family's access tokens, or of one
  client-credentials token; deleting a list deletes its grants.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "status_lists",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("open_until", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("allocated", sa.Integer, nullable=False),
        sa.Column("bits", sa.LargeBinary, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("changed_at", sa.Integer, nullable=False),
    )
    op.create_index("ix_status_lists_expires_at", "status_lists", ["expires_at"])
    op.create_table(
        "status_grants",
        sa.Column("grant_id", sa.String(64), primary_key=True),
        sa.Column("list_id", sa.String(32), sa.ForeignKey("status_lists.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(32)),
        sa.Column("audience", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
    )
    op.create_index("status_grants_slot", "status_grants", ["list_id", "idx"], unique=True)
    op.create_index("ix_status_grants_client_id", "status_grants", ["client_id"])
    op.create_index("ix_status_grants_user_id", "status_grants", ["user_id"])
    op.create_index("ix_status_grants_expires_at", "status_grants", ["expires_at"])
