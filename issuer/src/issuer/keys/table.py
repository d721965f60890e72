"""The `signing_keys` table's statements, shared by the key store's modules (its one owner)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Row, Select, insert, select, update

from issuer.db import Database, signing_keys
from issuer.keys.model import KeyRecord, NewKey
from jwt_verifier.jose import RsaPublicJwk
from shared import audit


@contextlib.contextmanager
def write(database: Database) -> Iterator[Connection]:
    """Open (or join) a write transaction in which key-store writers take turns."""
    with database.transaction() as conn:
        if conn.dialect.name == "postgresql":
            # Row locks cannot guard "no active key yet": serialise the key store's writers
            # on the table instead (readers are not blocked; writes here are rare).
            conn.exec_driver_sql("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
        yield conn


def private_rows(database: Database) -> Sequence[Row[Any, Any, Any]]:
    """Return every key's kid, state and sealed private half."""
    query = select(signing_keys.c.kid, signing_keys.c.state, signing_keys.c.private_key)
    with database.reading() as conn:
        return conn.execute(query).all()


def insert_key(conn: Connection, new: NewKey, state: str, stamp: int) -> KeyRecord:
    """Insert a generated key in `state`, created (and, if active, activated) at `stamp`."""
    activated = stamp if state == "active" else None
    kid = new.jwk["kid"]
    conn.execute(
        insert(signing_keys).values(
            kid=kid,
            state=state,
            public_jwk=json.dumps(new.jwk),
            private_key=new.sealed,
            created_at=stamp,
            activated_at=activated,
        )
    )
    return KeyRecord(kid, state, new.jwk, stamp, activated, None, None)


def select_kid(kid: str, *, private: bool = False) -> Select[Any]:
    """Return the query for one key's row (with its private half when `private`)."""
    columns = [c for c in signing_keys.c if private or c.name != "private_key"]
    return select(*columns).where(signing_keys.c.kid == kid)


def row_in_state(conn: Connection, state: str, *, lock: bool) -> Row[Any] | None:
    """Return the kid row of a key in `state`, if any (locked for update with `lock`)."""
    query = select(signing_keys.c.kid).where(signing_keys.c.state == state)
    return conn.execute(query.with_for_update() if lock else query).first()


def activate(conn: Connection, kid: str, stamp: int, *, source: str | None = None, reason: str | None = None) -> None:
    """Make `kid` sign and the key that signed retiring; audit both (`source`, `reason`: see shared.audit)."""
    replaced = conn.execute(select(signing_keys.c.kid).where(signing_keys.c.state == "active")).scalars().all()
    conn.execute(
        update(signing_keys).where(signing_keys.c.state == "active").values(state="retiring", retiring_at=stamp)
    )
    conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(state="active", activated_at=stamp))
    audit.emit("key.activated", kid=kid, source=source, reason=reason)
    for old in replaced:
        audit.emit("key.retiring", kid=old, source=source, reason=reason)


def set_retired(conn: Connection, kid: str, stamp: int) -> None:
    """Withdraw a key and erase its private half."""
    conn.execute(
        update(signing_keys)
        .where(signing_keys.c.kid == kid)
        .values(state="retired", retired_at=stamp, private_key=None)
    )


def record_of(row: Row[Any]) -> KeyRecord:
    """Return the record of a row read without its private half."""
    return KeyRecord(
        kid=row.kid,
        state=row.state,
        jwk=cast(RsaPublicJwk, json.loads(row.public_jwk)),
        created_at=row.created_at,
        activated_at=row.activated_at,
        retiring_at=row.retiring_at,
        retired_at=row.retired_at,
    )
