"""The issuer's database: the schema as SQLAlchemy Core tables, one transaction helper, migrations.

SQLAlchemy Core (not the ORM) because the stores are a handful of small, explicit statements,
and Core gives one dialect-neutral way to write them for the embedded SQLite default and for
PostgreSQL, with Alembic migrations on the same table definitions.

Each table has one owner, the store named beside it; only the owner writes it. Stores join
whatever transaction is open in the current thread, so a caller can make several owners'
changes atomic:

    with database.transaction():
        redeemed = codes.redeem(...)          # authorization_codes
        token = refresh_tokens.issue(...)     # refresh_tokens, in the same commit
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    false,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.sql.expression import BindParameter, ColumnElement, Select

# Any fixed number: processes migrating one PostgreSQL database take turns on it.
MIGRATION_LOCK = 0x6A77_7473  # 'jwts'

metadata = MetaData(naming_convention={"ix": "ix_%(column_0_label)s", "uq": "%(table_name)s_%(column_0_name)s_key"})
KEY_STATES = ("next", "active", "retiring", "retired")

# Owner: issuer.users.UserStore. `id` is stable: a new user with a deleted user's name is
# someone else, and nothing of the old user's (sessions, refresh tokens) carries over.
users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", Integer, nullable=False),
    # OpenID Connect Core 1.0 section 5.1 claims; `updated_at` is NULL only for rows older than 0005.
    Column("name", Text),
    Column("email", Text),
    Column("email_verified", Boolean, server_default=false(), nullable=False),
    Column("updated_at", Integer),
)

# Owner: issuer.sessions.LoginSessions. Deleting a user ends their sessions (cascade). `sid` is
# the session's OpenID Connect id (issuer.sessions.public_id), kept to find the session an
# end-session request's ID token names; NULL only for rows older than 0006 (it fills them).
login_sessions = Table(
    "login_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),  # pruning (issuer.prune)
    Column("ended_at", Integer),
    Column("sid", String(32), index=True, unique=True),
    Column("amr", String(64), nullable=False, server_default="pwd"),  # what the login proved (issuer.assurance)
)

# Owner: issuer.tokens.RefreshTokens. Deleting a user removes their tokens (cascade).
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family_id", String(32), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("client_id", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("issued_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False),
    Column("family_expires_at", Integer, nullable=False, index=True),  # pruning
    Column("used_at", Integer),
    Column("revoked_at", Integer),
    Column("session_hash", String(64), index=True),
    Column("audience", Text),
    Index("refresh_tokens_family", "family_id"),
    # RFC 9449 section 5: the thumbprint of the DPoP key a public client's tokens are bound to.
    Column("dpop_jkt", String(64)),
    # The login the family began with (issuer.assurance): what it proved and when, for every refresh.
    Column("amr", String(64)),
    Column("auth_time", Integer),
)

# Owner: issuer.codes.AuthorizationCodes.
authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(64), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("scope", Text, nullable=False),
    Column("session_hash", String(64)),
    Column("expires_at", Integer, nullable=False, index=True),  # pruning
    Column("used_at", Integer),
    Column("family_id", String(32)),
    Column("audience", Text),
    Column("nonce", Text),  # OpenID Connect: echoed in the ID token
    Column("dpop_jkt", String(64)),  # RFC 9449 section 10: the key the exchange must prove
)

# Owner: issuer.keys.KeyStore. The private half is encrypted (AES-256-GCM) under the
# key-encryption key and erased when the key is retired.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("state", String(16), CheckConstraint(f"state IN {KEY_STATES}", name="signing_keys_state"), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("private_key", LargeBinary),
    Column("created_at", Integer, nullable=False),
    Column("activated_at", Integer),
    Column("retiring_at", Integer),
    Column("retired_at", Integer),
)


# Owner: issuer.clients.ClientStore. Space-separated lists; NULL `scope` or `audiences` means
# no limit of the client's own (the built-in clients). A secret is stored as its SHA-256 (it is
# long and random), a registered JWKS as its JSON text.
clients = Table(
    "clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("grant_types", Text, nullable=False),
    Column("auth_method", String(32), nullable=False),
    Column("redirect_uris", Text, nullable=False),
    Column("scope", Text),
    Column("audiences", Text),
    Column("secret_hash", String(64)),
    Column("jwks", Text),
    Column("jwks_uri", Text),
    Column("created_at", Integer, nullable=False),
    Column("require_dpop", Boolean, server_default=false(), nullable=False),  # RFC 9449 section 5.2
    Column("require_dpop_nonce", Boolean, server_default=false(), nullable=False),  # RFC 9449 section 8
    # The version of the fields above (`new_revision`): a grant's write checks it used the current one (issuer.statuslist).
    Column("revision", BigInteger, server_default=text("0"), nullable=False),
)

# Owner: issuer.clients.ClientStore. Where a client may send the browser after an RP-initiated
# logout (OpenID Connect RP-Initiated Logout 1.0 section 3), each compared exactly.
client_post_logout_redirect_uris = Table(
    "client_post_logout_redirect_uris",
    metadata,
    Column("client_id", String(64), ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True),
    Column("uri", String(2048), primary_key=True),
)

# Owner: issuer.clients.ClientAssertions. Each private_key_jwt assertion's `jti` is accepted
# once (RFC 7523 section 3): remembered, as a hash, until the assertion expires.
client_assertions = Table(
    "client_assertions",
    metadata,
    Column("jti_hash", String(64), primary_key=True),
    Column("expires_at", Integer, nullable=False, index=True),
)

# Owner: issuer.dpop.DPoPProofs. Each DPoP proof accepted at the token endpoint, by a hash of
# its `jti` and `htu`, remembered until it would be refused as stale anyway (RFC 9449 section 11.1).
dpop_proofs = Table(
    "dpop_proofs",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("expires_at", Integer, nullable=False, index=True),
)


# Owner: issuer.apis.ApiStore. The APIs (resource servers) tokens may be asked for (RFC 8707).
apis = Table(
    "apis",
    metadata,
    Column("audience", String(255), primary_key=True),
    Column("scope", Text, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("require_dpop", Boolean, server_default=false(), nullable=False),  # DPoP-bound tokens only (RFC 9449)
    Column("revision", BigInteger, server_default=text("0"), nullable=False),  # as clients.revision
)

# Owner: issuer.apis.ApiStore. Other names of an API that a client may give as `resource`, such
# as the URL its RFC 9728 metadata names; the key makes each name one API's.
api_resource_uris = Table(
    "api_resource_uris",
    metadata,
    Column("uri", String(2048), primary_key=True),
    Column("audience", String(255), ForeignKey("apis.audience", ondelete="CASCADE"), nullable=False, index=True),
)

# Owner: issuer.statuslist.StatusLists. Token Status Lists (draft-ietf-oauth-status-list-21): one
# bit per index, 1 for invalid, least significant bit first. Indexes are handed out (`allocated`)
# until the list is full or `open_until`; the list goes once every token referring to it has
# expired (`expires_at`). `revision` counts the changes of `bits`: a signed copy of an older
# revision is stale.
status_lists = Table(
    "status_lists",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", Integer, nullable=False),
    Column("open_until", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),  # pruning
    Column("capacity", Integer, nullable=False),
    Column("allocated", Integer, nullable=False),
    Column("bits", LargeBinary, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("changed_at", Integer, nullable=False),
)

# Owner: issuer.statuslist.StatusLists. Which index of which list a grant's access tokens carry:
# one per refresh family (`grant_id` is its `family_id`), one per client-credentials token.
# `audience` and `scope` are the most the grant's tokens hold, to find what narrowing a client ends.
status_grants = Table(
    "status_grants",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("list_id", String(32), ForeignKey("status_lists.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("client_id", String(64), nullable=False, index=True),
    Column("user_id", String(32), index=True),
    Column("audience", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),  # pruning
    Index("status_grants_slot", "list_id", "idx", unique=True),
    # A family moved off its closed list: its slot before, set with the current one until its tokens expire.
    Column("previous_list_id", String(32)),
    Column("previous_idx", Integer),
    Column("previous_expires_at", Integer),
    Index("status_grants_previous_slot", "previous_list_id", "previous_idx"),
)

# Owner: issuer.device.DeviceCodes. Device authorization requests (RFC 8628): the device code
# and the user code are kept only as hashes. `scope` is what the client asked for (narrowed to
# the client and the API) until a user approves, then what the user granted. Deleting a user
# removes the requests they approved (cascade).
device_codes = Table(
    "device_codes",
    metadata,
    Column("device_code_hash", String(64), primary_key=True),
    Column("user_code_hash", String(64), nullable=False, unique=True),
    Column("client_id", String(64), nullable=False),
    Column("scope", Text),
    Column("audience", Text, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),  # pruning
    Column("poll_interval", Integer, nullable=False),
    Column("polled_at", Integer),
    Column("status", String(16), nullable=False),  # pending, approved, denied
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE")),
    Column("session_hash", String(64)),
    Column("decided_at", Integer),
    Column("used_at", Integer),
)


# Owner: issuer.credentials.Passkeys. WebAuthn credentials (passkeys, W3C WebAuthn Level 3
# section 7.1 step 27): the credential id as the browser sends it (base64url), the COSE public
# key, the signature counter (unsigned 32 bits, hence BIGINT), the transports the browser
# reported, the backup-eligible and backed-up flags. `id` is the issuer's own handle, the one
# forms name. Deleting a user removes their passkeys (cascade).
passkeys = Table(
    "passkeys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("credential_id", String(1400), nullable=False, unique=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("transports", Text, nullable=False),
    Column("backup_eligible", Boolean, nullable=False),
    Column("backup_state", Boolean, nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("last_used_at", Integer),
)

# Owner: issuer.credentials.Passkeys. The challenges of WebAuthn ceremonies in progress, by their
# SHA-256: each is deleted by the response that uses it (single use) and useless after
# `expires_at`; the browser's session cookie holds the challenge itself (bound to the browser).
passkey_challenges = Table(
    "passkey_challenges",
    metadata,
    Column("challenge_hash", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),  # register or login
    Column("expires_at", Integer, nullable=False, index=True),  # pruning
)

# Owner: issuer.totp.TotpFactors. A user's TOTP seed (RFC 6238), sealed under the key-encryption
# key with the user's id as associated data; `confirmed_at` is NULL while enrollment waits for
# the first code; `last_step` is the time step of the last code accepted (each is accepted once).
totp_factors = Table(
    "totp_factors",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("sealed_seed", LargeBinary, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("confirmed_at", Integer),
    Column("last_step", Integer),
)

# Owner: issuer.totp.TotpFactors. Recovery codes as their SHA-256 (80 random bits each), each used once.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Integer, nullable=False),
    Column("used_at", Integer),
)


class Unit:
    """A unit of work's state (`Database.unit`): its transaction, what to keep or redo, its commits."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.joined: contextvars.Token[Connection | None] | None = None
        self.kept = False
        self.redo: list[Callable[[Connection], object]] = []
        self.commits = 0  # transactions committed while the unit was open (1 for a grant)


class Database:
    """An engine on the issuer's database and the transaction helper every store uses."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        if self.url.drivername == "postgresql":
            self.url = self.url.set(drivername="postgresql+psycopg")  # psycopg 3, not SQLAlchemy's default
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite and self.url.database not in {None, "", ":memory:"}:
            _private_sqlite_files(Path(str(self.url.database)))
        self.engine = _engine(self.url, self.is_sqlite)
        # The writer begins SQLite transactions IMMEDIATE: the write lock is taken at BEGIN, so
        # two writers queue on busy_timeout instead of one failing when it upgrades its lock.
        self._writer = self.engine.execution_options(sqlite_immediate=True)
        self._current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
            f"issuer-db-{id(self)}", default=None
        )
        self._unit: contextvars.ContextVar[Unit | None] = contextvars.ContextVar(
            f"issuer-db-unit-{id(self)}", default=None
        )
        event.listen(self.engine, "commit", self._counted)

    @classmethod
    def for_data_dir(cls, url: str, data_dir: Path) -> Database:
        """Open the database at `url`, or the embedded SQLite file in `data_dir` when `url` is empty."""
        if url:
            return cls(url)
        private_dir(data_dir)
        for path in data_dir.iterdir():  # what older releases left looser than they should have
            if path.is_file():
                private_file(path)
        return cls(f"sqlite:///{data_dir / 'issuer.sqlite3'}")

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """Run the block in one write transaction, or join the one this thread has open."""
        return self._joined(self._writer.begin, share=True)

    def own_transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """Run the block in a write transaction of its own, never the thread's open one: committed at its end.

        What it writes stands whatever the thread's unit does next. Not for SQLite inside a
        unit that has written: the one write lock is the unit's, and this would wait for it.
        """
        if self.is_sqlite and self._current.get() is not None:
            raise RuntimeError("a transaction of its own would wait for this thread's own SQLite write lock")
        return self._writer.begin()

    def reading(self) -> contextlib.AbstractContextManager[Connection]:
        """Read in the thread's open transaction, or on a connection of its own (no write lock)."""
        return self._joined(self.engine.connect, share=False)

    @contextlib.contextmanager
    def unit(self) -> Iterator[Unit]:
        """Make the block's writes one transaction: begun at its first write, committed at its end.

        A token request is one unit: whatever it spends, writes and allocates commits once.
        Reads before the first write use connections of their own and take no write lock (a
        password grant's argon2 check runs before its transaction begins); reads after it join
        it. A failure rolls the unit back, unless a store asked to `keep` what it wrote (a
        revocation after reuse, a code spent by a wrong verifier: the error reports it, the
        writes stand); what a store asked to `redo` (a `jti` spent) is then written again in a
        transaction of its own. Inside another unit or transaction, the block joins it.
        """
        joined = self._unit.get()
        if joined is not None or self._current.get() is not None:
            yield joined or Unit()
            return
        unit = Unit()
        token = self._unit.set(unit)
        failure: Exception | None = None
        try:
            with unit.stack:
                try:
                    yield unit
                except Exception as exc:
                    if not unit.kept:
                        raise
                    failure = exc  # committed as the stack closes, then raised
        except Exception:
            self._end(unit, token)
            if unit.redo:
                with self.transaction() as conn:
                    for work in unit.redo:
                        work(conn)
            raise
        self._end(unit, token)
        if failure is not None:
            raise failure

    def _end(self, unit: Unit, token: contextvars.Token[Unit | None]) -> None:
        if unit.joined is not None:
            self._current.reset(unit.joined)
            unit.joined = None
        self._unit.reset(token)

    def keep(self) -> None:
        """Commit the open unit's writes even though the request then fails (see `unit`)."""
        unit = self._unit.get()
        if unit is not None:
            unit.kept = True

    def redo_on_rollback(self, work: Callable[[Connection], object]) -> None:
        """Do `work` again in a transaction of its own should the open unit roll back (see `unit`)."""
        unit = self._unit.get()
        if unit is not None:
            unit.redo.append(work)

    def _counted(self, _conn: Connection) -> None:
        unit = self._unit.get()
        if unit is not None:
            unit.commits += 1

    @contextlib.contextmanager
    def _joined(
        self, open_connection: Callable[[], contextlib.AbstractContextManager[Connection]], *, share: bool
    ) -> Iterator[Connection]:
        """Yield the thread's open transaction, or a new connection (shared with nested blocks if `share`)."""
        outer = self._current.get()
        if outer is not None:
            yield outer
            return
        unit = self._unit.get()
        if share and unit is not None:  # the unit's first write: its transaction lasts until the unit ends
            conn = unit.stack.enter_context(open_connection())
            unit.joined = self._current.set(conn)
            yield conn
            return
        with open_connection() as conn:
            token = self._current.set(conn) if share else None
            try:
                yield conn
            finally:
                if token is not None:
                    self._current.reset(token)

    def dispose(self) -> None:
        """Close every pooled connection (after a fork, or at the end of a CLI command)."""
        self.engine.dispose()

    def upgrade(self) -> None:
        """Bring the schema to the current version, one process at a time (see `issuer.migrations`)."""
        from issuer.migrations import upgrade

        with self._migration_lock():
            upgrade(self)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Let processes starting together take turns migrating: an advisory lock, or a file lock beside SQLite."""
        if not self.is_sqlite:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            return
        database = self.url.database
        if not database or database == ":memory:":
            yield
            return
        path = Path(database)
        lock = private_file(path.parent / ".migrate.lock", own_dir=False)
        with lock.open("r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            # Switching a new database to WAL needs it to itself, and SQLite answers "database is
            # locked" there without waiting: hence under the lock, outside any transaction.
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    cursor.execute("PRAGMA journal_mode = WAL")
                cursor.close()
            finally:
                raw.close()
            yield

    def tables(self) -> set[str]:
        """Return the names of the tables the database has."""
        return set(inspect(self.engine).get_table_names())


def _engine(url: URL, is_sqlite: bool) -> Engine:
    if not is_sqlite:
        # A database host that stops answering costs a request (or a readiness check) seconds,
        # not the operating system's TCP timeouts (minutes): 3 s to connect, and an open
        # connection given up after 10 s without an acknowledgement or 5 s of silent keepalives.
        # The same libpq parameters in the URL win.
        defaults = {
            "connect_timeout": 3,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 1,
            "keepalives_count": 5,
            "tcp_user_timeout": 10_000,
        }
        connect_args = {name: value for name, value in defaults.items() if name not in url.query}
        engine = create_engine(url, connect_args=connect_args)
        _ping_idle_connections(engine)
        return engine
    engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, so that writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# A pooled connection unused this long is checked (SELECT 1) before it is handed out again.
PING_IDLE_AFTER = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled PostgreSQL connection before use only when it sat idle (a restarted server closed it).

    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip, and a transaction
    PostgreSQL counts as a commit, on every request. A connection returned a moment ago by a
    busy worker is almost surely alive; one idle for a second is checked, and a dead one is
    replaced (`DisconnectionError` makes the pool open a new connection) before the request uses it.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", 0.0) < PING_IDLE_AFTER:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()  # ends the ping's transaction: counted a rollback, not a commit
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(str(exc)) from exc


def private_dir(path: Path) -> Path:
    """Create a directory only its owner may enter (0700), tightening an existing one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_file(path: Path, *, own_dir: bool = True) -> Path:
    """Create an empty file only its owner may read (0600) unless it exists; tighten it if it does.

    With `own_dir`, its directory is ours too and made private (0700); without, a directory the
    operator chose (for an explicit SQLite URL) is left as it is.
    """
    if own_dir:
        private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def _private_sqlite_files(path: Path) -> None:
    """Make the database file and its journal files private (created 0600, tightened if looser)."""
    private_file(path, own_dir=False)
    for journal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if journal.exists():
            private_file(journal, own_dir=False)


def stamp(conn: Connection, column: Column[int], *where: ColumnElement[bool], now: int) -> int:
    """Set a timestamp column (`used_at`, `ended_at`, `revoked_at`) where it is unset; return the rows stamped."""
    table = column.table
    return conn.execute(update(table).where(*where, column.is_(None)).values({column.name: now})).rowcount


def with_username(table: Table, key: Column[str], value: str | BindParameter[str]) -> Select[Any]:
    """Select the row of `table` whose `key` is `value`, with its user's name and scopes, both locked for update.

    The user's scopes come as `user_scope`: the grant narrows to them without reading the user
    again. The user's row is named first, and PostgreSQL locks a statement's rows in the order
    of its FROM list: the user, then their token or code, as a user's deletion takes them (the
    user, then the cascade to their rows). The other order deadlocked a refresh with `users delete`.
    """
    return (
        select(table, users.c.username, users.c.scope.label("user_scope"))
        .select_from(users)
        .join(table, users.c.id == table.c.user_id)
        .where(key == value)
        .with_for_update()
    )


def insert_new(database: Database, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row in its own transaction; return False, changing nothing, when its key is taken."""
    try:
        with database.transaction() as conn:
            conn.execute(table.insert().values(values))
    except IntegrityError:
        return False
    return True


def insert_missing(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless its key is taken; return whether it was inserted.

    A concurrent insert of the same key is waited for, then skipped, never an IntegrityError.
    """
    key = (table, conn.dialect.name)
    statement = _INSERT_MISSING.get(key)
    if statement is None:  # built once per table and dialect, its values bound at execution (see `find`)
        dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
        # RETURNING, not rowcount: psycopg reports no rowcount for this statement.
        statement = dialect_insert(table).on_conflict_do_nothing().returning(*table.primary_key)
        statement = _INSERT_MISSING.setdefault(key, statement)
    return conn.execute(statement, values).first() is not None


_INSERT_MISSING: dict[tuple[Table, str], Any] = {}


def delete_where(database: Database, column: Column[str], value: str) -> bool:
    """Delete the rows whose `column` is `value`; return whether there were any."""
    with database.transaction() as conn:
        return conn.execute(column.table.delete().where(column == value)).rowcount > 0


def delete_in_batches(database: Database, key: Column[str], *where: ColumnElement[bool], batch: int) -> int:
    """Delete the rows of `key`'s table that match `where`, `batch` rows per transaction; return how many.

    Short transactions: a large backlog never holds the write lock long. Replicas doing the
    same at once each delete what the other has not; every row goes once.
    """
    chosen = select(key).where(*where).limit(batch)
    total = 0
    while True:
        with database.transaction() as conn:
            deleted: int = conn.execute(delete(key.table).where(key.in_(chosen))).rowcount
        total += deleted
        if deleted < batch:
            return total


# One statement per key column, built at its first use and then reused (see `find`).
_FIND: dict[Column[str], Select[Any]] = {}


def new_revision() -> int:
    """Return the revision of a registration just added or changed: random, so never one it had before (62 bits)."""
    return secrets.randbits(62)


def find(database: Database, column: Column[str], value: str) -> Row[Any] | None:
    """Return the row whose `column` (a key) is `value`, or None.

    The statement is built once per column, its value a bound parameter: SQLAlchemy keeps a
    statement object's cache key, so a statement built once finds its compiled form in the
    compiled cache without being built and walked again at every request (docs/performance.md).
    """
    statement = _FIND.get(column)
    if statement is None:
        statement = _FIND.setdefault(column, select(column.table).where(column == bindparam("value")))
    with database.reading() as conn:
        return conn.execute(statement, {"value": value}).first()


def every(database: Database, order_by: Column[str]) -> list[Row[Any]]:
    """Return every row of `order_by`'s table, in that column's order."""
    with database.reading() as conn:
        return list(conn.execute(select(order_by.table).order_by(order_by)))
