"""Device authorization requests (RFC 8628) in the issuer's database: owner of `device_codes`.

User codes follow section 6.1: 8 characters of "BCDFGHJKLMNPQRSTVWXZ" (no vowels: no words; no
digits or look-alikes), shown as XXXX-XXXX, read back case-insensitively without dashes or
spaces. Both the device code (256 random bits) and the user code are stored as SHA-256 hashes.
The routes are issuer.device's.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from issuer.db import Database, delete_in_batches, device_codes, stamp, users
from issuer.opaque import new_secret, secret_hash
from issuer.tokens import Grant

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 section 6.1
USER_CODE_LENGTH = 8
SLOW_DOWN = 5  # seconds added to the interval by each slow_down (section 3.5)
# A request is kept this long after it expires (like codes: a late poll still gets expired_token).
DEVICE_CODE_KEPT = 86400
MAX_TYPED = 32  # characters of a typed user code looked at

PENDING, APPROVED, DENIED = "pending", "approved", "denied"


def new_user_code() -> str:
    """Return a random user code: 8 characters of the section 6.1 alphabet (displayed by `display`)."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def display(user_code: str) -> str:
    """Return a user code as people read it: XXXX-XXXX."""
    half = len(user_code) // 2
    return f"{user_code[:half]}-{user_code[half:]}"


def normalise(typed: str) -> str | None:
    """Return the user code a person typed (any case, dashes and spaces ignored), or None if it cannot be one."""
    code = "".join(ch for ch in typed[:MAX_TYPED] if ch not in "- \t").upper()
    if len(code) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in code):
        return None
    return code


@dataclass(frozen=True)
class Request:
    """A device authorization request as the verification page shows it."""

    device_code_hash: str
    client_id: str
    scope: str
    audience: str
    expires_at: int
    status: str


@dataclass(frozen=True)
class Poll:
    """What a poll found: an OAuth error to answer, or the approved grant, now spent."""

    error: str | None = None
    description: str = ""
    grant: Grant | None = None
    session_hash: str | None = None


class DeviceCodes:
    """Device authorization requests in the issuer's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def issue(self, client_id: str, scope: str, audience: str, *, ttl: int, interval: int) -> tuple[str, str]:
        """Store a new request; return its device code and user code."""
        device_code = new_secret()
        now = int(time.time())
        for _ in range(5):  # a user code already taken by a live request (unlikely at 2^34.5): draw again
            user_code = new_user_code()
            with self.database.reading() as conn:
                taken = conn.execute(
                    select(device_codes.c.device_code_hash).where(
                        device_codes.c.user_code_hash == secret_hash(user_code)
                    )
                ).first()
            if taken is None:
                break
        with self.database.transaction() as conn:
            conn.execute(
                insert(device_codes).values(
                    device_code_hash=secret_hash(device_code),
                    user_code_hash=secret_hash(user_code),
                    client_id=client_id,
                    scope=scope,
                    audience=audience,
                    created_at=now,
                    expires_at=now + ttl,
                    poll_interval=interval,
                    status=PENDING,
                )
            )
        return device_code, user_code

    def pending(self, user_code: str) -> Request | None:
        """Return the live, undecided request of a user code, or None."""
        with self.database.reading() as conn:
            row = conn.execute(
                select(device_codes).where(device_codes.c.user_code_hash == secret_hash(user_code))
            ).first()
        if row is None or row.status != PENDING or row.used_at is not None or row.expires_at <= time.time():
            return None  # spent (its client deleted), decided or expired: nothing to approve
        return Request(row.device_code_hash, row.client_id, row.scope or "", row.audience, row.expires_at, row.status)

    def decide(
        self, device_code_hash: str, *, approved: bool, user_id: str, scope: str, session_hash: str | None
    ) -> bool:
        """Record the user's answer to a pending, live request; return False when it is no longer pending."""
        now = int(time.time())
        values: dict[str, Any] = {"status": APPROVED if approved else DENIED, "user_id": user_id, "decided_at": now}
        if approved:
            values.update(scope=scope, session_hash=session_hash)
        with self.database.transaction() as conn:
            changed: int = conn.execute(
                update(device_codes)
                .where(
                    device_codes.c.device_code_hash == device_code_hash,
                    device_codes.c.status == PENDING,
                    device_codes.c.used_at.is_(None),
                    device_codes.c.expires_at > now,
                )
                .values(values)
            ).rowcount
        return changed == 1

    def poll(self, device_code: str, client_id: str) -> Poll:
        """Answer a poll (section 3.5) in the caller's transaction; an approved code is spent by it."""
        now = int(time.time())
        code_hash = secret_hash(device_code)
        with self.database.transaction() as conn:
            # The approving user's row first, held until the grant commits (FOR SHARE): a change of
            # their scopes or their deletion waits for it, then ends what it issued (issuer.narrowing),
            # and is never made while the grant reads them. Before the code's row, as a user's
            # deletion takes them (the user, then their codes): the other order deadlocked.
            approver = conn.execute(
                select(device_codes.c.user_id).where(device_codes.c.device_code_hash == code_hash)
            ).scalar()
            if approver is not None:
                conn.execute(select(users.c.id).where(users.c.id == approver).with_for_update(read=True))
            row = conn.execute(
                select(device_codes, users.c.username)
                .outerjoin(users, users.c.id == device_codes.c.user_id)
                .where(device_codes.c.device_code_hash == code_hash)
                .with_for_update(of=device_codes)
            ).first()
            if row is not None and row.user_id is not None and row.user_id != approver:  # approved meanwhile
                conn.execute(select(users.c.id).where(users.c.id == row.user_id).with_for_update(read=True))
            if row is None or not hmac.compare_digest(row.client_id, client_id):
                # Another client's code is not this client's to learn anything about.
                return Poll("invalid_grant", "the device code is not known")
            if row.used_at is not None:
                return Poll("invalid_grant", "the device code was already used")
            if row.expires_at <= now:
                return Poll("expired_token", "the device code has expired: start again")
            if row.status == DENIED:
                return Poll("access_denied", "the user denied the request")
            if row.status == PENDING:
                if row.polled_at is not None and now - row.polled_at < row.poll_interval:
                    interval = row.poll_interval + SLOW_DOWN
                    self._polled(conn, row.device_code_hash, now, interval)
                    return Poll("slow_down", f"polling too fast: wait {interval} seconds between requests")
                self._polled(conn, row.device_code_hash, now, row.poll_interval)
                return Poll("authorization_pending", "the user has not answered yet")
            conn.execute(
                update(device_codes).where(device_codes.c.device_code_hash == row.device_code_hash).values(used_at=now)
            )
            grant = Grant(row.user_id, row.username, row.client_id, row.scope, row.audience)
            return Poll(grant=grant, session_hash=row.session_hash)

    @staticmethod
    def _polled(conn: Connection, device_code_hash: str, now: int, interval: int) -> None:
        conn.execute(
            update(device_codes)
            .where(device_codes.c.device_code_hash == device_code_hash)
            .values(polled_at=now, poll_interval=interval)
        )

    @staticmethod
    def prune(database: Database, now: int, *, batch: int) -> int:
        """Delete the requests that expired more than `DEVICE_CODE_KEPT` seconds before `now`; return how many."""
        return delete_in_batches(
            database, device_codes.c.device_code_hash, device_codes.c.expires_at < now - DEVICE_CODE_KEPT, batch=batch
        )

    @staticmethod
    def spend_client(database: Database, client_id: str) -> int:
        """Spend every unspent request of a client (`clients delete`): a client registered again inherits none."""
        with database.transaction() as conn:
            return stamp(conn, device_codes.c.used_at, device_codes.c.client_id == client_id, now=int(time.time()))
