"""One-time codes: a user's TOTP factor (RFC 6238) and their recovery codes. Owner of `totp_factors`, `recovery_codes`.

The codes are what authenticator apps expect (RFC 6238 section 4 with its defaults, and the
`otpauth://` URI of Google Authenticator's key-uri format): HMAC-SHA-1, 6 digits, 30-second
steps from the Unix epoch. The seed is 160 random bits (RFC 4226 section 4 recommends at
least 128, and 160 is SHA-1's block), sealed under the key-encryption key like the signing
keys (`issuer.kek.seal_secret`), with the user's id as associated data: a sealed seed copied
onto another user's row does not open, and the database alone yields no seed.

A code is accepted for the current step or one either side (RFC 6238 section 5.2: one step of
clock drift each way), and once only: the step it matched is remembered (`last_step`), and a
code for that step or an earlier one is refused (RFC 6238 section 5.2, "the verifier MUST NOT
accept the second attempt of the OTP after the successful validation"). The update is
conditional, so two requests racing with one code cannot both win.

Recovery codes are 80 random bits each, shown once at confirmation; only their SHA-256 is
kept (like tokens: too random to guess from the hash), and each is spent once.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyotp
from sqlalchemy import Connection, Row, delete, func, insert, or_, select, update

from issuer.db import Database, recovery_codes, totp_factors, users
from issuer.kek import UnreadableKeyError, open_secret, seal_secret, sealed_under
from issuer.opaque import secret_hash

DIGITS = 6
PERIOD = 30  # seconds a step lasts (RFC 6238 section 5.2's default)
DRIFT_STEPS = 1  # steps accepted either side of the current one
SEED_BYTES = 20  # 160 bits
RECOVERY_CODES = 10
RECOVERY_GROUPS = 4  # of 4 base32 characters: 16 characters, 80 bits
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
CODE_LENGTH = DIGITS
MAX_RECOVERY_INPUT = 64  # longer input is not a recovery code and is never hashed


class FactorError(ValueError):
    """A factor cannot be enrolled, confirmed or used as asked; the message says why."""


class SeedUnreadable(Exception):
    """A seed cannot be opened under the configured KEKs (a KEK change half done, or damage): answered 503."""


@dataclass(frozen=True)
class TotpStatus:
    """What the account page shows of a user's factor (never the seed)."""

    created_at: int
    confirmed_at: int | None
    recovery_codes_left: int

    @property
    def active(self) -> bool:
        """Return whether the factor was confirmed: logins then ask for a code."""
        return self.confirmed_at is not None


def _label(user_id: str) -> str:
    return f"totp:{user_id}"


def normalize_recovery_code(text: str) -> str:
    """Return a recovery code as stored: lower case, without spaces or dashes."""
    return "".join(ch for ch in text.lower() if ch not in " -\t")


def new_recovery_code() -> str:
    """Return a new recovery code, grouped for reading: `abcd-efgh-ijkl-mnop`."""
    letters = "".join(secrets.choice(_BASE32) for _ in range(4 * RECOVERY_GROUPS))
    return "-".join(letters[i : i + 4] for i in range(0, len(letters), 4))


def is_totp_code(text: str) -> bool:
    """Return whether `text` has the form of a TOTP code (6 ASCII digits)."""
    return len(text) == DIGITS and text.isascii() and text.isdigit()


class TotpFactors:
    """Enroll, check and remove users' TOTP factors and recovery codes."""

    def __init__(self, database: Database, keks: Sequence[bytes], *, issuer_name: str) -> None:
        self.database = database
        self.keks = tuple(keks)
        self.issuer_name = issuer_name

    # -- reading ------------------------------------------------------------------------------

    def status(self, user_id: str) -> TotpStatus | None:
        """Return the state of a user's factor, or None when they have none."""
        with self.database.reading() as conn:
            row = conn.execute(
                select(totp_factors.c.created_at, totp_factors.c.confirmed_at).where(totp_factors.c.user_id == user_id)
            ).first()
            left = conn.execute(
                select(func.count())
                .select_from(recovery_codes)
                .where(recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
            ).scalar_one()
        if row is None:
            return None
        return TotpStatus(row.created_at, row.confirmed_at, int(left))

    def active(self, user_id: str) -> bool:
        """Return whether logging in as this user needs a code."""
        found = self.status(user_id)
        return found is not None and found.active

    def provisioning_uri(self, secret: str, username: str) -> str:
        """Return the `otpauth://totp/` URI an authenticator app reads from the QR code."""
        return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
            name=username, issuer_name=self.issuer_name
        )

    # -- enrolling ----------------------------------------------------------------------------

    def start(self, user_id: str, now: int | None = None) -> str:
        """Begin enrollment: a new seed, unconfirmed, replacing an unconfirmed one; return it (base32).

        Refused (FactorError) while a confirmed factor exists: it must be removed first.
        """
        now = int(time.time()) if now is None else now
        secret = pyotp.random_base32(length=32)  # 32 base32 characters: SEED_BYTES bytes
        sealed = seal_secret(self.keks[0], _label(user_id), secret.encode("ascii"))
        with self.database.transaction() as conn:
            existing = conn.execute(
                select(totp_factors.c.confirmed_at).where(totp_factors.c.user_id == user_id).with_for_update()
            ).first()
            if existing is not None and existing.confirmed_at is not None:
                raise FactorError("one-time codes are already set up; remove them first")
            conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user_id))
            conn.execute(
                insert(totp_factors).values(user_id=user_id, sealed_seed=sealed, created_at=now, confirmed_at=None)
            )
        return secret

    def pending_secret(self, user_id: str) -> str | None:
        """Return the seed of an enrollment still waiting for its first code (to show it again), or None."""
        with self.database.reading() as conn:
            row = conn.execute(select(totp_factors).where(totp_factors.c.user_id == user_id)).first()
        if row is None or row.confirmed_at is not None:
            return None
        return self._open(user_id, bytes(row.sealed_seed)).decode("ascii")

    def _open(self, user_id: str, sealed: bytes) -> bytes:
        try:
            return open_secret(self.keks, _label(user_id), sealed)
        except UnreadableKeyError as exc:
            raise SeedUnreadable(str(exc)) from exc

    def confirm(self, user_id: str, code: str, now: int | None = None) -> list[str] | None:
        """Activate an enrollment with its first code; return the new recovery codes, or None for a wrong code."""
        now = int(time.time()) if now is None else now
        with self.database.transaction() as conn:
            row = conn.execute(select(totp_factors).where(totp_factors.c.user_id == user_id).with_for_update()).first()
            if row is None or row.confirmed_at is not None:
                raise FactorError("no enrollment of one-time codes is waiting for its first code")
            step = self._matching_step(row, code, now)
            if step is None:
                return None
            conn.execute(
                update(totp_factors).where(totp_factors.c.user_id == user_id).values(confirmed_at=now, last_step=step)
            )
            return self._new_recovery_codes(conn, user_id, now)

    def _new_recovery_codes(self, conn: Connection, user_id: str, now: int) -> list[str]:
        conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        conn.execute(
            insert(recovery_codes),
            [
                {"code_hash": secret_hash(normalize_recovery_code(code)), "user_id": user_id, "created_at": now}
                for code in codes
            ],
        )
        return codes

    # -- checking -----------------------------------------------------------------------------

    def verify(self, user_id: str, code: str, now: int | None = None) -> str | None:
        """Check a TOTP code or a recovery code of an active factor; spend it; return `otp`, `recovery` or None."""
        now = int(time.time()) if now is None else now
        code = code.strip()
        if is_totp_code(code):
            return "otp" if self._verify_totp(user_id, code, now) else None
        if len(code) > MAX_RECOVERY_INPUT:
            return None
        return "recovery" if self._spend_recovery_code(user_id, code, now) else None

    def _verify_totp(self, user_id: str, code: str, now: int) -> bool:
        with self.database.reading() as conn:
            row = conn.execute(select(totp_factors).where(totp_factors.c.user_id == user_id)).first()
        if row is None or row.confirmed_at is None:
            return False
        step = self._matching_step(row, code, now)
        if step is None:
            return False
        with self.database.transaction() as conn:
            accepted = conn.execute(
                update(totp_factors)
                .where(
                    totp_factors.c.user_id == user_id,
                    totp_factors.c.confirmed_at.is_not(None),
                    or_(totp_factors.c.last_step.is_(None), totp_factors.c.last_step < step),
                )
                .values(last_step=step)
            ).rowcount
        return accepted == 1

    def _matching_step(self, row: Row[Any], code: str, now: int) -> int | None:
        """Return the newest step within the drift whose code is `code` and is later than the last accepted."""
        if not is_totp_code(code):
            return None
        seed = self._open(row.user_id, bytes(row.sealed_seed))
        totp = pyotp.TOTP(seed.decode("ascii"), digits=DIGITS, interval=PERIOD)
        last = row.last_step
        current = now // PERIOD
        matched = None
        for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
            if hmac.compare_digest(totp.generate_otp(step), code) and (last is None or step > last):
                matched = step
        return matched

    def _spend_recovery_code(self, user_id: str, code: str, now: int) -> bool:
        hashed = secret_hash(normalize_recovery_code(code))
        with self.database.transaction() as conn:
            spent = conn.execute(
                update(recovery_codes)
                .where(
                    recovery_codes.c.code_hash == hashed,
                    recovery_codes.c.user_id == user_id,
                    recovery_codes.c.used_at.is_(None),
                    select(totp_factors.c.user_id)
                    .where(totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_not(None))
                    .exists(),
                )
                .values(used_at=now)
            ).rowcount
        return spent == 1

    # -- removing -----------------------------------------------------------------------------

    def remove(self, user_id: str) -> bool:
        """Delete a user's factor and recovery codes; return whether there was a factor."""
        with self.database.transaction() as conn:
            return self.remove_in(conn, user_id)

    @staticmethod
    def remove_in(conn: Connection, user_id: str) -> bool:
        """Delete a user's factor and recovery codes in the open transaction; return whether there was a factor."""
        conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        return conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user_id)).rowcount > 0

    def reseal(self, target: bytes) -> int:
        """Re-seal every seed not sealed under `target` yet (a KEK change, `keys rewrap`); return how many."""
        count = 0
        with self.database.transaction() as conn:
            rows = conn.execute(select(totp_factors.c.user_id, totp_factors.c.sealed_seed).with_for_update()).all()
            for row in rows:
                if sealed_under(target, row.sealed_seed):
                    continue
                seed = open_secret(self.keks, _label(row.user_id), bytes(row.sealed_seed))
                conn.execute(
                    update(totp_factors)
                    .where(totp_factors.c.user_id == row.user_id)
                    .values(sealed_seed=seal_secret(target, _label(row.user_id), seed))
                )
                count += 1
        return count


def user_id_of(database: Database, username: str) -> str | None:
    """Return the stable id of the user named `username`, or None."""
    with database.reading() as conn:
        found: str | None = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
    return found
