"""What each login proved (issue 23): `login_sessions.amr`, RFC 8176 methods, space-separated.

Sessions from before this revision were password logins: they get `pwd`.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.execute("ALTER TABLE login_sessions ADD COLUMN amr VARCHAR(64) NOT NULL DEFAULT 'pwd'")
