"""Unit tests for jwt_verifier.replay: no proof accepted twice, by any thread or any worker process."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from jwt_verifier.replay import (
    MemoryReplayStore,
    ReplayStore,
    ReplayStoreUnavailable,
    SqliteReplayStore,
    default_replay_path,
    open_replay_store,
)

KEYS = [f"proof-{i}" for i in range(40)]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ReplayStore:
    if request.param == "memory":
        return MemoryReplayStore()
    return SqliteReplayStore(tmp_path / "replay.sqlite3")


def test_a_key_is_new_once_until_it_expires(store: ReplayStore) -> None:
    assert store.add("a", 160.0, 100.0)
    assert not store.add("a", 170.0, 150.0)
    assert store.add("b", 160.0, 150.0)
    assert store.add("a", 230.0, 160.0)  # expired: a fresh proof may use it again


def test_threads_racing_with_one_key_let_one_win(store: ReplayStore) -> None:
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def race() -> None:
        barrier.wait()
        wins.append(store.add("same", 200.0, 100.0))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_full_memory_store_refuses_rather_than_forgets() -> None:
    store = MemoryReplayStore(max_entries=2)
    assert store.add("a", 110.0, 100.0)
    assert store.add("b", 200.0, 100.0)
    with pytest.raises(ReplayStoreUnavailable):
        store.add("c", 200.0, 105.0)
    assert store.add("c", 200.0, 111.0)  # "a" expired and was pruned
    assert not store.add("b", 200.0, 111.0)


def test_a_full_sqlite_store_refuses_rather_than_forgets(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path / "r.sqlite3", max_entries=2)
    assert store.add("a", 110.0, 100.0)
    assert store.add("b", 200.0, 100.0)
    store2 = SqliteReplayStore(tmp_path / "r.sqlite3", max_entries=2)  # another worker, pruning now
    with pytest.raises(ReplayStoreUnavailable) as caught:
        store2.add("c", 200.0, 105.0)
    assert caught.value.status == 503
    assert store2.add("c", 200.0, 111.0)  # a second later "a" has expired and is pruned
    assert not store2.add("b", 200.0, 111.0)


def _race(path: str, barrier: Barrier, results: multiprocessing.Queue[int]) -> None:
    store = SqliteReplayStore(path)
    barrier.wait()
    results.put(sum(store.add(key, 1e12, 1.0) for key in KEYS))


def test_worker_processes_sharing_a_file_accept_each_proof_once(tmp_path: Path) -> None:
    path = str(tmp_path / "replay.sqlite3")
    parent = SqliteReplayStore(path)
    assert parent.add("before-the-fork", 1e12, 1.0)  # a store used before gunicorn forks its workers
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    results: multiprocessing.Queue[int] = context.Queue()
    workers = [context.Process(target=_race, args=(path, barrier, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sum(counts) == len(KEYS)
    assert not parent.add(KEYS[0], 1e12, 1.0)
    assert not parent.add("before-the-fork", 1e12, 1.0)


def test_an_unusable_file_is_503_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not a database file" * 100)
    with pytest.raises(ReplayStoreUnavailable):
        SqliteReplayStore(tmp_path / "not-a-db").add("a", 2.0, 1.0)
    with pytest.raises(ReplayStoreUnavailable):
        SqliteReplayStore(tmp_path / "missing" / "dir" / "r.sqlite3").add("a", 2.0, 1.0)


def test_the_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite3"
    SqliteReplayStore(path).add("a", 2.0, 1.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_default_path_is_per_api_in_a_private_directory() -> None:
    orders, reports = default_replay_path("https://orders.example"), default_replay_path("https://reports.example")
    assert orders != reports
    assert orders.parent == reports.parent
    assert orders.parent.name == f"jwt-verifier-{os.getuid()}"
    store = open_replay_store("", "https://orders.example")
    assert isinstance(store, SqliteReplayStore)
    assert store.path == str(orders)
    store.add("probe", 2.0, 1.0)
    assert stat.S_IMODE(orders.parent.stat().st_mode) == 0o700


def test_the_configured_store(tmp_path: Path) -> None:
    assert isinstance(open_replay_store(":memory:", "https://a.example"), MemoryReplayStore)
    named = open_replay_store(str(tmp_path / "r.sqlite3"), "https://a.example")
    assert isinstance(named, SqliteReplayStore)
    assert named.path == str(tmp_path / "r.sqlite3")


def _first_use(path: str, barrier: Barrier, results: multiprocessing.Queue[str]) -> None:
    store = SqliteReplayStore(path)
    barrier.wait()
    try:
        results.put(str(store.add("k", 1e12, 1.0)))
    except ReplayStoreUnavailable as exc:
        results.put(repr(exc.__cause__))


def test_workers_opening_a_new_file_at_once_all_answer(tmp_path: Path) -> None:
    # Gunicorn's workers start together: their first proofs create the file, its WAL and schema at
    # once ("database is locked" must be waited out as any lock is, not be a 503).
    # Forked from a fork server, not from this process: a child forked here would copy the locks
    # other threads hold (a verifier's refresher logging, say) and hang on them, and would hold
    # this process's pipes open (the browser tests' Playwright driver then never sees its end).
    # The fork server imports this module (and with it the library) once: each worker is forked
    # from it ready, instead of importing them itself (12 x 12 imports took minutes of CI time).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    for trial in range(12):
        path = str(tmp_path / f"replay-{trial}.sqlite3")
        barrier = context.Barrier(12)
        results: multiprocessing.Queue[str] = context.Queue()
        workers = [context.Process(target=_first_use, args=(path, barrier, results)) for _ in range(12)]
        try:
            for worker in workers:
                worker.start()
            answers = sorted(results.get(timeout=30) for _ in workers)
        finally:
            for worker in workers:
                worker.join(timeout=5)
                if worker.is_alive():
                    worker.kill()
        assert answers == ["False"] * 11 + ["True"]
