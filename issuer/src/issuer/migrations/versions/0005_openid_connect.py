"""OpenID Connect: users' profile claims, and the `nonce` an authorization request sent.

- `users.name`, `users.email`, `users.email_verified`, `users.updated_at`: the claims `/userinfo`
  and ID tokens give (OpenID Connect Core 1.0 section 5.1). Existing users get no name or
  address, an unverified address, and their creation time as `updated_at`.
- `authorization_codes.nonce`: echoed in the ID token the code's redemption gives.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"

SCHEMA = """
ALTER TABLE users ADD COLUMN name TEXT
ALTER TABLE users ADD COLUMN email TEXT
ALTER TABLE users ADD COLUMN email_verified BOOLEAN DEFAULT FALSE NOT NULL
ALTER TABLE users ADD COLUMN updated_at INTEGER
UPDATE users SET updated_at = created_at
ALTER TABLE authorization_codes ADD COLUMN nonce TEXT
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
