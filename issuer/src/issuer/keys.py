"""The key store: RSA signing keys in the `signing_keys` table, private halves sealed under the KEK.

Each row holds a key's public JWK, its state and dates, and its private half encrypted under
the key-encryption key (see `issuer.kek`), so replicas share keys through the database alone
and a key commits in the same row as its state (nothing to orphan if a process dies).

A key moves `next` (published, not signing) -> `active` (signing) -> `retiring` (published
so that tokens it signed still verify) -> `retired` (withdrawn; its private half erased).

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
agree on the result. RSA keys are generated and sealed before that transaction begins: an
8192-bit key takes seconds, and nobody else may wait for it.

The store may hold several KEKs (during a KEK change): it seals under the first and opens
with whichever sealed a key. `rewrap` re-seals every key under the first.

At start (`start`): key files of releases before this one are imported and deleted; a key
sealed under none of the KEKs stops start-up with `WrongKeyEncryptionKey`; a key that cannot be read
(damaged, or its file was torn) is logged and replaced, as it is if that is found later while
signing: a request never fails on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Connection, Row, Select, insert, select, update

from issuer.db import Database, signing_keys
from issuer.kek import (
    KEK_BYTES,
    CorruptKeyError,
    ForeignKeyError,
    fsync_dir,
    key_encryption_key_id,
    open_private_key,
    seal_private_key,
    sealed_under,
)
from jwt_verifier.jose import RsaPublicJwk, public_jwk
from shared import audit, metrics

log = logging.getLogger(__name__)

PUBLISHED_STATES = ("next", "active", "retiring")
# Keys that sign or will sign: their private half must be readable. A retiring key never signs again.
SIGNING_STATES = ("next", "active")

KeyGenerator = Callable[[int], rsa.RSAPrivateKey]


class KeyStoreError(Exception):
    """A key operation cannot be done; the message says why."""


class WrongKeyEncryptionKey(KeyStoreError):
    """The configured key-encryption key is not the one the stored keys are sealed under."""


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
    """The active key, opened once and kept for signing."""

    kid: str
    private_key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class _NewKey:
    """A key generated and sealed outside any transaction, ready to insert."""

    jwk: RsaPublicJwk
    sealed: bytes


def generate_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """Generate an RSA private key of `bits` bits (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True)
class KeyPolicy:
    """The key size and lifecycle timings (seconds) a key store follows; settings make one."""

    rsa_key_bits: int
    reload_interval: float
    activation_delay: float
    retire_after: float
    rotation_interval: float


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
        self._keks = _checked(kek)
        self.policy = policy
        self.clock = clock
        # Replaceable so that tests can make generation slow or count it.
        self.generate_key: KeyGenerator = generate_rsa_key
        self._lock = threading.Lock()
        self._advancing = threading.Lock()
        self._loaded_at = float("-inf")
        self._records: tuple[KeyRecord, ...] = ()
        self._private: dict[str, rsa.RSAPrivateKey] = {}

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
        """Seal the PEM files of earlier releases into their rows, then delete every key file.

        A file that cannot be read is logged and kept (the check then replaces its key); files
        of retired keys and orphans (a key whose row never committed) are deleted.
        """
        if not key_dir.is_dir():
            return []
        rows = {row.kid: row for row in self._read_private_rows()}
        sealed: dict[str, bytes] = {}
        for path in sorted(key_dir.glob("*.pem")):
            row = rows.get(path.stem)
            if row is None or row.state == "retired" or row.private_key is not None:
                continue
            try:
                private_key = _load_pem(path, row.kid)
            except FileNotFoundError:
                continue  # another worker imported it just now (or the check finds it missing)
            except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
                _report_unreadable(row.kid, f"its key file cannot be imported: {exc}")
                continue
            sealed[row.kid] = seal_private_key(self._keks[0], row.kid, private_key)
        if sealed:
            with self._write() as conn:
                for kid, blob in sealed.items():
                    conn.execute(
                        update(signing_keys)
                        .where(signing_keys.c.kid == kid, signing_keys.c.private_key.is_(None))
                        .where(signing_keys.c.state != "retired")
                        .values(private_key=blob)
                    )
            for kid in sealed:
                log.info("key file imported into the database", extra={"fields": {"kid": kid}})
        self._sweep(key_dir)
        self._invalidate()
        return sorted(sealed)

    def _sweep(self, key_dir: Path) -> None:
        """Delete key files whose key is in the database, retired, or unknown (after the commit)."""
        rows = {row.kid: row for row in self._read_private_rows()}
        for path in key_dir.glob("*.pem"):
            row = rows.get(path.stem)
            if row is None or row.state == "retired" or row.private_key is not None:
                path.unlink(missing_ok=True)
                if row is None:
                    log.info("orphaned key file deleted", extra={"fields": {"kid": path.stem}})
        # Workers starting together sweep together: the directory may be gone already.
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(key_dir)
        with contextlib.suppress(OSError):
            key_dir.rmdir()  # only when empty; nothing is kept there any more
            fsync_dir(key_dir.parent)

    def check(self) -> None:
        """Stop on a wrong KEK; replace keys that sign (or will) but cannot be read.

        Raises WrongKeyEncryptionKey when any published key is sealed under another KEK (its KEK
        id differs): replacing it would fight a replica that runs with that KEK. A key sealed under
        this KEK that does not open is damaged, not a configuration error, and is replaced.
        """
        unreadable: list[tuple[str, str, bytes | None]] = []
        foreign: list[str] = []
        for row in self._read_private_rows():
            if row.state == "retired":
                continue
            if row.private_key is None:
                if row.state in SIGNING_STATES:
                    unreadable.append((row.kid, row.state, None))
                    _report_unreadable(row.kid, "its private key is missing")
                continue
            try:
                open_private_key(self._keks, row.kid, row.private_key)
            except ForeignKeyError:
                foreign.append(row.kid)
            except CorruptKeyError as exc:
                unreadable.append((row.kid, row.state, row.private_key))
                _report_unreadable(row.kid, str(exc))
        if foreign:
            raise _wrong_kek(foreign)
        for kid, state, blob in unreadable:
            self._replace_unreadable(kid, state, blob)
        self._invalidate()

    def check_key_encryption_key(self) -> None:
        """Raise WrongKeyEncryptionKey if a stored key is sealed under none of the KEKs (reads only).

        A damaged key is left for `check`, which replaces it.
        """
        foreign: list[str] = []
        for row in self._read_private_rows():
            if row.state == "retired" or row.private_key is None:
                continue
            try:
                open_private_key(self._keks, row.kid, row.private_key)
            except ForeignKeyError:
                foreign.append(row.kid)
            except CorruptKeyError:
                continue
        if foreign:
            raise _wrong_kek(foreign)

    def ensure_active(self) -> None:
        """Check the keys, then create the first key when none is active (safe from every worker)."""
        self.check()
        if self._has_active():
            return
        new = self._new_key()
        with self._write() as conn:
            if _row_in_state(conn, "active", lock=True) is None:
                self._insert(conn, new, "active")
                log.info("created signing key", extra={"fields": {"kid": new.jwk["kid"]}})
                audit.emit("key.activated", kid=new.jwk["kid"], source="system")
        self._invalidate()

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
        """Return the active key, opening it only the first time it is seen.

        An active key that cannot be opened is replaced at once (a new key signs), so that a
        damaged key costs one key generation, not failed requests.
        """
        for _ in range(3):
            active = [r for r in self.records() if r.state == "active"]
            if not active:
                raise KeyStoreError("there is no active signing key")
            kid = active[0].kid
            key = self._private.get(kid)
            if key is not None:
                return SigningKey(kid, key)
            with self.database.reading() as conn:
                blob = conn.execute(select(signing_keys.c.private_key).where(signing_keys.c.kid == kid)).scalar()
            try:
                if blob is None:
                    raise CorruptKeyError(f"the private key of {kid} is missing")
                key = open_private_key(self._keks, kid, blob)
            except ForeignKeyError as exc:
                raise WrongKeyEncryptionKey(str(exc)) from exc
            except CorruptKeyError as exc:
                _report_unreadable(kid, str(exc))
                self._replace_unreadable(kid, "active", blob)
                self._invalidate()
                continue
            self._private = {kid: key}  # drop keys that no longer sign
            return SigningKey(kid, key)
        raise KeyStoreError("no active signing key can be opened")

    def _read_records(self) -> tuple[KeyRecord, ...]:
        columns = [c for c in signing_keys.c if c.name != "private_key"]
        query = select(*columns).order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
        with self.database.reading() as conn:
            records = tuple(_record(row) for row in conn.execute(query))
        active = [r.activated_at or r.created_at for r in records if r.state == "active"]
        metrics.count_signing_keys([r.state for r in records], active[0] if active else None, time.time())
        return records

    def _read_private_rows(self) -> Sequence[Row[Any, Any, Any]]:
        query = select(signing_keys.c.kid, signing_keys.c.state, signing_keys.c.private_key)
        with self.database.reading() as conn:
            return conn.execute(query).all()

    def _has_active(self) -> bool:
        with self.database.reading() as conn:
            return _row_in_state(conn, "active", lock=False) is not None

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
        new = self._new_key() if self._rotation_due(self._read_records(), self.clock()) else None
        with self._write() as conn:
            now = self.clock()
            query = select(*[c for c in signing_keys.c if c.name != "private_key"]).with_for_update()
            records = tuple(_record(row) for row in conn.execute(query))
            for record in records:
                if record.state == "next" and record.created_at + self.policy.activation_delay <= now:
                    _activate(conn, record.kid, int(now), source="system")
                    log.info("staged key now signs", extra={"fields": {"kid": record.kid}})
                elif record.state == "retiring" and (record.retiring_at or 0) + self.policy.retire_after <= now:
                    _set_retired(conn, record.kid, int(now))
                    log.info("retiring key withdrawn", extra={"fields": {"kid": record.kid}})
                    audit.emit("key.retired", kid=record.kid, source="system")
            # A rotation that became due after the snapshot waits for the next reload, so that
            # no key is ever generated while the write lock is held.
            if new is not None and self._rotation_due(records, now):
                self._insert(conn, new, "next")
                log.info("automatic rotation staged a key", extra={"fields": {"kid": new.jwk["kid"]}})
                audit.emit("key.staged", kid=new.jwk["kid"], source="system")

    # -- changing --------------------------------------------------------------------------

    def rotate(self, *, now: bool = False) -> KeyRecord:
        """Stage a new `next` key; with `now`, make the staged (or a new) key sign at once."""
        with self.database.reading() as conn:
            staged = _row_in_state(conn, "next", lock=False)
        if staged is not None and not now:
            raise _already_staged(staged.kid)
        new = None if staged is not None else self._new_key()
        while True:
            with self._write() as conn:
                staged = _row_in_state(conn, "next", lock=True)
                if staged is not None and not now:
                    raise _already_staged(staged.kid)
                kid: str | None = staged.kid if staged is not None else None
                if kid is None and new is not None:
                    kid = self._insert(conn, new, "next").kid
                    audit.emit("key.staged", kid=kid)
                if kid is not None:
                    if now:
                        _activate(conn, kid, int(self.clock()))
                    record = _record(conn.execute(_select_kid(kid)).one())
                    break
            # The staged key was retired meanwhile: make one, outside the transaction.
            new = self._new_key()
        self._invalidate()
        return record

    def retire(self, kid: str) -> KeyRecord:
        """Withdraw a key that does not sign from the JWKS at once and erase its private half."""
        with self._write() as conn:
            row = conn.execute(_select_kid(kid).with_for_update()).first()
            if row is None:
                raise KeyStoreError(f"no key has kid {kid!r}")
            if row.state == "active":
                raise KeyStoreError(f"key {kid} is signing; run 'keys rotate --now' first, then retire it")
            if row.state == "retired":
                raise KeyStoreError(f"key {kid} is already retired")
            _set_retired(conn, kid, int(self.clock()))
            record = _record(conn.execute(_select_kid(kid)).one())
            audit.emit("key.retired", kid=kid)
        self._invalidate()
        return record

    def rewrap(self, new_kek: bytes | None = None) -> list[str]:
        """Re-seal every stored private key under `new_kek` (default: the first KEK) in one transaction.

        Return the kids of the keys re-sealed; a key already sealed under `new_kek` is left as it
        is, so running it again is harmless. Every key must open under the store's KEKs first:
        one that does not stops it with nothing changed. The store seals under `new_kek` from
        then on, and still opens with the KEKs it had.
        """
        target = self._keks[0] if new_kek is None else _checked(new_kek)[0]
        self.check()
        rewrapped: list[str] = []
        with self._write() as conn:
            query = (
                select(signing_keys.c.kid, signing_keys.c.private_key)
                .where(signing_keys.c.private_key.is_not(None))
                .with_for_update()
            )
            for row in conn.execute(query).all():
                if sealed_under(target, row.private_key):
                    continue
                try:
                    private_key = open_private_key(self._keks, row.kid, row.private_key)
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
        self._keks = (target, *(kek for kek in self._keks if kek != target))
        self._invalidate()
        log.info(
            "signing keys re-encrypted under a new key-encryption key",
            extra={"fields": {"keys": len(rewrapped), "kek_id": self.kek_id}},
        )
        return sorted(rewrapped)

    @property
    def kek_id(self) -> str:
        """Return the public id (hex) of the KEK new keys are sealed under, to tell KEKs apart."""
        return key_encryption_key_id(self._keks[0]).hex()

    def _replace_unreadable(self, kid: str, state: str, blob: bytes | None) -> None:
        """Take an unreadable key out of signing: a `next` key is retired, an active one replaced.

        The replaced active key becomes `retiring`, so tokens it signed still verify; its
        damaged private half is erased. Another worker may have done it first: then nothing.
        """
        new = self._new_key() if state == "active" else None
        with self._write() as conn:
            row = conn.execute(_select_kid(kid, private=True).with_for_update()).first()
            if row is None or row.state != state or row.private_key != blob:
                return
            stamp = int(self.clock())
            if new is None:
                if state == "next":
                    _set_retired(conn, kid, stamp)
                    log.warning("unreadable staged key retired", extra={"fields": {"kid": kid}})
                    audit.emit("key.retired", kid=kid, reason="unreadable", source="system")
                else:  # a retiring key never signs again: only its damaged private half goes
                    conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(private_key=None))
                return
            self._insert(conn, new, "next")
            _activate(conn, new.jwk["kid"], stamp, source="system", reason="unreadable")
            conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(private_key=None))
            log.warning("unreadable active key replaced", extra={"fields": {"kid": kid, "new_kid": new.jwk["kid"]}})

    def _new_key(self) -> _NewKey:
        """Generate and seal a key: call this before a transaction, never inside one."""
        private_key = self.generate_key(self.policy.rsa_key_bits)
        jwk = public_jwk(private_key.public_key())
        return _NewKey(jwk, seal_private_key(self._keks[0], jwk["kid"], private_key))

    def _insert(self, conn: Connection, new: _NewKey, state: str) -> KeyRecord:
        stamp = int(self.clock())
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

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """Open (or join) a write transaction in which key-store writers take turns."""
        with self.database.transaction() as conn:
            if conn.dialect.name == "postgresql":
                # Row locks cannot guard "no active key yet": serialise the key store's writers
                # on the table instead (readers are not blocked; writes here are rare).
                conn.exec_driver_sql("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            yield conn

    def _invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")


def _checked(kek: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    keks = (kek,) if isinstance(kek, bytes) else tuple(kek)
    if not keks or any(len(k) != KEK_BYTES for k in keks):
        raise ValueError(f"the key-encryption key must be {KEK_BYTES} bytes")
    return keks


def _select_kid(kid: str, *, private: bool = False) -> Select[Any]:
    columns = [c for c in signing_keys.c if private or c.name != "private_key"]
    return select(*columns).where(signing_keys.c.kid == kid)


def _row_in_state(conn: Connection, state: str, *, lock: bool) -> Row[Any] | None:
    query = select(signing_keys.c.kid).where(signing_keys.c.state == state)
    return conn.execute(query.with_for_update() if lock else query).first()


def _activate(conn: Connection, kid: str, stamp: int, *, source: str | None = None, reason: str | None = None) -> None:
    """Make `kid` sign and the key that signed retiring; audit both (`source`, `reason`: see shared.audit)."""
    replaced = conn.execute(select(signing_keys.c.kid).where(signing_keys.c.state == "active")).scalars().all()
    conn.execute(
        update(signing_keys).where(signing_keys.c.state == "active").values(state="retiring", retiring_at=stamp)
    )
    conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(state="active", activated_at=stamp))
    audit.emit("key.activated", kid=kid, source=source, reason=reason)
    for old in replaced:
        audit.emit("key.retiring", kid=old, source=source, reason=reason)


def _set_retired(conn: Connection, kid: str, stamp: int) -> None:
    conn.execute(
        update(signing_keys)
        .where(signing_keys.c.kid == kid)
        .values(state="retired", retired_at=stamp, private_key=None)
    )


def _report_unreadable(kid: str, reason: str) -> None:
    # One line, no traceback: the reason says all there is, and a key's bytes never reach a log.
    log.error("signing key unreadable", extra={"fields": {"kid": kid, "reason": reason}})


def _wrong_kek(kids: list[str]) -> WrongKeyEncryptionKey:
    return WrongKeyEncryptionKey(
        f"the key-encryption key is not the one the signing keys {', '.join(kids)} are sealed under; "
        "start with that key in ISSUER_KEY_ENCRYPTION_KEY or ISSUER_KEY_ENCRYPTION_KEY_FILE "
        "(during a key-encryption key change, the new key first and the old one after it)"
    )


def _already_staged(kid: str) -> KeyStoreError:
    return KeyStoreError(
        f"key {kid} is already staged as next; wait for it to become active or use 'keys rotate --now'"
    )


def _record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        kid=row.kid,
        state=row.state,
        jwk=cast(RsaPublicJwk, json.loads(row.public_jwk)),
        created_at=row.created_at,
        activated_at=row.activated_at,
        retiring_at=row.retiring_at,
        retired_at=row.retired_at,
    )


def _load_pem(path: Path, kid: str) -> rsa.RSAPrivateKey:
    """Read an earlier release's key file: an unencrypted PKCS#8 PEM whose thumbprint is `kid`."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    if public_jwk(key.public_key())["kid"] != kid:
        raise ValueError("the key in the file is not the key of its name")
    return key
