"""Private PostgreSQL and Redis servers for the tests, from Debian's packages, on loopback.

Each server runs as a child process of the test session on a free 127.0.0.1 port, with its
files in a directory of its own, and is stopped at the end; nothing system-wide is used.
`scripts/services-setup` (`make services`) installs the packages where they are missing.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from tests.support.processes import ChildProcess, NotStarted, free_port

SETUP_HINT = "run `make services` (scripts/services-setup installs Debian's postgresql and redis-server)"
# postgres refuses to run as root; as root the server runs as Debian's `postgres` user instead.
POSTGRES_USER = "postgres"


class ServerUnavailable(NotStarted):
    """A server's program is missing or cannot be set up."""


def postgres_bin_dir(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """Return the newest /usr/lib/postgresql/<version>/bin holding initdb and postgres."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    for candidate in sorted(root.glob("*/bin"), key=version, reverse=True):
        if all(os.access(candidate / name, os.X_OK) for name in ("initdb", "postgres")):
            return candidate
    raise ServerUnavailable(f"PostgreSQL's initdb and postgres are not under {root}/<version>/bin: {SETUP_HINT}")


def redis_server_binary() -> Path:
    """Return the redis-server program."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if found is None:
        raise ServerUnavailable(f"redis-server is not installed: {SETUP_HINT}")
    return Path(found)


@contextmanager
def running(server: ChildProcess, ready: Callable[[], bool], *, stop_signal: int, timeout: float) -> Iterator[None]:
    """Start `server`, wait until `ready()`, and stop it with `stop_signal` when done."""
    server.start()
    try:
        server.wait_ready(ready, timeout=timeout, what=f"{server.name} to accept connections")
        yield
    finally:
        server.stop(stop_signal)


class PostgresCluster:
    """A private PostgreSQL cluster whose server a test can stop and start again (same port, same data)."""

    def __init__(self, root: Path, *, timeout: float = 60.0) -> None:
        self.root = root
        self.timeout = timeout
        self.bin_dir = postgres_bin_dir()
        self.user = _postgres_user()
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.url = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"
        self.server = ChildProcess(
            "postgres",
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(root / "data"),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={root}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            root / "postgres.log",
            user=self.user,
        )

    def initialise(self) -> None:
        """Create the cluster's files (initdb), owned by the user the server runs as."""
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self.user is not None:
            for path in (self.root, password_file):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        initdb = ChildProcess(
            "initdb",
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.root / "data"),
                "--username",
                "postgres",
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            self.root / "initdb.log",
            user=self.user,
        ).start()
        assert initdb.proc is not None
        if initdb.proc.wait(timeout=120) != 0:
            raise ServerUnavailable(f"initdb failed ({initdb.proc.returncode}):\n{initdb.log()[-2000:]}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.server.start()
        try:
            self.server.wait_ready(
                lambda: _postgres_answers(self.url), timeout=self.timeout, what="postgres to accept connections"
            )
        except NotStarted:
            self.server.stop(signal.SIGINT)
            raise

    @property
    def running(self) -> bool:
        """Return whether the server is started (and not stopped since)."""
        return self.server.proc is not None

    def stop(self) -> None:
        """Stop the server; clients' connections are then refused."""
        # SIGINT is postgres's "fast" shutdown: it ends sessions instead of waiting for clients.
        self.server.stop(signal.SIGINT)


def _postgres_user() -> pwd.struct_passwd | None:
    """Return the user postgres must run as: Debian's `postgres` user as root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise ServerUnavailable(f"running as root needs the {POSTGRES_USER!r} user: {SETUP_HINT}") from None


@contextmanager
def postgres_cluster(*, timeout: float = 60.0) -> Iterator[PostgresCluster]:
    """Run a private PostgreSQL cluster on a free loopback port; yield it, started.

    The cluster lives in a new directory under the system's temporary directory (as root, owned
    by the `postgres` user, since postgres refuses to run as root) and is deleted afterwards.
    fsync is off: the data are thrown away.
    """
    with tempfile.TemporaryDirectory(prefix="jwtsplit-postgres-", ignore_cleanup_errors=True) as tmp:
        cluster = PostgresCluster(Path(tmp), timeout=timeout)
        cluster.initialise()
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


@contextmanager
def postgres_server(*, timeout: float = 60.0) -> Iterator[str]:
    """Run a private PostgreSQL cluster (see `postgres_cluster`); yield its superuser URL."""
    with postgres_cluster(timeout=timeout) as cluster:
        yield cluster.url


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


@contextmanager
def fresh_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """Create an empty database on the server (a copy of `template`, if named), yield its URL, then drop it.

    A template made once (a schema, a first key) and copied per test spares each test the
    migrations and a key generation (the copy took 33 ms, the migrations 105 ms and a key
    20-120 ms, measured on loopback).
    """
    name = f"test_{uuid.uuid4().hex[:16]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield database_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def database_url(server_url: str, name: str) -> str:
    """Return the URL of database `name` on the server of `server_url`."""
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def database_name(url: str) -> str:
    """Return the name of the database a URL of `database_url`'s form names."""
    return url.rsplit("/", 1)[1]


@contextmanager
def redis_server(*, timeout: float = 30.0) -> Iterator[str]:
    """Run a private Redis on a free loopback port, without persistence; yield its URL (database 0)."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="jwtsplit-redis-", ignore_cleanup_errors=True) as tmp:
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        server = ChildProcess(
            "redis-server",
            [
                str(binary),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                tmp,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            Path(tmp) / "redis.log",
        )
        with running(server, lambda: _redis_answers(url), stop_signal=signal.SIGTERM, timeout=timeout):
            yield url


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
