"""The key store's lifecycle: create, publish, rotate and retire signing keys (see `issuer.keys`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import select

from issuer.db import Database, signing_keys
from issuer.kek import key_encryption_key_id, seal_private_key
from issuer.keys import legacy, repair, rewrap, table
from issuer.keys.model import (
    PUBLISHED_STATES,
    KeyGenerator,
    KeyPolicy,
    KeyRecord,
    KeyStoreError,
    NewKey,
    checked_keks,
    generate_rsa_key,
)
from issuer.keys.signing import SigningKey, SigningKeys
from jwt_verifier.jose import RsaPublicJwk, public_jwk
from shared import audit, metrics

log = logging.getLogger("issuer.keys")


class KeyStore:
    """Create, publish, rotate and retire signing keys."""

    def __init__(
        self,
        database: Database,
        kek: bytes | Sequence[bytes],
        policy: KeyPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep keys in `database`, sealed under `kek` (or the first of several, the others only opening)."""
        self.database = database
        self._keks = checked_keks(kek)
        self.policy = policy
        self.clock = clock
        # Replaceable so that tests can make generation slow or count it.
        self.generate_key: KeyGenerator = generate_rsa_key
        self._lock = threading.Lock()
        self._advancing = threading.Lock()
        self._loaded_at = float("-inf")
        self._records: tuple[KeyRecord, ...] = ()
        self._signing = SigningKeys(self)

    @property
    def keks(self) -> tuple[bytes, ...]:
        """Return the KEKs keys open with, the one new keys are sealed under first."""
        return self._keks

    # -- start-up ------------------------------------------------------------------------------

    def start(self, legacy_key_dir: Path | None = None) -> None:
        """Make the store ready to sign: import old key files, check the KEK, ensure a key is active."""
        if legacy_key_dir is not None:
            self.import_key_files(legacy_key_dir)
        self.ensure_active()
        records = self._read_records()  # a first snapshot for `last_published`, advancing nothing
        with self._lock:
            self._records = records

    def import_key_files(self, key_dir: Path) -> list[str]:
        """Seal the PEM files of earlier releases into their rows, then delete every key file (`issuer.keys.legacy`)."""
        if not key_dir.is_dir():
            return []
        imported = legacy.import_key_files(self.database, self._keks[0], key_dir)
        self.invalidate()
        return imported

    def check(self) -> None:
        """Stop on a wrong KEK; replace keys that sign (or will) but cannot be read (`issuer.keys.repair`)."""
        repair.check(self)

    def check_key_encryption_key(self) -> None:
        """Raise WrongKeyEncryptionKey if a stored key is sealed under none of the KEKs (reads only)."""
        repair.check_key_encryption_key(self)

    def ensure_active(self) -> None:
        """Check the keys, then create the first key when none is active (safe from every worker)."""
        self.check()
        if self._has_active():
            return
        new = self.new_key()
        with table.write(self.database) as conn:
            if table.row_in_state(conn, "active", lock=True) is None:
                table.insert_key(conn, new, "active", int(self.clock()))
                log.info("created signing key", extra={"fields": {"kid": new.jwk["kid"]}})
                audit.emit("key.activated", kid=new.jwk["kid"], source="system")
        self.invalidate()

    # -- reading ---------------------------------------------------------------------------

    def records(self, *, fresh: bool = False) -> tuple[KeyRecord, ...]:
        """Return every key, newest first, re-reading the database when the snapshot is old.

        `fresh` re-reads it in any case: the JWKS is served that way, so that it holds every
        key any worker may already sign with, however recently that key began.
        """
        with self._lock:
            now = self.clock()
            # Also reload when the (wall) clock went backwards, rather than trusting the snapshot.
            if not fresh and 0 <= now - self._loaded_at < self.policy.reload_interval:
                return self._records
            records = self._read_records()
            if not self._due(records, now):
                self._records, self._loaded_at = records, now
                return records
        # Outside the lock: a due rotation generates a key, and this worker keeps signing meanwhile.
        if self._advancing.acquire(blocking=False):
            try:
                self._advance()
            finally:
                self._advancing.release()
        with self._lock:
            self._records, self._loaded_at = self._read_records(), now
            return self._records

    def published(self, *, fresh: bool = False) -> list[RsaPublicJwk]:
        """Return the public JWKs verifiers must know: next, active and retiring keys."""
        return [r.jwk for r in self.records(fresh=fresh) if r.state in PUBLISHED_STATES]

    def last_published(self) -> list[RsaPublicJwk]:
        """Return the published keys of the last snapshot read, without reading the database."""
        with self._lock:
            return [r.jwk for r in self._records if r.state in PUBLISHED_STATES]

    def signing_key(self) -> SigningKey:
        """Return the active key, opened only the first time it is seen (`issuer.keys.signing`)."""
        return self._signing.current()

    def _read_records(self) -> tuple[KeyRecord, ...]:
        columns = [c for c in signing_keys.c if c.name != "private_key"]
        query = select(*columns).order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
        with self.database.reading() as conn:
            records = tuple(table.record_of(row) for row in conn.execute(query))
        active = [r.activated_at or r.created_at for r in records if r.state == "active"]
        metrics.count_signing_keys([r.state for r in records], active[0] if active else None, time.time())
        return records

    def _has_active(self) -> bool:
        with self.database.reading() as conn:
            return table.row_in_state(conn, "active", lock=False) is not None

    # -- the lifecycle, advancing by itself -----------------------------------------------------
    def _due(self, records: tuple[KeyRecord, ...], now: float) -> bool:
        """Return whether any lifecycle transition is due (a cheap check on the snapshot)."""
        for record in records:
            if record.state == "next" and record.created_at + self.policy.activation_delay <= now:
                return True
            if record.state == "retiring" and (record.retiring_at or 0) + self.policy.retire_after <= now:
                return True
        return self._rotation_due(records, now)

    def _rotation_due(self, records: tuple[KeyRecord, ...], now: float) -> bool:
        if self.policy.rotation_interval <= 0 or any(r.state == "next" for r in records):
            return False
        active = [r for r in records if r.state == "active"]
        started = active[0].activated_at or active[0].created_at if active else None
        return started is not None and started + self.policy.rotation_interval - self.policy.activation_delay <= now

    def _advance(self) -> None:
        """Make every due transition, re-checked inside one write transaction."""
        new = self.new_key() if self._rotation_due(self._read_records(), self.clock()) else None
        with table.write(self.database) as conn:
            now = self.clock()
            query = select(*[c for c in signing_keys.c if c.name != "private_key"]).with_for_update()
            records = tuple(table.record_of(row) for row in conn.execute(query))
            for record in records:
                if record.state == "next" and record.created_at + self.policy.activation_delay <= now:
                    table.activate(conn, record.kid, int(now), source="system")
                    log.info("staged key now signs", extra={"fields": {"kid": record.kid}})
                elif record.state == "retiring" and (record.retiring_at or 0) + self.policy.retire_after <= now:
                    table.set_retired(conn, record.kid, int(now))
                    log.info("retiring key withdrawn", extra={"fields": {"kid": record.kid}})
                    audit.emit("key.retired", kid=record.kid, source="system")
            # A rotation that became due after the snapshot waits for the next reload, so that
            # no key is ever generated while the write lock is held.
            if new is not None and self._rotation_due(records, now):
                table.insert_key(conn, new, "next", int(self.clock()))
                log.info("automatic rotation staged a key", extra={"fields": {"kid": new.jwk["kid"]}})
                audit.emit("key.staged", kid=new.jwk["kid"], source="system")

    # -- changing --------------------------------------------------------------------------

    def rotate(self, *, now: bool = False) -> KeyRecord:
        """Stage a new `next` key; with `now`, make the staged (or a new) key sign at once."""
        with self.database.reading() as conn:
            staged = table.row_in_state(conn, "next", lock=False)
        if staged is not None and not now:
            raise _already_staged(staged.kid)
        new = None if staged is not None else self.new_key()
        while True:
            with table.write(self.database) as conn:
                staged = table.row_in_state(conn, "next", lock=True)
                if staged is not None and not now:
                    raise _already_staged(staged.kid)
                kid: str | None = staged.kid if staged is not None else None
                if kid is None and new is not None:
                    kid = table.insert_key(conn, new, "next", int(self.clock())).kid
                    audit.emit("key.staged", kid=kid)
                if kid is not None:
                    if now:
                        table.activate(conn, kid, int(self.clock()))
                    record = table.record_of(conn.execute(table.select_kid(kid)).one())
                    break
            # The staged key was retired meanwhile: make one, outside the transaction.
            new = self.new_key()
        self.invalidate()
        return record

    def retire(self, kid: str) -> KeyRecord:
        """Withdraw a key that does not sign from the JWKS at once and erase its private half."""
        with table.write(self.database) as conn:
            row = conn.execute(table.select_kid(kid).with_for_update()).first()
            if row is None:
                raise KeyStoreError(f"no key has kid {kid!r}")
            if row.state == "active":
                raise KeyStoreError(f"key {kid} is signing; run 'keys rotate --now' first, then retire it")
            if row.state == "retired":
                raise KeyStoreError(f"key {kid} is already retired")
            table.set_retired(conn, kid, int(self.clock()))
            record = table.record_of(conn.execute(table.select_kid(kid)).one())
            audit.emit("key.retired", kid=kid)
        self.invalidate()
        return record

    def rewrap(self, new_kek: bytes | None = None) -> list[str]:
        """Re-seal every stored private key under `new_kek` (default: the first KEK) in one transaction.

        Return the kids of the keys re-sealed; a key already sealed under `new_kek` is left as it
        is, so running it again is harmless. Every key must open under the store's KEKs first:
        one that does not stops it with nothing changed. The store seals under `new_kek` from
        then on, and still opens with the KEKs it had.
        """
        target = self._keks[0] if new_kek is None else checked_keks(new_kek)[0]
        self.check()
        rewrapped = rewrap.reseal(self.database, self._keks, target)
        self._keks = (target, *(kek for kek in self._keks if kek != target))
        self.invalidate()
        log.info(
            "signing keys re-encrypted under a new key-encryption key",
            extra={"fields": {"keys": len(rewrapped), "kek_id": self.kek_id}},
        )
        return sorted(rewrapped)

    @property
    def kek_id(self) -> str:
        """Return the public id (hex) of the KEK new keys are sealed under, to tell KEKs apart."""
        return key_encryption_key_id(self._keks[0]).hex()

    def new_key(self) -> NewKey:
        """Generate and seal a key: call this before a transaction, never inside one."""
        private_key = self.generate_key(self.policy.rsa_key_bits)
        jwk = public_jwk(private_key.public_key())
        return NewKey(jwk, seal_private_key(self._keks[0], jwk["kid"], private_key))

    def invalidate(self) -> None:
        """Make the next `records` re-read the database."""
        with self._lock:
            self._loaded_at = float("-inf")


def _already_staged(kid: str) -> KeyStoreError:
    return KeyStoreError(
        f"key {kid} is already staged as next; wait for it to become active or use 'keys rotate --now'"
    )
