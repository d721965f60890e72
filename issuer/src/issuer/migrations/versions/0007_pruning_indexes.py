"""Indexes for pruning: each hourly batch finds the expired rows without scanning the table.

`login_sessions.expires_at`, `refresh_tokens.family_expires_at` and
`authorization_codes.expires_at` (see issuer.prune). Sessions ended early are few and found
through the same index once they expire.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"

INDEXES = (
    ("ix_login_sessions_expires_at", "login_sessions", "expires_at"),
    ("ix_refresh_tokens_family_expires_at", "refresh_tokens", "family_expires_at"),
    ("ix_authorization_codes_expires_at", "authorization_codes", "expires_at"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])
