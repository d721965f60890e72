"""The key store: RSA signing keys as PKCS#8 PEM files (mode 0600), their states in SQLite.

A key moves `next` (published, not signing) -> `active` (signing) -> `retiring` (published
so that tokens it signed still verify) -> `retired` (withdrawn; its private key file deleted).

The lifecycle advances by itself, checked whenever a worker re-reads the states (every
`reload_interval` seconds, so CLI changes and other replicas are seen without a restart):

- a `next` key becomes `active` once it has been published for `activation_delay` seconds
  (at least the JWKS cache lifetime, so every verifier knows it before it signs); the key it
  replaces becomes `retiring`;
- a `retiring` key is retired `retire_after` seconds later (the access token lifetime plus a
  grace), when every token it signed has expired;
- with `rotation_interval` set, a new `next` key is staged that long after the active key
  began signing, less the activation delay (automatic rotation; off by default).

Each transition runs in a write transaction that re-checks it, so workers racing to make it
agree on the result.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import db
from shared.jose import RsaPublicJwk, public_jwk

log = logging.getLogger(__name__)

PUBLISHED_STATES = ("next", "active", "retiring")


class KeyStoreError(Exception):
    """A key operation cannot be done; the message says why."""


@dataclass(frozen=True)
class KeyRecord:
    """One key's public half and lifecycle dates (Unix seconds)."""

    kid: str
    state: str
    jwk: RsaPublicJwk
    created_at: int
    activated_at: int | None
    retiring_at: int | None
    retired_at: int | None


@dataclass(frozen=True)
class SigningKey:
    """The active key, parsed once and kept for signing."""

    kid: str
    private_key: rsa.RSAPrivateKey


class KeyStore:
    """Create, publish, rotate and retire signing keys."""

    def __init__(
        self,
        key_dir: Path,
        db_path: Path,
        *,
        rsa_key_bits: int = 2048,
        reload_interval: float = 1.0,
        activation_delay: float = 600,
        retire_after: float = 3600 + 60,
        rotation_interval: float = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key_dir = key_dir
        self.db_path = db_path
        self.rsa_key_bits = rsa_key_bits
        self.reload_interval = reload_interval
        self.activation_delay = activation_delay
        self.retire_after = retire_after
        self.rotation_interval = rotation_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._records: tuple[KeyRecord, ...] = ()
        self._private: dict[str, rsa.RSAPrivateKey] = {}

    # -- reading ---------------------------------------------------------------------------

    def records(self, *, fresh: bool = False) -> tuple[KeyRecord, ...]:
        """Return every key, newest first, re-reading the database when the snapshot is old.

        `fresh` re-reads it in any case: the JWKS is served that way, so that it holds every
        key any worker may already sign with, however recently that key began.
        """
        with self._lock:
            now = self.clock()
            # Also reload when the (wall) clock went backwards, rather than trusting the snapshot.
            if fresh or not 0 <= now - self._loaded_at < self.reload_interval:
                self._records = self._read_records()
                if self._due(self._records, now):
                    self._advance()
                    self._records = self._read_records()
                self._loaded_at = now
            return self._records

    def published(self, *, fresh: bool = False) -> list[RsaPublicJwk]:
        """Return the public JWKs verifiers must know: next, active and retiring keys."""
        return [r.jwk for r in self.records(fresh=fresh) if r.state in PUBLISHED_STATES]

    def signing_key(self) -> SigningKey:
        """Return the active key, loading its PEM file only the first time it is seen."""
        active = [r for r in self.records() if r.state == "active"]
        if not active:
            raise KeyStoreError("there is no active signing key")
        kid = active[0].kid
        key = self._private.get(kid)
        if key is None:
            key = self._load_private(kid)
            self._private = {kid: key}  # drop keys that no longer sign
        return SigningKey(kid, key)

    def _read_records(self) -> tuple[KeyRecord, ...]:
        conn = db.connect(self.db_path)
        try:
            rows = conn.execute("SELECT * FROM signing_keys ORDER BY created_at DESC, kid").fetchall()
        finally:
            conn.close()
        return tuple(_record(row) for row in rows)

    def _load_private(self, kid: str) -> rsa.RSAPrivateKey:
        try:
            pem = self._pem_path(kid).read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"the private key file for {kid} is missing") from None
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyStoreError(f"the key file for {kid} is not an RSA private key")
        return key

    def _pem_path(self, kid: str) -> Path:
        return self.key_dir / f"{kid}.pem"

    # -- the lifecycle, advancing by itself -----------------------------------------------------

    def _due(self, records: tuple[KeyRecord, ...], now: float) -> bool:
        """Return whether any lifecycle transition is due (a cheap check on the snapshot)."""
        for record in records:
            if record.state == "next" and record.created_at + self.activation_delay <= now:
                return True
            if record.state == "retiring" and (record.retiring_at or 0) + self.retire_after <= now:
                return True
        return self._rotation_due(records, now)

    def _rotation_due(self, records: tuple[KeyRecord, ...], now: float) -> bool:
        if self.rotation_interval <= 0 or any(r.state == "next" for r in records):
            return False
        active = [r for r in records if r.state == "active"]
        started = active[0].activated_at or active[0].created_at if active else None
        return started is not None and started + self.rotation_interval - self.activation_delay <= now

    def _advance(self) -> None:
        """Make every due transition, re-checked inside one write transaction."""
        retired: list[str] = []
        with self._transaction() as conn:
            now = self.clock()
            records = tuple(_record(row) for row in conn.execute("SELECT * FROM signing_keys"))
            for record in records:
                if record.state == "next" and record.created_at + self.activation_delay <= now:
                    self._activate(conn, record.kid, int(now))
                    log.info("staged key now signs", extra={"fields": {"kid": record.kid}})
                elif record.state == "retiring" and (record.retiring_at or 0) + self.retire_after <= now:
                    self._set_retired(conn, record.kid, int(now))
                    retired.append(record.kid)
                    log.info("retiring key withdrawn", extra={"fields": {"kid": record.kid}})
            if self._rotation_due(records, now):
                staged = self._create(conn, "next")
                log.info("automatic rotation staged a key", extra={"fields": {"kid": staged.kid}})
        for kid in retired:
            self._pem_path(kid).unlink(missing_ok=True)

    def _activate(self, conn: sqlite3.Connection, kid: str, stamp: int) -> None:
        conn.execute(
            "UPDATE signing_keys SET state = 'retiring', retiring_at = ? WHERE state = 'active'",
            (stamp,),
        )
        conn.execute("UPDATE signing_keys SET state = 'active', activated_at = ? WHERE kid = ?", (stamp, kid))

    def _set_retired(self, conn: sqlite3.Connection, kid: str, stamp: int) -> None:
        conn.execute("UPDATE signing_keys SET state = 'retired', retired_at = ? WHERE kid = ?", (stamp, kid))

    # -- changing --------------------------------------------------------------------------

    def ensure_active(self) -> None:
        """Create the first key when no key is active (safe to run from every worker)."""
        with self._transaction() as conn:
            if not _has_state(conn, "active"):
                record = self._create(conn, "active")
                log.info("created signing key", extra={"fields": {"kid": record.kid}})
        self._invalidate()

    def rotate(self, *, now: bool = False) -> KeyRecord:
        """Stage a new `next` key; with `now`, make the staged (or a new) key sign at once."""
        with self._transaction() as conn:
            staged = conn.execute("SELECT * FROM signing_keys WHERE state = 'next'").fetchone()
            if not now:
                if staged is not None:
                    raise KeyStoreError(
                        f"key {staged['kid']} is already staged as next; "
                        "wait for it to become active or use 'keys rotate --now'"
                    )
                record = self._create(conn, "next")
            else:
                kid = staged["kid"] if staged is not None else self._create(conn, "next").kid
                self._activate(conn, kid, int(self.clock()))
                record = _record(conn.execute("SELECT * FROM signing_keys WHERE kid = ?", (kid,)).fetchone())
        self._invalidate()
        return record

    def retire(self, kid: str) -> KeyRecord:
        """Withdraw a key that does not sign from the JWKS at once and delete its private key."""
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM signing_keys WHERE kid = ?", (kid,)).fetchone()
            if row is None:
                raise KeyStoreError(f"no key has kid {kid!r}")
            if row["state"] == "active":
                raise KeyStoreError(f"key {kid} is signing; run 'keys rotate --now' first, then retire it")
            if row["state"] == "retired":
                raise KeyStoreError(f"key {kid} is already retired")
            self._set_retired(conn, kid, int(self.clock()))
            record = _record(conn.execute("SELECT * FROM signing_keys WHERE kid = ?", (kid,)).fetchone())
        self._pem_path(kid).unlink(missing_ok=True)
        self._invalidate()
        return record

    def _create(self, conn: sqlite3.Connection, state: str) -> KeyRecord:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_key_bits)
        jwk = public_jwk(private_key.public_key())
        self._write_pem(jwk["kid"], private_key)
        stamp = int(self.clock())
        conn.execute(
            "INSERT INTO signing_keys (kid, state, public_jwk, created_at, activated_at) VALUES (?, ?, ?, ?, ?)",
            (jwk["kid"], state, json.dumps(jwk), stamp, stamp if state == "active" else None),
        )
        return KeyRecord(jwk["kid"], state, jwk, stamp, stamp if state == "active" else None, None, None)

    def _write_pem(self, kid: str, private_key: rsa.RSAPrivateKey) -> None:
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(self._pem_path(kid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = db.connect(self.db_path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")


def _has_state(conn: sqlite3.Connection, state: str) -> bool:
    return conn.execute("SELECT 1 FROM signing_keys WHERE state = ?", (state,)).fetchone() is not None


def _record(row: sqlite3.Row) -> KeyRecord:
    return KeyRecord(
        kid=row["kid"],
        state=row["state"],
        jwk=cast(RsaPublicJwk, json.loads(row["public_jwk"])),
        created_at=row["created_at"],
        activated_at=row["activated_at"],
        retiring_at=row["retiring_at"],
        retired_at=row["retired_at"],
    )
