"""Whether a user has a second factor: active one-time codes (`issuer.totp`) or a passkey (`issuer.credentials`).

A user who has one logs in with it: the password grant, which carries a password alone,
refuses them (`issuer.oauth`), and changing a factor needs a login that proved it (RFC 8176
`mfa`, `issuer.reauth`). One query, two `EXISTS`, over tables this module only reads: their
owners are `TotpFactors` and `Passkeys`.
"""

from __future__ import annotations

from sqlalchemy import exists, or_, select

from issuer.db import Database, passkeys, totp_factors


def has_second_factor(database: Database, user_id: str) -> bool:
    """Return whether the user has confirmed one-time codes or a passkey (an unconfirmed enrollment is none)."""
    codes = exists().where(totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_not(None))
    passkey = exists().where(passkeys.c.user_id == user_id)
    with database.reading() as conn:
        return bool(conn.execute(select(or_(codes, passkey))).scalar())
