"""Authorization codes (RFC 6749 section 4.1) bound to PKCE (RFC 7636, S256 only).

A code is 256 random bits, stored only as a hash, valid for a minute and usable once; it is
bound to the client, the exact redirect URI, the PKCE challenge and the login session.
Owner of `authorization_codes`.

Redeeming joins the caller's transaction, so the token endpoint marks the code used and
stores the refresh token it grants in one commit: a concurrent second redemption finds
both, never a used code whose tokens are not written yet.
"""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, update

from issuer.db import Database, authorization_codes, delete_in_batches, stamp, with_username
from issuer.opaque import new_secret, secret_hash
from issuer.tokens import Grant
from issuer.users import parse_scope
from shared.pkce import VERIFIER, s256

CODE_TTL = 60
# A spent code is kept this long after it expires: its reuse is still recognised (and what it
# granted revoked) until then, well past its minute of life.
CODE_KEPT = 86400


class CodeError(Exception):
    """A code cannot be redeemed; the message is safe to show the client."""


class CodeMismatch(CodeError):
    """The code's client, redirect URI or PKCE verifier does not match: the code must be spent."""


class CodeReused(CodeError):
    """A used code came back: it leaked, and what its first use granted must be revoked."""

    def __init__(self, family_id: str | None) -> None:
        super().__init__("the authorization code was already used")
        self.family_id = family_id


@dataclass(frozen=True)
class Redeemed:
    """What a redeemed code grants, the refresh token family to start, and its login session."""

    grant: Grant
    family_id: str
    session_hash: str | None
    nonce: str | None = None


class AuthorizationCodes:
    """Authorization codes in the issuer's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def issue(
        self,
        grant: Grant,
        *,
        redirect_uri: str,
        challenge: str,
        session_hash: str | None,
        nonce: str | None = None,
        dpop_jkt: str | None = None,
    ) -> str:
        """Create a one-time code for a grant; with `dpop_jkt`, only a DPoP proof by that key redeems it (RFC 9449 section 10)."""
        code = new_secret()
        with self.database.transaction() as conn:
            conn.execute(
                insert(authorization_codes).values(
                    code_hash=secret_hash(code),
                    client_id=grant.client_id,
                    redirect_uri=redirect_uri,
                    code_challenge=challenge,
                    user_id=grant.user_id,
                    scope=grant.scope,
                    session_hash=session_hash,
                    expires_at=int(time.time()) + CODE_TTL,
                    audience=grant.audience,
                    nonce=nonce,
                    dpop_jkt=dpop_jkt,
                )
            )
        return code

    def redeem(
        self, code: str, *, client_id: str, redirect_uri: str, verifier: str, dpop_jkt: str | None = None
    ) -> Redeemed:
        """Spend a code, checking every binding, in the caller's transaction.

        Raises CodeMismatch when a binding does not match and CodeReused when the code was
        already used; the caller then spends the code (`spend`) or revokes what it granted,
        after its transaction has rolled back.
        """
        if not VERIFIER.fullmatch(verifier):
            raise CodeError("code_verifier must be 43-128 unreserved characters (RFC 7636)")
        with self.database.transaction() as conn:
            row = conn.execute(
                with_username(authorization_codes, authorization_codes.c.code_hash, secret_hash(code))
            ).first()
            if row is None:
                raise CodeError("the authorization code is not known")
            if row.used_at is not None:
                raise CodeReused(row.family_id)
            if row.expires_at <= time.time():
                raise CodeError("the authorization code has expired")
            if row.client_id != client_id:
                raise CodeMismatch("the authorization code was issued to another client")
            if row.redirect_uri != redirect_uri:
                raise CodeMismatch("redirect_uri does not match the authorization request")
            if not hmac.compare_digest(s256(verifier), row.code_challenge):
                raise CodeMismatch("code_verifier does not match the code challenge")
            if row.dpop_jkt is not None and (dpop_jkt is None or not hmac.compare_digest(row.dpop_jkt, dpop_jkt)):
                raise CodeMismatch(
                    "the authorization request's dpop_jkt names a key this request's DPoP proof is not by"
                )
            family_id = uuid.uuid4().hex
            conn.execute(
                update(authorization_codes)
                .where(authorization_codes.c.code_hash == row.code_hash)
                .values(used_at=int(time.time()), family_id=family_id)
            )
        grant = Grant(
            row.user_id, row.username, row.client_id, row.scope, row.audience, user_scopes=parse_scope(row.user_scope)
        )
        return Redeemed(grant, family_id, row.session_hash, row.nonce)

    def spend(self, code: str) -> None:
        """Mark a code used without granting anything (a failed redemption: verifiers cannot be guessed)."""
        with self.database.transaction() as conn:
            stamp(
                conn,
                authorization_codes.c.used_at,
                authorization_codes.c.code_hash == secret_hash(code),
                now=int(time.time()),
            )

    @staticmethod
    def spend_client(database: Database, client_id: str) -> int:
        """Spend every unspent code issued to a client (`clients delete`); return how many."""
        with database.transaction() as conn:
            return stamp(
                conn, authorization_codes.c.used_at, authorization_codes.c.client_id == client_id, now=int(time.time())
            )

    @staticmethod
    def prune(database: Database, now: int, *, batch: int) -> int:
        """Delete the codes that expired more than `CODE_KEPT` seconds before `now`; return how many."""
        return delete_in_batches(
            database, authorization_codes.c.code_hash, authorization_codes.c.expires_at < now - CODE_KEPT, batch=batch
        )
