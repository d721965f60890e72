"""Status lists bounded in number (issue 22): a refresh family's previous slot in `status_grants`.

A family whose list has closed moves to the open list at its next token; its previous list
and index are kept (`previous_list_id`, `previous_idx`) until `previous_expires_at`, when the
access tokens issued under them have expired.

A list opened before this revision lived as long as its families; now it lives until it closes
plus an access token's lifetime. Its `expires_at` is cut to that, counting from now for a list
already closed (tokens issued from it after it closed were issued before now) and with the
longest access token lifetime the settings allow, so that a month-old deployment's ~31 lists
leave the aggregation within the hour instead of over a month.
"""

from __future__ import annotations

import time

from alembic import op
from sqlalchemy import text

MAX_ACCESS_TOKEN_TTL = 3600  # ISSUER_ACCESS_TOKEN_TTL's upper bound (issuer.settings)

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
    op.get_bind().execute(
        text(
            "UPDATE status_lists SET expires_at = CASE WHEN open_until > :now THEN open_until ELSE :now END + :ttl"
            " WHERE expires_at > CASE WHEN open_until > :now THEN open_until ELSE :now END + :ttl"
        ),
        {"now": int(time.time()), "ttl": MAX_ACCESS_TOKEN_TTL},
    )
