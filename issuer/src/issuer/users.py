"""Users: names, argon2id password hashes and the scopes each may be granted."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from issuer.db import Database, clients, every, find, status_grants, users
from issuer.narrowing import end_unpermitted_of_user
from issuer.statuslist import revoke_grants
from shared import audit

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A user's stable id, their `sub` (OpenID Connect Core 1.0 section 2, RFC 9068 section 2.2): a random
# UUID4 as 32 lower-case hex digits, made at creation and never reassigned: 122 random bits make
# a second user with the same id impossible in practice, even long after the first is deleted.
# No client id may take this form (issuer.clients), so a service's `sub` is never a user's.
USER_ID = re.compile(r"[0-9a-f]{32}")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,64}")
# A deliberately plain check: one @, no spaces; whether the address works is the operator's to know.
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
MAX_NAME_LENGTH = 200
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
    id: str
    name: str | None = None
    email: str | None = None
    email_verified: bool = False
    updated_at: int | None = None

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


def check_name(name: str) -> str:
    """Return a display name if usable: 1-200 printable characters."""
    if not name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise UserError(f"name must be 1-{MAX_NAME_LENGTH} printable characters")
    return name


def check_email(email: str) -> str:
    """Return an e-mail address if it looks like one (a local part, '@' and a domain)."""
    if not EMAIL.fullmatch(email):
        raise UserError("email must look like name@example.com")
    return email


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
    """Users in the issuer's database (owner of `users`), with constant-work authentication."""

    def __init__(self, database: Database, hasher: PasswordHasher) -> None:
        self.database = database
        self.hasher = hasher

    def add(
        self,
        username: str,
        password: str,
        scope: str,
        *,
        enforce_policy: bool = True,
        name: str | None = None,
        email: str | None = None,
        email_verified: bool = False,
    ) -> User:
        """Create a user; the password is hashed with argon2id before it is stored."""
        check_username(username)
        scopes = parse_scope(scope)
        if name is not None:
            check_name(name)
        if email is not None:
            check_email(email)
        if enforce_policy:
            check_password(password, username)
        now = int(time.time())
        user = User(username, scopes, now, uuid.uuid4().hex, name, email, email_verified and email is not None, now)
        password_hash = self.hasher.hash(password)  # before the transaction: it takes a while
        try:
            with self.database.transaction() as conn:
                if conn.execute(select(clients.c.client_id).where(clients.c.client_id == username)).first():
                    # One name, one kind of party: a person named like a service would read as it.
                    raise UserError(
                        f"a client is registered as {username!r}: a user may not have a client's id as a name"
                    )
                conn.execute(
                    insert(users).values(
                        id=user.id,
                        username=username,
                        password_hash=password_hash,
                        scope=user.scope,
                        created_at=user.created_at,
                        name=user.name,
                        email=user.email,
                        email_verified=user.email_verified,
                        updated_at=user.updated_at,
                    )
                )
        except IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        audit.emit("user.created", subject=user.username, subject_id=user.id)
        return user

    def update(
        self,
        username: str,
        *,
        name: str | None = None,
        email: str | None = None,
        email_verified: bool | None = None,
        scope: str | None = None,
    ) -> User:
        """Change what is given of a user's name, address and scopes; `updated_at` becomes now.

        A new address is unverified unless `email_verified` says otherwise. Narrower scopes end
        the access tokens of the user's grants that hold more, in the same transaction
        (issuer.narrowing); their refresh tokens give the narrower scopes from then on.
        """
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = check_name(name)
        if email is not None:
            values["email"] = check_email(email)
            values["email_verified"] = bool(email_verified)
        elif email_verified is not None:
            values["email_verified"] = email_verified
        if scope is not None:
            values["scope"] = " ".join(sorted(parse_scope(scope)))
        if not values:
            raise UserError("nothing to change: give --name, --email or --scope")
        values["updated_at"] = int(time.time())
        with self.database.transaction() as conn:
            changed = conn.execute(update(users).where(users.c.username == username).values(values)).rowcount
            if changed and scope is not None:  # what it no longer permits ends now, not when it expires
                user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar_one()
                end_unpermitted_of_user(conn, user_id, parse_scope(scope))
        user = self.get(username) if changed else None
        if user is None:
            raise UserError(f"no user named {username!r}")
        audit.emit(
            "user.changed", subject=user.username, subject_id=user.id, changes=sorted(set(values) - {"updated_at"})
        )
        return user

    def get(self, username: str) -> User | None:
        """Return the user named `username`, or None."""
        row = self._row(username)
        return None if row is None else _user(row)

    def _row(self, username: str) -> Row[Any] | None:
        """Return the row of a user; a name no user could have (NUL, too long, any case) is nobody's."""
        if not USERNAME.fullmatch(username):
            return None  # never sent to the database: PostgreSQL refuses NUL in text outright
        return find(self.database, users.c.username, username)

    def known(self, username: str) -> str | None:
        """Return `username` if it names a user, else None (what the audit trail may repeat of a typed name)."""
        return username if self._row(username) is not None else None

    def locked(self, conn: Connection, user_id: str) -> User | None:
        """Return the user as the open transaction sees it, their row locked until it ends (None once deleted).

        A grant reads its user again here: a `users update --scope` or `users delete` racing the
        login then either committed first (and is seen) or waits for the grant to commit and then
        ends it (issuer.narrowing), never a token of scopes the user had lost.
        """
        row = conn.execute(select(users).where(users.c.id == user_id).with_for_update()).first()
        return None if row is None else _user(row)

    def get_by_id(self, user_id: str) -> User | None:
        """Return the user with this stable id (their `sub`), or None."""
        if not USER_ID.fullmatch(user_id):
            return None  # a client's `sub`, or nothing an id could be: never sent to the database
        row = find(self.database, users.c.id, user_id)
        return None if row is None else _user(row)

    def list(self) -> list[User]:
        """Return all users by name."""
        return [_user(row) for row in every(self.database, users.c.username)]

    def delete(self, username: str) -> bool:
        """Delete a user; their login sessions, refresh tokens and codes go with them (cascade)."""
        with self.database.transaction() as conn:
            row = conn.execute(delete(users).where(users.c.username == username).returning(users.c.id)).first()
            if row is not None:
                # Their access tokens end too (the grants keep the user's id: the cascade leaves them).
                # After the delete: its refresh tokens are locked before the lists, as every revocation does.
                revoke_grants(conn, status_grants.c.user_id == row.id)
        if row is not None:
            audit.emit("user.deleted", subject=username, subject_id=row.id)
        return row is not None

    def authenticate(self, username: str, password: str) -> User | None:
        """Return the user if the password is right, else None, doing the same work either way.

        An unknown name is checked against a dummy hash so that timing does not reveal which
        names exist. A hash made with older parameters is upgraded on success.
        """
        row = self._row(username)
        stored = row.password_hash if row is not None else self._dummy_hash()
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            rehashed = self.hasher.hash(password)
            with self.database.transaction() as conn:
                conn.execute(update(users).where(users.c.id == row.id).values(password_hash=rehashed))
        return _user(row)

    _dummy: str | None = None

    def _dummy_hash(self) -> str:
        if UserStore._dummy is None or self.hasher.check_needs_rehash(UserStore._dummy):
            UserStore._dummy = self.hasher.hash("not a password of anyone")
        return UserStore._dummy


def _user(row: Row[Any]) -> User:
    return User(
        row.username,
        parse_scope(row.scope),
        row.created_at,
        row.id,
        row.name,
        row.email,
        bool(row.email_verified),
        row.created_at if row.updated_at is None else row.updated_at,
    )


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
