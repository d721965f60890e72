"""KEK rewrap: re-seal every stored private key under a new key-encryption key, in one transaction."""

from __future__ import annotations

from sqlalchemy import select, update

from issuer.db import Database, signing_keys
from issuer.kek import CorruptKeyError, ForeignKeyError, open_private_key, seal_private_key, sealed_under
from issuer.keys import table
from issuer.keys.model import KeyStoreError, WrongKeyEncryptionKey


def reseal(database: Database, keks: tuple[bytes, ...], target: bytes) -> list[str]:
    """Re-seal under `target` every private key not sealed under it yet, opening it with `keks`; return their kids.

    Every key must open: one that does not stops it with nothing changed (one transaction).
    """
    rewrapped: list[str] = []
    with table.write(database) as conn:
        query = (
            select(signing_keys.c.kid, signing_keys.c.private_key)
            .where(signing_keys.c.private_key.is_not(None))
            .with_for_update()
        )
        for row in conn.execute(query).all():
            if sealed_under(target, row.private_key):
                continue
            try:
                private_key = open_private_key(keks, row.kid, row.private_key)
            except ForeignKeyError as exc:
                raise WrongKeyEncryptionKey(str(exc)) from exc
            except CorruptKeyError as exc:
                raise KeyStoreError(f"{exc}; nothing was re-encrypted") from exc
            conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == row.kid)
                .values(private_key=seal_private_key(target, row.kid, private_key))
            )
            rewrapped.append(row.kid)
    return rewrapped
