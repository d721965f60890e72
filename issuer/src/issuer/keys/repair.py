"""Repairs: a wrong KEK stops the store; a key that signs (or will) but cannot be read is replaced.

A key sealed under none of the KEKs stops start-up with `WrongKeyEncryptionKey`: replacing it
would fight a replica that runs with that KEK. A key sealed under these KEKs that does not
open is damaged, not a configuration error: it is logged (one line, never its bytes) and
replaced, at start or when found while signing, so a request never fails on it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import update

from issuer.db import signing_keys
from issuer.kek import CorruptKeyError, ForeignKeyError, open_private_key
from issuer.keys import table
from issuer.keys.model import SIGNING_STATES, wrong_kek
from shared import audit

if TYPE_CHECKING:
    from issuer.keys.store import KeyStore

log = logging.getLogger("issuer.keys")


def check(store: KeyStore) -> None:
    """Stop on a wrong KEK; replace keys that sign (or will) but cannot be read.

    Raises WrongKeyEncryptionKey when any published key is sealed under another KEK (its KEK
    id differs). A key sealed under this KEK that does not open is damaged and is replaced.
    """
    unreadable: list[tuple[str, str, bytes | None]] = []
    foreign: list[str] = []
    for row in table.private_rows(store.database):
        if row.state == "retired":
            continue
        if row.private_key is None:
            if row.state in SIGNING_STATES:
                unreadable.append((row.kid, row.state, None))
                report_unreadable(row.kid, "its private key is missing")
            continue
        try:
            open_private_key(store.keks, row.kid, row.private_key)
        except ForeignKeyError:
            foreign.append(row.kid)
        except CorruptKeyError as exc:
            unreadable.append((row.kid, row.state, row.private_key))
            report_unreadable(row.kid, str(exc))
    if foreign:
        raise wrong_kek(foreign)
    for kid, state, blob in unreadable:
        replace_unreadable(store, kid, state, blob)
    store.invalidate()


def check_key_encryption_key(store: KeyStore) -> None:
    """Raise WrongKeyEncryptionKey if a stored key is sealed under none of the KEKs (reads only).

    A damaged key is left for `check`, which replaces it.
    """
    foreign: list[str] = []
    for row in table.private_rows(store.database):
        if row.state == "retired" or row.private_key is None:
            continue
        try:
            open_private_key(store.keks, row.kid, row.private_key)
        except ForeignKeyError:
            foreign.append(row.kid)
        except CorruptKeyError:
            continue
    if foreign:
        raise wrong_kek(foreign)


def replace_unreadable(store: KeyStore, kid: str, state: str, blob: bytes | None) -> None:
    """Take an unreadable key out of signing: a `next` key is retired, an active one replaced.

    The replaced active key becomes `retiring`, so tokens it signed still verify; its
    damaged private half is erased. Another worker may have done it first: then nothing.
    """
    new = store.new_key() if state == "active" else None
    with table.write(store.database) as conn:
        row = conn.execute(table.select_kid(kid, private=True).with_for_update()).first()
        if row is None or row.state != state or row.private_key != blob:
            return
        stamp = int(store.clock())
        if new is None:
            if state == "next":
                table.set_retired(conn, kid, stamp)
                log.warning("unreadable staged key retired", extra={"fields": {"kid": kid}})
                audit.emit("key.retired", kid=kid, reason="unreadable", source="system")
            else:  # a retiring key never signs again: only its damaged private half goes
                conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(private_key=None))
            return
        table.insert_key(conn, new, "next", int(store.clock()))
        table.activate(conn, new.jwk["kid"], stamp, source="system", reason="unreadable")
        conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(private_key=None))
        log.warning("unreadable active key replaced", extra={"fields": {"kid": kid, "new_kid": new.jwk["kid"]}})


def report_unreadable(kid: str, reason: str) -> None:
    """Log that a key cannot be read: one line, no traceback, and never a key's bytes."""
    log.error("signing key unreadable", extra={"fields": {"kid": kid, "reason": reason}})
