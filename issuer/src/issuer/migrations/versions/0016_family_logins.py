"""What a refresh family's login proved, kept with the family (issue 23).

`refresh_tokens.amr` and `auth_time`: the login a family began with, so that every refresh
says what that login proved and when (OpenID Connect Core 1.0 section 12.2), not what the
browser's session proved later. Families from before this revision recorded none: their
refreshes carry no login claims (`/api/admin` asks for a new login).
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    op.execute("ALTER TABLE refresh_tokens ADD COLUMN amr VARCHAR(64)")
    op.execute("ALTER TABLE refresh_tokens ADD COLUMN auth_time INTEGER")
