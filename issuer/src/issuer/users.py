"""Users: names, argon2id password hashes and the scopes each may be granted."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,64}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


class UserError(ValueError):
    """A user cannot be created or changed; the message says why."""


@dataclass(frozen=True)
class User:
    """A user as the token endpoint sees it."""

    username: str
    scopes: frozenset[str]
    created_at: int

    @property
    def scope(self) -> str:
        """Return the scopes as an RFC 6749 space-separated string, sorted."""
        return " ".join(sorted(self.scopes))


def parse_scope(text: str) -> frozenset[str]:
    """Split a space-separated scope string, refusing characters RFC 6749 does not allow."""
    tokens = text.split(" ") if text else []
    if any(not SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise UserError("scope must be space-separated words of printable ASCII")
    return frozenset(tokens)


def check_username(username: str) -> str:
    """Return the username if well formed: lower-case letters, digits, '.', '_' and '-'."""
    if not USERNAME.fullmatch(username):
        raise UserError("username must be 1-64 of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
    return username


def check_password(password: str, username: str) -> str:
    """Return the password if it meets the minimum policy."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if password.lower() == username.lower():
        raise UserError("password must not be the username")
    return password


class UserStore:
    """Users in the issuer's database, with constant-work authentication."""

    def __init__(self, conn: sqlite3.Connection, hasher: PasswordHasher) -> None:
        self.conn = conn
        self.hasher = hasher

    def add(self, username: str, password: str, scope: str, *, enforce_policy: bool = True) -> User:
        """Create a user; the password is hashed with argon2id before it is stored."""
        check_username(username)
        scopes = parse_scope(scope)
        if enforce_policy:
            check_password(password, username)
        now = int(time.time())
        try:
            self.conn.execute(
                "INSERT INTO users (username, password_hash, scope, created_at) VALUES (?, ?, ?, ?)",
                (username, self.hasher.hash(password), " ".join(sorted(scopes)), now),
            )
        except sqlite3.IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        return User(username, scopes, now)

    def get(self, username: str) -> User | None:
        """Return the user, or None."""
        row = self.conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return None if row is None else _user(row)

    def list(self) -> list[User]:
        """Return all users by name."""
        return [_user(row) for row in self.conn.execute("SELECT * FROM users ORDER BY username")]

    def delete(self, username: str) -> bool:
        """Delete a user and revoke their refresh tokens; return whether the user existed."""
        self.conn.execute("BEGIN IMMEDIATE")
        deleted = self.conn.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount
        self.conn.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
            (int(time.time()), username),
        )
        self.conn.execute("COMMIT")
        return deleted > 0

    def authenticate(self, username: str, password: str) -> User | None:
        """Return the user if the password is right, else None, doing the same work either way.

        An unknown name is checked against a dummy hash so that timing does not reveal which
        names exist. A hash made with older parameters is upgraded on success.
        """
        row = (
            self.conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
            if len(username) <= 64
            else None
        )
        stored = row["password_hash"] if row is not None else self._dummy_hash()
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            self.conn.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?",
                (self.hasher.hash(password), username),
            )
        return _user(row)

    _dummy: str | None = None

    def _dummy_hash(self) -> str:
        if UserStore._dummy is None or self.hasher.check_needs_rehash(UserStore._dummy):
            UserStore._dummy = self.hasher.hash("not a password of anyone")
        return UserStore._dummy


def _user(row: sqlite3.Row) -> User:
    return User(row["username"], parse_scope(row["scope"]), row["created_at"])


def parse_demo_users(spec: str) -> list[tuple[str, str, str]]:
    """Parse `name:password:scope;...` (the ISSUER_DEMO_USERS format) into triples."""
    users = []
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep1, rest = entry.partition(":")
        password, sep2, scope = rest.partition(":")
        if not (sep1 and sep2 and name and password):
            raise UserError("ISSUER_DEMO_USERS entries must look like name:password:scope words")
        users.append((name, password, scope.strip()))
    return users
