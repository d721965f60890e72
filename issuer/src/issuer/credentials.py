"""Passkeys: the WebAuthn credentials users registered, and the challenges of ceremonies in progress.

Owner of `passkeys` and `passkey_challenges`. The ceremonies themselves (W3C WebAuthn Level 3
sections 7.1 and 7.2) are `issuer.passkeys`'; this module keeps what they verified:

- a credential's public key, its signature counter and its backup flags (section 6.1.3): a
  backup-eligible credential is a synced passkey (`swk`, RFC 8176), any other is bound to one
  device (`hwk`);
- each challenge as its SHA-256 with an expiry: `consume_challenge` deletes it, so the
  response to one ceremony is accepted once (section 13.4.3).

The counter (section 6.1.1): an assertion must carry a count above the stored one unless
both are zero (authenticators that keep no count); one that goes back is the sign of a cloned
authenticator, and `use` refuses it (`CloneSuspected`) without storing anything.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, exists, insert, select, update

from issuer.db import Database, delete_in_batches, passkey_challenges, passkeys
from issuer.opaque import secret_hash

NAME_LENGTH = 64
CREDENTIAL_ID_CHARS = 1400  # base64url of WebAuthn's longest credential id (1023 bytes)
CHALLENGE_TTL = 300  # seconds: the ceremony's timeout (60 s in the options) and a margin
TRANSPORTS = frozenset({"ble", "hybrid", "internal", "nfc", "smart-card", "usb"})  # section 5.8.4
PURPOSES = frozenset({"register", "login"})


class PasskeyError(ValueError):
    """A passkey operation was refused; the message says why (safe to show)."""


class CloneSuspected(PasskeyError):
    """An assertion's signature counter did not move past the stored one (WebAuthn section 6.1.1)."""


@dataclass(frozen=True)
class Passkey:
    """A registered credential."""

    id: str  # the issuer's handle (forms name it)
    credential_id: str  # base64url, as the browser sends it
    user_id: str
    public_key: bytes  # COSE_Key
    sign_count: int
    transports: tuple[str, ...]
    backup_eligible: bool
    backup_state: bool
    name: str
    created_at: int
    last_used_at: int | None

    @property
    def amr(self) -> tuple[str, ...]:
        """Return the RFC 8176 methods a login with this passkey (user verified) proves."""
        return ("swk" if self.backup_eligible else "hwk", "user", "mfa")


def check_name(name: str) -> str:
    """Return a passkey's name stripped, or raise PasskeyError: 1-64 printable characters."""
    name = name.strip()
    if not 0 < len(name) <= NAME_LENGTH or not name.isprintable():
        raise PasskeyError(f"A passkey's name must be 1 to {NAME_LENGTH} printable characters.")
    return name


def clean_transports(reported: Sequence[object]) -> tuple[str, ...]:
    """Return the transports a browser reported that WebAuthn defines, each once (others are dropped)."""
    return tuple(dict.fromkeys(str(t) for t in reported if isinstance(t, str) and t in TRANSPORTS))


class Passkeys:
    """Register, list, rename, remove and use passkeys; issue and consume ceremony challenges."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- challenges ---------------------------------------------------------------------------

    def remember_challenge(self, challenge: str, purpose: str, ttl: int = CHALLENGE_TTL) -> None:
        """Keep a ceremony's challenge (base64url) for `ttl` seconds, as its hash."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown ceremony {purpose!r}")
        with self.database.transaction() as conn:
            conn.execute(
                insert(passkey_challenges).values(
                    challenge_hash=secret_hash(challenge), purpose=purpose, expires_at=int(time.time()) + ttl
                )
            )

    def consume_challenge(self, challenge: str, purpose: str) -> bool:
        """Delete a live challenge of this ceremony; return whether there was one (it is then used up)."""
        with self.database.transaction() as conn:
            deleted = conn.execute(
                delete(passkey_challenges).where(
                    passkey_challenges.c.challenge_hash == secret_hash(challenge),
                    passkey_challenges.c.purpose == purpose,
                    passkey_challenges.c.expires_at > int(time.time()),
                )
            ).rowcount
        return deleted == 1

    # -- credentials --------------------------------------------------------------------------

    def add(
        self,
        user_id: str,
        *,
        credential_id: str,
        public_key: bytes,
        sign_count: int,
        transports: Sequence[str],
        backup_eligible: bool,
        backup_state: bool,
        name: str,
    ) -> Passkey:
        """Store a credential a registration ceremony verified; raise PasskeyError if it is registered already."""
        name = check_name(name)
        if self.by_credential_id(credential_id) is not None:
            raise PasskeyError("This passkey is registered already.")
        passkey = Passkey(
            id=uuid.uuid4().hex,
            credential_id=credential_id,
            user_id=user_id,
            public_key=public_key,
            sign_count=sign_count,
            transports=tuple(transports),
            backup_eligible=backup_eligible,
            backup_state=backup_state,
            name=name,
            created_at=int(time.time()),
            last_used_at=None,
        )
        with self.database.transaction() as conn:
            conn.execute(
                insert(passkeys).values(
                    id=passkey.id,
                    credential_id=credential_id,
                    user_id=user_id,
                    public_key=public_key,
                    sign_count=sign_count,
                    transports=" ".join(passkey.transports),
                    backup_eligible=backup_eligible,
                    backup_state=backup_state,
                    name=name,
                    created_at=passkey.created_at,
                )
            )
        return passkey

    def of_user(self, user_id: str) -> list[Passkey]:
        """Return a user's passkeys, oldest first."""
        query = select(passkeys).where(passkeys.c.user_id == user_id).order_by(passkeys.c.created_at, passkeys.c.id)
        with self.database.reading() as conn:
            return [_passkey(row) for row in conn.execute(query)]

    def any_of(self, user_id: str) -> bool:
        """Return whether a user has a passkey (one `EXISTS`, not their list)."""
        query = select(exists().where(passkeys.c.user_id == user_id))
        with self.database.reading() as conn:
            return bool(conn.execute(query).scalar())

    def by_credential_id(self, credential_id: str) -> Passkey | None:
        """Return the passkey with this credential id (base64url), or None."""
        if not 0 < len(credential_id) <= CREDENTIAL_ID_CHARS:
            return None
        with self.database.reading() as conn:
            row = conn.execute(select(passkeys).where(passkeys.c.credential_id == credential_id)).first()
        return _passkey(row) if row is not None else None

    def rename(self, user_id: str, passkey_id: str, name: str) -> bool:
        """Rename one of the user's passkeys; return whether it exists. Raises PasskeyError for a bad name."""
        name = check_name(name)
        with self.database.transaction() as conn:
            changed = conn.execute(
                update(passkeys).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id).values(name=name)
            ).rowcount
        return changed == 1

    def remove(self, user_id: str, passkey_id: str) -> bool:
        """Remove one of the user's passkeys; return whether it existed."""
        with self.database.transaction() as conn:
            removed = conn.execute(
                delete(passkeys).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
            ).rowcount
        return removed == 1

    def use(self, passkey: Passkey, sign_count: int, backup_state: bool) -> None:
        """Record a verified assertion: its counter, the backed-up flag, the time; or raise CloneSuspected.

        The counter must move past the stored one, read again inside the update (two logins
        racing with one count cannot both pass): unless both are zero, an equal or lower count
        means two authenticators hold the key (WebAuthn section 6.1.1).
        """
        now = int(time.time())
        with self.database.transaction() as conn:
            moved = conn.execute(
                update(passkeys)
                .where(
                    passkeys.c.id == passkey.id,
                    (passkeys.c.sign_count < sign_count) | ((passkeys.c.sign_count == 0) & (sign_count == 0)),
                )
                .values(sign_count=sign_count, backup_state=backup_state, last_used_at=now)
            ).rowcount
        if moved != 1:
            raise CloneSuspected("The passkey's signature counter went back: it may have been cloned.")

    @staticmethod
    def prune(database: Database, now: int, *, batch: int) -> int:
        """Delete the challenges that expired before `now`; return how many."""
        return delete_in_batches(
            database, passkey_challenges.c.challenge_hash, passkey_challenges.c.expires_at < now, batch=batch
        )


def _passkey(row: Row[Any]) -> Passkey:
    return Passkey(
        id=row.id,
        credential_id=row.credential_id,
        user_id=row.user_id,
        public_key=bytes(row.public_key),
        sign_count=int(row.sign_count),
        transports=tuple(row.transports.split()),
        backup_eligible=bool(row.backup_eligible),
        backup_state=bool(row.backup_state),
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )
