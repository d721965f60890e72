"""A revision for each registration, so that a grant can tell it used the current one.

`clients.revision` and `apis.revision` name the version of a registration: a new random
number each time it is registered or its fields change, never one it had before (a
registration deleted and added again must not match a worker's copy of the old one). A worker
reads registrations through a cache (issuer.cache): a grant writes its status-list row only if
the client and the API it was made by are still at the revision it read (issuer.statuslist),
so that no token outlives a narrowing it was made just after, from an older copy.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"


def upgrade() -> None:
    op.execute("ALTER TABLE clients ADD COLUMN revision BIGINT NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE apis ADD COLUMN revision BIGINT NOT NULL DEFAULT 0")
