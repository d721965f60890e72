"""Authorization codes (RFC 6749 section 4.1) bound to PKCE (RFC 7636, S256 only).

A code is 256 random bits, stored only as a hash, valid for a minute and usable once; it is
bound to the client, the exact redirect URI, the PKCE challenge and the login session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass

from issuer.tokens import Grant

CODE_TTL = 60
# RFC 7636 section 4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


class CodeError(Exception):
    """A code cannot be redeemed; the message is safe to show the client."""


@dataclass(frozen=True)
class Redeemed:
    """What a redeemed code grants, the refresh token family to start, and its login session."""

    grant: Grant
    family_id: str
    session_hash: str | None


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def s256(verifier: str) -> str:
    """Return the S256 code challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class AuthorizationCodes:
    """Authorization codes in the issuer's database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def issue(self, grant: Grant, *, redirect_uri: str, challenge: str, session_hash: str | None) -> str:
        """Create a one-time code for a grant."""
        code = secrets.token_urlsafe(32)
        self.conn.execute(
            "INSERT INTO authorization_codes (code_hash, client_id, redirect_uri, code_challenge, username, scope,"
            " session_hash, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _hash(code),
                grant.client_id,
                redirect_uri,
                challenge,
                grant.username,
                grant.scope,
                session_hash,
                int(time.time()) + CODE_TTL,
            ),
        )
        return code

    def redeem(self, code: str, *, client_id: str, redirect_uri: str, verifier: str) -> Redeemed:
        """Spend a code, checking every binding; a code is never usable twice."""
        if not VERIFIER.fullmatch(verifier):
            raise CodeError("code_verifier must be 43-128 unreserved characters (RFC 7636)")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT * FROM authorization_codes WHERE code_hash = ?", (_hash(code),)).fetchone()
            if row is None:
                raise CodeError("the authorization code is not known")
            if row["used_at"] is not None:
                # A second use means the code leaked: revoke what its first use gave out (RFC 6749 4.1.2).
                self.conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
                    (int(time.time()), row["family_id"]),
                )
                self.conn.execute("COMMIT")
                raise CodeError("the authorization code was already used")
            family_id = uuid.uuid4().hex
            self.conn.execute(
                "UPDATE authorization_codes SET used_at = ?, family_id = ? WHERE code_hash = ?",
                (int(time.time()), family_id, row["code_hash"]),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        if row["expires_at"] <= time.time():
            raise CodeError("the authorization code has expired")
        if row["client_id"] != client_id:
            raise CodeError("the authorization code was issued to another client")
        if row["redirect_uri"] != redirect_uri:
            raise CodeError("redirect_uri does not match the authorization request")
        if not hmac.compare_digest(s256(verifier), row["code_challenge"]):
            raise CodeError("code_verifier does not match the code challenge")
        return Redeemed(Grant(row["username"], row["client_id"], row["scope"]), family_id, row["session_hash"])
