"""Status lists bounded in number (issue 22): a refresh family's previous slot in `status_grants`.

A family whose list has closed moves to the open list at its next token; its previous list
and index are kept (`previous_list_id`, `previous_idx`) until `previous_expires_at`, when the
access tokens issued under them have expired. Lists opened before this revision keep their
`expires_at` (their families' end): tokens issued from them after they closed may still live.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"

SCHEMA = """
ALTER TABLE status_grants ADD COLUMN previous_list_id VARCHAR(32)
ALTER TABLE status_grants ADD COLUMN previous_idx INTEGER
ALTER TABLE status_grants ADD COLUMN previous_expires_at INTEGER
CREATE INDEX status_grants_previous_slot ON status_grants (previous_list_id, previous_idx)
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
