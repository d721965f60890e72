"""Raw reads of the issuer's database, for tests that check what is (or is not) stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from issuer.db import Database


def rows(database: Database, query: str, **params: Any) -> list[dict[str, Any]]:
    """Run a read-only SQL query and return its rows as dicts."""
    with database.reading() as conn:
        return [dict(row._mapping) for row in conn.execute(text(query), params)]
