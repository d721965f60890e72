"""Where DPoP proofs already accepted are remembered, so none is accepted twice (RFC 9449 section 11.1).

A store answers one question atomically: "is this key new? then remember it until `expires`".
The key is a digest of the proof's `jti` and `htu`; it is kept while the proof's `iat` is
within the window the verifier accepts, after which the proof is refused as stale anyway.

- `MemoryReplayStore`: one process (tests, a single-worker API).
- `SqliteReplayStore`: a file shared by every worker of one API on a host (gunicorn forks
  several), in WAL mode with `synchronous=OFF`, one connection per process and thread kept
  open, one prepared upsert per proof on the primary key (no other index); a primary key makes
  the insert fail for a key already held, so two workers racing with the same proof cannot
  both win. Expired keys are pruned by each process every `PRUNE_INTERVAL` seconds, not per proof.

Both are thread-safe and bounded: a store full of live entries refuses (a 503, fail closed)
rather than forget a proof that could then be replayed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from jwt_verifier.errors import Reason, VerificationUnavailable

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "MemoryReplayStore",
    "ReplayStore",
    "ReplayStoreUnavailable",
    "SqliteReplayStore",
    "default_replay_path",
    "open_replay_store",
    "replay_key",
]

DEFAULT_MAX_ENTRIES = 1_000_000
PRUNE_INTERVAL = 5.0  # seconds between two prunings by one process (a scan of the table: batched, not per proof)


class ReplayStoreUnavailable(VerificationUnavailable):
    """The replay store cannot answer (full of live entries, or its file is unusable): proofs cannot be checked."""

    reason = Reason.DPOP_UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail, reason=Reason.DPOP_UNAVAILABLE)


class ReplayStore(Protocol):
    """Remember keys until they expire."""

    def add(self, key: str, expires: float, now: float) -> bool:
        """Remember `key` until `expires`; return False if it is already held (a replay)."""
        ...


class MemoryReplayStore:
    """An in-process replay store: a dict under a lock, pruned of expired keys when it fills."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, expires: float, now: float) -> bool:
        """Remember `key` until `expires`; return False if it is already held and unexpired."""
        with self._lock:
            held = self._entries.get(key)
            if held is not None and held > now:
                return False
            if held is None and len(self._entries) >= self.max_entries:
                self._entries = {k: v for k, v in self._entries.items() if v > now}
                if len(self._entries) >= self.max_entries:
                    raise ReplayStoreUnavailable("the DPoP replay store is full of live proofs")
            self._entries[key] = expires
            return True


# One b-tree, the primary key's: an index on `expires` would be a second write per proof (a
# quarter of an insert's cost) to save the pruning's scan, made once per PRUNE_INTERVAL.
_SCHEMA = ("CREATE TABLE IF NOT EXISTS dpop_proof (key TEXT PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID",)
# What SQLite says while another process sets up the same new file.
_TRANSIENT = ("locked", "disk I/O error")
# Insert, or take over a key whose entry has expired; a live entry leaves the row unchanged (0 rows).
_ADD = (
    "INSERT INTO dpop_proof (key, expires) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE dpop_proof.expires <= ?"
)


class SqliteReplayStore:
    """A replay store in a SQLite file that every worker process of one API on a host opens.

    Each process (and thread) has its own connection, opened on first use, so a store built
    before gunicorn forks its workers is safe to use in each. The file is created readable by
    its owner only.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        timeout: float = 2.0,
        private_directory: bool = False,
    ) -> None:
        self.path = str(path)
        # The default file's directory is made on first use, private to this user.
        self.private_directory = private_directory
        self.max_entries = max_entries
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next_prune = 0.0
        self._full = False

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == pid:
            return conn
        try:
            if self.private_directory:
                _private_directory(Path(self.path).parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                # One connection (of any process or thread) sets the file up at a time: flock is
                # apart from SQLite's own (fcntl) locks, and held only while WAL and the schema are set.
                fcntl.flock(fd, fcntl.LOCK_EX)
                conn = self._open(time.monotonic() + self.timeout)
            finally:
                os.close(fd)  # releases the flock
        except (OSError, sqlite3.Error) as exc:
            raise ReplayStoreUnavailable(f"cannot open the DPoP replay store: {type(exc).__name__}") from exc
        self._local.conn, self._local.pid = conn, pid
        return conn

    def _open(self, deadline: float) -> sqlite3.Connection:
        # Workers starting together set up a new file at once: switching it to WAL (and creating the
        # schema) may find it locked without waiting, or its shared-memory file half made ("disk I/O
        # error"), so both are waited out here, up to the store's timeout.
        while True:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # A crash may lose the last proofs remembered; they expire within a minute anyway.
                conn.execute("PRAGMA synchronous=OFF")
                for statement in _SCHEMA:
                    conn.execute(statement)
            except sqlite3.OperationalError as exc:
                conn.close()
                if not any(word in str(exc) for word in _TRANSIENT) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            else:
                return conn

    def add(self, key: str, expires: float, now: float) -> bool:
        """Remember `key` until `expires`; return False if any process holds it unexpired."""
        conn = self._connection()
        try:
            if now >= self._next_prune:
                self._prune(conn, now)
            if self._full:
                raise ReplayStoreUnavailable("the DPoP replay store is full of live proofs")
            return conn.execute(_ADD, (key, expires, now)).rowcount == 1
        except sqlite3.Error as exc:
            raise ReplayStoreUnavailable(f"the DPoP replay store failed: {type(exc).__name__}") from exc

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        with self._lock:
            if now < self._next_prune:
                return
            self._next_prune = now + PRUNE_INTERVAL
        conn.execute("DELETE FROM dpop_proof WHERE expires <= ?", (now,))
        (count,) = conn.execute("SELECT count(*) FROM dpop_proof").fetchone()
        self._full = count >= self.max_entries


def replay_key(jti: str, htu: str) -> str:
    """Return the store key of a proof: a digest of its `jti` and (normalized) `htu`."""
    return hashlib.sha256(f"{jti}\x00{htu}".encode("utf-8", "surrogatepass")).hexdigest()


def default_replay_path(resource: str) -> Path:
    """Return the replay file of the API `resource` on this host: in a directory of this user's only.

    Every worker of one API computes the same path; two APIs on one host get two files.
    """
    directory = Path(tempfile.gettempdir()) / f"jwt-verifier-{os.getuid()}"
    digest = hashlib.sha256(resource.encode()).hexdigest()[:24]
    return directory / f"dpop-replay-{digest}.sqlite3"


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ReplayStoreUnavailable(f"{directory} is not a private directory of this user")


def open_replay_store(path: str, resource: str) -> ReplayStore:
    """Return the store a configuration names: ":memory:" one process, "" the default file, else that file."""
    if path == ":memory:":
        return MemoryReplayStore()
    if path:
        return SqliteReplayStore(path)
    return SqliteReplayStore(default_replay_path(resource), private_directory=True)
