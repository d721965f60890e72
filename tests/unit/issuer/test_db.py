"""Unit tests for issuer.db: schema migrations, the transaction helper and private files."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import insert, select, text
from sqlalchemy.exc import OperationalError

from issuer import migrations
from issuer.apis import Api, ApiStore
from issuer.clients import ClientStore
from issuer.db import Database, metadata, status_grants, users
from issuer.opaque import secret_hash
from issuer.sessions import LoginSessions, public_id
from issuer.settings import IssuerSettings
from issuer.statuslist import revoke_grants
from issuer.tokens import Login
from issuer.users import User, UserStore
from tests.support.sql import rows

# The schema of the release before migrations, as its `db.initialise` wrote it.
PREVIOUS_RELEASE_SCHEMA = """
CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, scope TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL, username TEXT NOT NULL,
    client_id TEXT NOT NULL, scope TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    used_at INTEGER, revoked_at INTEGER, session_hash TEXT);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE login_sessions (session_hash TEXT PRIMARY KEY, username TEXT NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, ended_at INTEGER);
CREATE TABLE authorization_codes (code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL, username TEXT NOT NULL, scope TEXT NOT NULL, session_hash TEXT,
    expires_at INTEGER NOT NULL, used_at INTEGER, family_id TEXT);
CREATE TABLE signing_keys (kid TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired')), public_jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL, activated_at INTEGER, retiring_at INTEGER, retired_at INTEGER);
"""


def _start_worker(data_dir: str, barrier: Any) -> str:
    """What each gunicorn worker does first: migrate the schema and make sure a key signs."""
    settings = IssuerSettings(data_dir=Path(data_dir), rsa_key_bits=2048)
    barrier.wait()  # all at the same moment, as gunicorn's freshly forked workers are
    try:
        database = settings.database()
        database.upgrade()
        settings.key_store(database, settings.load_kek()).start(settings.legacy_key_dir)
        database.dispose()
    except (sqlite3.Error, OperationalError) as exc:
        return f"failed: {exc}"
    return "started"


def test_workers_starting_together_on_a_new_data_directory_all_start(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(8) as pool:
        for attempt in range(5):
            data_dir = tmp_path / str(attempt)
            barrier = manager.Barrier(8)
            results = pool.starmap(_start_worker, [(str(data_dir), barrier)] * 8)
            assert results == ["started"] * 8, results
            database = Database.for_data_dir("", data_dir)
            assert rows(database, "SELECT COUNT(*) AS n FROM signing_keys WHERE state = 'active'") == [{"n": 1}]
            with database.reading() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            database.dispose()


# -- migrations ---------------------------------------------------------------------------


def _previous_release(data_dir: Path, schema: str = PREVIOUS_RELEASE_SCHEMA) -> None:
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "issuer.sqlite3")
    conn.executescript(schema)
    conn.executescript(
        """
        INSERT INTO users VALUES ('alice', 'hash-a', 'profile admin', 10);
        INSERT INTO users VALUES ('bob', 'hash-b', 'profile', 11);
        INSERT INTO login_sessions VALUES ('s-alice', 'alice', 10, 2000000000, NULL);
        INSERT INTO refresh_tokens VALUES ('t-alice', 'f1', 'alice', 'cli', 'profile', 10, 2000000000, NULL, NULL, 's-alice');
        INSERT INTO refresh_tokens VALUES ('t-gone', 'f2', 'carol', 'cli', 'profile', 10, 2000000000, NULL, NULL, NULL);
        """
    )
    conn.commit()
    conn.close()


def test_a_database_of_the_previous_release_upgrades_in_place(tmp_path: Path) -> None:
    _previous_release(tmp_path / "data")
    database = Database.for_data_dir("", tmp_path / "data")
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    people = {row["username"]: row for row in rows(database, "SELECT * FROM users")}
    assert set(people) == {"alice", "bob"}
    assert people["alice"]["password_hash"] == "hash-a"
    assert people["alice"]["id"] != people["bob"]["id"]
    (session,) = rows(database, "SELECT * FROM login_sessions")
    assert session["user_id"] == people["alice"]["id"]
    # The token of a user who no longer exists is dropped; the others keep their family and session.
    (token,) = rows(database, "SELECT * FROM refresh_tokens")
    assert (token["token_hash"], token["user_id"], token["session_hash"]) == (
        "t-alice",
        people["alice"]["id"],
        "s-alice",
    )
    assert token["family_expires_at"] == token["expires_at"]


def test_a_database_older_still_gets_its_missing_columns_first(tmp_path: Path) -> None:
    oldest = PREVIOUS_RELEASE_SCHEMA.replace(", session_hash TEXT);", ");").replace(", family_id TEXT);", ");")
    assert "session_hash TEXT)" not in oldest
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "issuer.sqlite3")
    conn.executescript(oldest)
    conn.close()
    database = Database.for_data_dir("", data_dir)
    database.upgrade()
    assert migrations.current(database) == migrations.head()


def test_upgrade_is_idempotent(database: Database) -> None:
    database.upgrade()
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    assert {"users", "login_sessions", "refresh_tokens", "authorization_codes", "signing_keys"} <= database.tables()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_at_0003_upgrades_keeping_its_apis_which_gain_resource_uris(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    database = Database.for_data_dir(url, tmp_path / "data")
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0003")
        conn.execute(text("INSERT INTO apis (audience, scope, created_at) VALUES ('orders-api', 'orders:read', 7)"))
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    store = ApiStore(database)
    assert store.get("orders-api") == Api("orders-api", frozenset({"orders:read"}))
    store.replace("orders-api", "orders:read", ["https://orders.example"])
    assert rows(database, "SELECT * FROM api_resource_uris") == [
        {"uri": "https://orders.example", "audience": "orders-api"}
    ]
    store.delete("orders-api")
    assert rows(database, "SELECT * FROM api_resource_uris") == []  # ON DELETE CASCADE
    database.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_at_0009_upgrades_keeping_its_apis_which_require_no_dpop_until_told(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    database = Database.for_data_dir(url, tmp_path / "data")
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0009")
        conn.execute(text("INSERT INTO apis (audience, scope, created_at) VALUES ('orders-api', 'orders:read', 7)"))
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    store = ApiStore(database)
    assert store.get("orders-api") == Api("orders-api", frozenset({"orders:read"}), require_dpop=False)
    store.replace("orders-api", "orders:read", require_dpop=True)
    stored = rows(database, "SELECT audience, require_dpop FROM apis")
    assert [(row["audience"], bool(row["require_dpop"])) for row in stored] == [("orders-api", True)]
    database.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_at_0011_upgrades_keeping_its_status_grants_which_have_no_previous_slot(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    database = Database.for_data_dir(url, tmp_path / "data")
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0011")
        conn.execute(
            text(
                "INSERT INTO status_lists (id, created_at, open_until, expires_at, capacity, allocated, bits,"
                " revision, changed_at) VALUES (:id, 1, 2, 2000000000, 8, 1, :bits, 0, 1)"
            ),
            {"id": "a" * 32, "bits": b"\x00"},
        )
        conn.execute(
            text(
                "INSERT INTO status_grants (grant_id, list_id, idx, client_id, audience, scope, expires_at)"
                " VALUES ('family-1', :id, 3, 'cli', 'api', 'profile', 2000000000)"
            ),
            {"id": "a" * 32},
        )
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    stored = rows(
        database, "SELECT grant_id, idx, previous_list_id, previous_idx, previous_expires_at FROM status_grants"
    )
    assert stored == [
        {"grant_id": "family-1", "idx": 3, "previous_list_id": None, "previous_idx": None, "previous_expires_at": None}
    ]
    (listed,) = rows(database, "SELECT expires_at FROM status_lists")  # closed: it lives as long as its tokens
    assert time.time() + 3600 - 5 <= listed["expires_at"] <= time.time() + 3600
    with database.transaction() as conn:
        assert revoke_grants(conn, status_grants.c.grant_id == "family-1") == 1
    assert bytes(rows(database, "SELECT bits FROM status_lists")[0]["bits"]) == bytes([0b1000])
    database.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_at_0004_upgrades_keeping_its_users_who_gain_empty_profiles(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, hasher: PasswordHasher
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    database = Database.for_data_dir(url, tmp_path / "data")
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0004")
        conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, scope, created_at)"
                " VALUES ('u1', 'carol', :hash, 'profile', 7)"
            ),
            {"hash": hasher.hash("correct horse")},
        )
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    store = UserStore(database, hasher)
    carol = store.authenticate("carol", "correct horse")
    assert carol == User("carol", frozenset({"profile"}), 7, "u1", None, None, False, 7)
    changed = store.update("carol", name="Carol", email="carol@example.com", email_verified=True)
    assert (changed.name, changed.email, changed.email_verified) == ("Carol", "carol@example.com", True)
    assert changed.updated_at is not None
    assert changed.updated_at > 7
    database.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_at_0005_upgrades_its_sessions_to_be_found_by_sid(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    database = Database.for_data_dir(url, tmp_path / "data")
    session_id = "an-old-session-id"
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0005")
        conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, scope, created_at) VALUES ('u1', 'carol', '-', '', 7)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO login_sessions (session_hash, user_id, created_at, expires_at)"
                " VALUES (:hash, 'u1', 7, 2000000000)"
            ),
            {"hash": secret_hash(session_id)},
        )
        conn.execute(
            text(
                "INSERT INTO clients (client_id, grant_types, auth_method, redirect_uris, created_at)"
                " VALUES ('shop', 'authorization_code', 'none', 'https://shop.example/cb', 7)"
            )
        )
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    sessions = LoginSessions(database, 3600)
    old_hash = secret_hash(session_id)
    assert sessions.hash_of(public_id(old_hash)) == old_hash  # the session an ID token named before
    assert sessions.user_id(session_id) == "u1"
    assert sessions.hash_of(public_id(secret_hash(sessions.create("u1")))) is not None
    clients = ClientStore(database)
    shop = clients.get("shop")
    assert shop is not None
    assert shop.post_logout_redirect_uris == ()
    clients.replace(dataclasses.replace(shop, post_logout_redirect_uris=("https://shop.example/bye",)))
    assert rows(database, "SELECT * FROM client_post_logout_redirect_uris") == [
        {"client_id": "shop", "uri": "https://shop.example/bye"}
    ]
    clients.delete("shop")
    assert rows(database, "SELECT * FROM client_post_logout_redirect_uris") == []  # ON DELETE CASCADE
    database.dispose()


# -- the transaction helper ----------------------------------------------------------------


def _add_user(database: Database, name: str) -> None:
    with database.transaction() as conn:
        conn.execute(insert(users).values(id=name, username=name, password_hash="-", scope="", created_at=0))


def _names(database: Database) -> list[str]:
    with database.reading() as conn:
        return list(conn.execute(select(users.c.username).order_by(users.c.username)).scalars())


def test_a_transaction_commits_what_it_did(database: Database) -> None:
    _add_user(database, "alice")
    assert _names(database) == ["alice"]


def test_a_failing_transaction_rolls_back_everything_in_it(database: Database) -> None:
    def both_then_fail() -> None:
        with database.transaction():
            _add_user(database, "alice")
            _add_user(database, "bob")
            raise RuntimeError("something went wrong after both writes")

    with pytest.raises(RuntimeError):
        both_then_fail()
    assert _names(database) == []


def test_stores_join_the_transaction_the_thread_has_open(database: Database) -> None:
    with database.transaction() as outer:
        _add_user(database, "alice")
        with database.reading() as inner:
            assert inner is outer
        # Another thread does not see the uncommitted row.
        seen: list[list[str]] = []
        thread = threading.Thread(target=lambda: seen.append(_names(database)))
        thread.start()
        thread.join()
        assert seen == [[]]
    assert _names(database) == ["alice"]


def test_concurrent_read_then_write_transactions_queue_instead_of_failing(database: Database) -> None:
    """Read, then write what was read: the stores' pattern (a row locked for update) serializes writers.

    SQLite would fail at once upgrading a read lock to a write lock; its transactions begin
    IMMEDIATE and queue. PostgreSQL would lose updates; `FOR UPDATE` makes the second wait.
    """
    _add_user(database, "counter")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def bump() -> None:
        barrier.wait()
        try:
            with database.transaction() as conn:
                counter = users.c.id == "counter"
                value = conn.execute(select(users.c.created_at).where(counter).with_for_update()).scalar_one()
                conn.execute(users.update().where(counter).values(created_at=value + 1))
        except OperationalError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rows(database, "SELECT created_at FROM users WHERE id = 'counter'") == [{"created_at": 8}]


# -- private files (defect: the data directory was 0755 and the database 0644) ---------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_directory_and_database_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "issuer"
    database = Database.for_data_dir("", data_dir)
    database.upgrade()
    _add_user(database, "alice")
    assert _mode(data_dir) == 0o700
    files = [path for path in data_dir.iterdir() if path.is_file()]
    assert {path.name for path in files} >= {"issuer.sqlite3", "issuer.sqlite3-wal", "issuer.sqlite3-shm"}
    assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_an_existing_open_data_directory_is_tightened(tmp_path: Path) -> None:
    _previous_release(tmp_path / "data")
    (tmp_path / "data").chmod(0o755)
    (tmp_path / "data" / "issuer.sqlite3").chmod(0o644)
    Database.for_data_dir("", tmp_path / "data").upgrade()
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "issuer.sqlite3") == 0o600


def test_the_migrations_build_exactly_the_schema_the_code_declares(database: Database) -> None:
    with database.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def _migrate(url: str, barrier: Any) -> str:
    database = Database(url)
    barrier.wait()
    try:
        database.upgrade()
    except OperationalError as exc:
        return f"failed: {exc}"
    finally:
        database.dispose()
    return "migrated"


def test_processes_migrating_one_new_postgresql_database_take_turns(postgres_url: str) -> None:
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4)
        assert pool.starmap(_migrate, [(postgres_url, barrier)] * 4) == ["migrated"] * 4
    database = Database(postgres_url)
    assert migrations.current(database) == migrations.head()
    database.dispose()


def test_an_explicit_sqlite_url_keeps_the_operators_directory_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    database = Database(f"sqlite:///{shared / 'issuer.db'}")
    database.upgrade()
    database.dispose()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert _mode(shared / "issuer.db") == 0o600


def test_files_an_older_release_left_open_are_tightened(tmp_path: Path) -> None:
    _previous_release(tmp_path / "data")
    for name in ("issuer.sqlite3-wal", "issuer.sqlite3-shm", ".initialise.lock"):
        (tmp_path / "data" / name).touch(mode=0o644)
        (tmp_path / "data" / name).chmod(0o644)
    Database.for_data_dir("", tmp_path / "data").dispose()
    assert {path.name: _mode(path) for path in (tmp_path / "data").iterdir()} == {
        path.name: 0o600 for path in (tmp_path / "data").iterdir()
    }


def test_a_database_of_the_very_first_release_gets_its_missing_tables(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "issuer.sqlite3")
    conn.executescript(
        ";".join(
            s
            for s in PREVIOUS_RELEASE_SCHEMA.split(";")
            if "login_sessions" not in s and "authorization_codes" not in s
        )
    )
    conn.close()
    database = Database.for_data_dir("", data_dir)
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    database.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_at_0012_upgrades_keeping_its_sessions_as_password_logins(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    database = Database.for_data_dir(url, tmp_path / "data")
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0012")
        conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, scope, created_at) VALUES ('u1', 'alice', '-', '', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO login_sessions (session_hash, user_id, created_at, expires_at, sid)"
                " VALUES (:h, 'u1', 1, 2000000000, :sid)"
            ),
            {"h": "b" * 64, "sid": "c" * 32},
        )
    database.upgrade()
    assert migrations.current(database) == migrations.head()
    assert LoginSessions(database, 60).login("b" * 64) == Login(("pwd",), 1)
    database.dispose()
