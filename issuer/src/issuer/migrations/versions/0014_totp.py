"""One-time codes (issue 23): `totp_factors` and `recovery_codes`, owned by issuer.totp.TotpFactors.

- `totp_factors`: a user's TOTP seed (RFC 6238) sealed under the key-encryption key, when it
  was confirmed (NULL while enrollment waits for the first code), and the last time step a
  code was accepted for (a code is accepted once).
- `recovery_codes`: the SHA-256 of each recovery code, and when it was used (each works once).

Deleting a user deletes both (cascade).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.create_table(
        "totp_factors",
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sealed_seed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("confirmed_at", sa.Integer),
        sa.Column("last_step", sa.Integer),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("used_at", sa.Integer),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])
