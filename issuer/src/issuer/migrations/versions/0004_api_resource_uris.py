"""Resource URIs: other names of an API that a client may ask tokens for with `resource`.

- `api_resource_uris`: each URI names one API (its key), such as the URL the API's RFC 9728
  metadata gives as `resource`; deleting the API deletes its URIs.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"

SCHEMA = """
CREATE TABLE api_resource_uris (uri VARCHAR(2048) NOT NULL, audience VARCHAR(255) NOT NULL, PRIMARY KEY (uri), FOREIGN KEY (audience) REFERENCES apis (audience) ON DELETE CASCADE)
CREATE INDEX ix_api_resource_uris_audience ON api_resource_uris (audience)
"""


def upgrade() -> None:
    for statement in filter(None, SCHEMA.splitlines()):
        op.execute(statement)
