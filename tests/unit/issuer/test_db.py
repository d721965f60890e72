"""Unit tests for issuer.db: the schema, created safely by workers starting together."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

from issuer import db
from issuer.keys import KeyStore


def _start_worker(data_dir: str, barrier: Any) -> str:
    """What each gunicorn worker does first: create the schema and make sure a key signs."""
    path = Path(data_dir)
    barrier.wait()  # all at the same moment, as gunicorn's freshly forked workers are
    try:
        db.initialise(path / "issuer.sqlite3")
        KeyStore(path / "keys", path / "issuer.sqlite3", rsa_key_bits=1024).ensure_active()
    except sqlite3.Error as exc:
        return f"failed: {exc}"
    return "started"


def test_workers_starting_together_on_a_new_data_directory_all_start(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(8) as pool:
        for attempt in range(10):
            data_dir = tmp_path / str(attempt)
            barrier = manager.Barrier(8)
            results = pool.starmap(_start_worker, [(str(data_dir), barrier)] * 8)
            assert results == ["started"] * 8, results
            _check(data_dir)


def _check(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / "issuer.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM signing_keys WHERE state = 'active'").fetchone()[0] == 1
    finally:
        conn.close()


def test_initialise_adds_columns_missing_from_older_databases(tmp_path: Path) -> None:
    path = tmp_path / "issuer.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, family_id TEXT)")
    old.commit()
    old.close()
    db.initialise(path)
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(refresh_tokens)")}
    finally:
        conn.close()
    assert "session_hash" in columns
