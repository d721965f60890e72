"""The schema of the first release, as databases made before migrations have it."""

from __future__ import annotations

from alembic import op

from issuer.migrations import FIRST_RELEASE_SCHEMA

revision = "0001"
down_revision = None


def upgrade() -> None:
    for statement in filter(None, FIRST_RELEASE_SCHEMA.splitlines()):
        op.execute(statement)
