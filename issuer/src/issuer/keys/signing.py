"""The signing-key cache: the active key's private half, opened once and kept for signing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from issuer.db import signing_keys
from issuer.kek import CorruptKeyError, ForeignKeyError, open_private_key
from issuer.keys.model import KeyStoreError, WrongKeyEncryptionKey
from issuer.keys.repair import replace_unreadable, report_unreadable

if TYPE_CHECKING:
    from issuer.keys.store import KeyStore


@dataclass(frozen=True)
class SigningKey:
    """The active key, opened once and kept for signing."""

    kid: str
    private_key: rsa.RSAPrivateKey


class SigningKeys:
    """Open the store's active key the first time it is seen, and keep only that one."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._private: dict[str, rsa.RSAPrivateKey] = {}

    def current(self) -> SigningKey:
        """Return the active key, opening it only the first time it is seen.

        An active key that cannot be opened is replaced at once (a new key signs), so that a
        damaged key costs one key generation, not failed requests.
        """
        store = self._store
        for _ in range(3):
            active = [r for r in store.records() if r.state == "active"]
            if not active:
                raise KeyStoreError("there is no active signing key")
            kid = active[0].kid
            key = self._private.get(kid)
            if key is not None:
                return SigningKey(kid, key)
            with store.database.reading() as conn:
                blob = conn.execute(select(signing_keys.c.private_key).where(signing_keys.c.kid == kid)).scalar()
            try:
                if blob is None:
                    raise CorruptKeyError(f"the private key of {kid} is missing")
                key = open_private_key(store.keks, kid, blob)
            except ForeignKeyError as exc:
                raise WrongKeyEncryptionKey(str(exc)) from exc
            except CorruptKeyError as exc:
                report_unreadable(kid, str(exc))
                replace_unreadable(store, kid, "active", blob)
                store.invalidate()
                continue
            self._private = {kid: key}  # drop keys that no longer sign
            return SigningKey(kid, key)
        raise KeyStoreError("no active signing key can be opened")
