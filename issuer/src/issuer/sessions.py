"""Login sessions at the issuer, kept server-side so that logging out really ends them.

The browser holds only a random session id (inside Flask's signed, HttpOnly session cookie);
the database keeps its SHA-256 with the user and the expiry.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class LoginSessions:
    """Create, look up and end login sessions."""

    def __init__(self, conn: sqlite3.Connection, ttl: int) -> None:
        self.conn = conn
        self.ttl = ttl

    def create(self, username: str) -> str:
        """Start a session for a user who just proved their password; return its id."""
        session_id = secrets.token_urlsafe(32)
        now = int(time.time())
        self.conn.execute(
            "INSERT INTO login_sessions (session_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (_hash(session_id), username, now, now + self.ttl),
        )
        return session_id

    def user(self, session_id: str | None) -> str | None:
        """Return the user of a live session, or None."""
        if not session_id:
            return None
        row = self.conn.execute(
            "SELECT username FROM login_sessions WHERE session_hash = ? AND ended_at IS NULL AND expires_at > ?",
            (_hash(session_id), int(time.time())),
        ).fetchone()
        return None if row is None else str(row["username"])

    def end(self, session_id: str | None) -> None:
        """End a session (logout)."""
        if session_id:
            self.end_hash(_hash(session_id))

    def end_hash(self, session_hash: str) -> None:
        """End a session known by its hash (as refresh tokens record it)."""
        self.conn.execute(
            "UPDATE login_sessions SET ended_at = ? WHERE session_hash = ? AND ended_at IS NULL",
            (int(time.time()), session_hash),
        )

    @staticmethod
    def hash_of(session_id: str) -> str:
        """Return the stored form of a session id."""
        return _hash(session_id)
