"""Tokens: RFC 9068 JWT access tokens, and opaque refresh tokens rotated on every use.

A refresh token is 256 random bits; only its SHA-256 is stored. Each use marks it used and
issues a successor in the same family. Presenting a used token again means it was copied, so
the whole family is revoked (OAuth 2.0 Security BCP, RFC 9700 section 4.14.2).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import RSAAlgorithm

from issuer.keys import SigningKey
from shared.jose import b64url_encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    """Who a token is for, through which client, with which scope."""

    username: str
    client_id: str
    scope: str


class RefreshError(Exception):
    """A refresh token cannot be used; the message is safe to show the client."""


def mint_access_token(
    key: SigningKey, grant: Grant, *, issuer: str, audience: str, ttl: int, now: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Sign an RFC 9068 access token; return it with its claims.

    PyJWT's RS256 algorithm object signs; the header segment is encoded once per key, which
    keeps the cost per token at the RSA signature's (see the README's Performance section).
    """
    issued_at = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": grant.username,
        "aud": audience,
        "exp": issued_at + ttl,
        "iat": issued_at,
        "jti": uuid.uuid4().hex,
        "client_id": grant.client_id,
        "scope": grant.scope,
    }
    signing_input = f"{_header_segment(key.kid)}.{b64url_encode(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = _RS256.sign(signing_input.encode("ascii"), key.private_key)
    return f"{signing_input}.{b64url_encode(signature)}", claims


_RS256 = RSAAlgorithm(RSAAlgorithm.SHA256)


@functools.lru_cache(maxsize=16)
def _header_segment(kid: str) -> str:
    """Return the encoded RFC 9068 header of a key: the same for every token it signs."""
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid}
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class RefreshTokens:
    """Refresh tokens in the issuer's database."""

    def __init__(self, conn: sqlite3.Connection, ttl: int) -> None:
        self.conn = conn
        self.ttl = ttl

    def issue(self, grant: Grant, family_id: str | None = None, session_hash: str | None = None) -> str:
        """Create a refresh token, starting a new family unless one is given.

        A token born of a browser login records that login session: revoking the token
        (the resource's "Log out") ends the session at the issuer too.
        """
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        self.conn.execute(
            "INSERT INTO refresh_tokens"
            " (token_hash, family_id, username, client_id, scope, issued_at, expires_at, session_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _hash(token),
                family_id or uuid.uuid4().hex,
                grant.username,
                grant.client_id,
                grant.scope,
                now,
                now + self.ttl,
                session_hash,
            ),
        )
        return token

    def rotate(self, token: str, client_id: str) -> tuple[Grant, str]:
        """Spend a refresh token and return its grant with a fresh successor token."""
        now = int(time.time())
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT * FROM refresh_tokens WHERE token_hash = ?", (_hash(token),)).fetchone()
            if row is None:
                raise RefreshError("the refresh token is not known")
            if row["client_id"] != client_id:
                raise RefreshError("the refresh token was issued to another client")
            if row["revoked_at"] is not None:
                raise RefreshError("the refresh token has been revoked")
            if row["used_at"] is not None:
                self._revoke_family(row["family_id"], now)
                self.conn.execute("COMMIT")
                log.warning(
                    "refresh token reused; family revoked",
                    extra={"fields": {"sub": row["username"], "family": row["family_id"]}},
                )
                raise RefreshError("the refresh token was already used; its session has been revoked")
            if row["expires_at"] <= now:
                raise RefreshError("the refresh token has expired")
            self.conn.execute("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?", (now, row["token_hash"]))
            grant = Grant(row["username"], row["client_id"], row["scope"])
            successor = self.issue(grant, row["family_id"], row["session_hash"])
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return grant, successor

    def revoke(self, token: str) -> bool:
        """Revoke the family of a refresh token and end its login session; return whether it was known."""
        row = self.conn.execute(
            "SELECT family_id, session_hash FROM refresh_tokens WHERE token_hash = ?", (_hash(token),)
        ).fetchone()
        if row is None:
            return False
        now = int(time.time())
        self._revoke_family(row["family_id"], now)
        if row["session_hash"] is not None:
            self.conn.execute(
                "UPDATE login_sessions SET ended_at = ? WHERE session_hash = ? AND ended_at IS NULL",
                (now, row["session_hash"]),
            )
        return True

    def _revoke_family(self, family_id: str, now: int) -> None:
        self.conn.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL", (now, family_id)
        )
