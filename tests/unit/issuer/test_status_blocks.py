"""Status-list indexes on PostgreSQL: a worker takes a block of them at once, and no grant holds the list's row.

Every client-credentials token and every refresh family's first token takes an index of the
open list. Taken with an UPDATE in the grant's transaction, the list's row stayed locked until
the grant committed, after its token was signed: every grant of every replica queued on that
one row. Now a worker takes `BLOCK` indexes in a short transaction of its own and hands them
out itself (issuer.statuslist). These tests run on PostgreSQL, where that matters; SQLite,
one writer at a time, keeps taking one index in the grant's transaction
(tests/unit/issuer/test_statuslist.py).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.exc import OperationalError

from issuer import statuslist
from issuer.db import status_grants, status_lists
from issuer.settings import IssuerSettings
from issuer.statuslist import BLOCK, BLOCK_HOLD, Slot, StatusLists, registered


@pytest.fixture
def settings(on_postgresql: IssuerSettings) -> IssuerSettings:
    return on_postgresql


@pytest.fixture
def lists(app: Flask) -> Iterator[StatusLists]:
    """The app's status lists, in its app context."""
    with app.app_context():
        yield statuslist.current()


def _worker(lists: StatusLists, *, capacity: int | None = None) -> StatusLists:
    """Another worker's status lists on the same database (lists of `capacity` if given): a block of its own."""
    return dataclasses.replace(lists, capacity=capacity or lists.capacity)


def _token_slot(lists: StatusLists) -> Slot:
    return lists.for_token(
        client_id="cli",
        audience="jwt-split-api",
        scope="x",
        registered=registered(lists.database, "cli", "jwt-split-api"),
    )


def _allocated(lists: StatusLists, list_id: str) -> int:
    with lists.database.reading() as conn:
        return int(conn.execute(select(status_lists.c.allocated).where(status_lists.c.id == list_id)).scalar_one())


def test_a_grant_holds_no_lock_on_the_open_list_until_it_commits(lists: StatusLists, issuer_postgres_url: str) -> None:
    other = create_engine(issuer_postgres_url)
    try:
        with lists.database.unit():  # a token request, its transaction open (its token not yet signed)
            slot = _token_slot(lists)
            with other.connect() as conn:  # another worker's grant, taking an index of that list now
                # The lock an UPDATE of the list's counters takes (its grant's row holds KEY SHARE).
                locked = text("SELECT id FROM status_lists WHERE id = :id FOR NO KEY UPDATE NOWAIT")
                assert conn.execute(locked, {"id": slot.list_id}).scalar_one() == slot.list_id
    finally:
        other.dispose()


def test_a_worker_hands_out_its_block_and_takes_the_next_one_when_it_runs_out(lists: StatusLists) -> None:
    slots = [_token_slot(lists) for _ in range(BLOCK + 1)]
    assert [slot.idx for slot in slots] == list(range(BLOCK + 1))
    assert len({slot.list_id for slot in slots}) == 1
    assert _allocated(lists, slots[0].list_id) == 2 * BLOCK  # two blocks taken, one row update each


def test_concurrent_workers_never_hand_out_the_same_index(lists: StatusLists) -> None:
    workers = [_worker(lists) for _ in range(3)]
    taken: list[Slot] = []
    lock = threading.Lock()

    def grants(worker: StatusLists) -> None:
        for _ in range(BLOCK * 2):
            slot = _token_slot(worker)
            with lock:
                taken.append(slot)

    threads = [threading.Thread(target=grants, args=(worker,)) for worker in workers for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(set(taken)) == 6 * BLOCK * 2
    with lists.database.reading() as conn:
        granted = conn.execute(select(status_grants.c.list_id, status_grants.c.idx)).all()
        allocated = dict(conn.execute(select(status_lists.c.id, status_lists.c.allocated)).all())
    assert len(granted) == len(set(granted)) == len(taken)
    assert all(slot.idx < allocated[slot.list_id] for slot in taken)


def test_an_index_of_a_rolled_back_grant_is_never_handed_to_another_worker(lists: StatusLists) -> None:
    taken: list[Slot] = []

    def failing_grant() -> None:
        with lists.database.unit():
            taken.append(_token_slot(lists))
            raise RuntimeError("the grant fails after its index was taken")

    with pytest.raises(RuntimeError):
        failing_grant()
    lost = taken[0]
    with lists.database.reading() as conn:
        assert conn.execute(select(status_grants.c.grant_id)).all() == []  # the grant rolled back
    other = _token_slot(_worker(lists))
    assert (other.list_id, other.idx) == (lost.list_id, BLOCK)  # the block stayed taken
    assert _token_slot(lists) == Slot(lost.list_id, lost.idx + 1)  # and its worker goes on with it


def test_a_full_list_stays_open_for_the_blocks_out_of_it_then_makes_way(lists: StatusLists) -> None:
    first, second, third = (_worker(lists, capacity=BLOCK + 8) for _ in range(3))
    mine = [_token_slot(first)]  # indexes 0 to BLOCK - 1 of a new list
    last = _token_slot(second)  # the 8 left: the list is full
    before = int(time.time())
    opened = _token_slot(third)  # no index left: the full list closes, another opens
    mine += [_token_slot(first) for _ in range(BLOCK - 1)]  # the first worker's block still serves
    assert [slot.idx for slot in mine] == list(range(BLOCK))
    assert {slot.list_id for slot in mine} == {last.list_id}
    assert last.idx == BLOCK
    assert opened.list_id != last.list_id
    with lists.database.reading() as conn:
        closed = conn.execute(select(status_lists).where(status_lists.c.id == last.list_id)).one()
    # Open, and living, long enough for every token a block of it may still be used for.
    assert closed.open_until >= before + BLOCK_HOLD
    assert closed.expires_at >= closed.open_until + lists.access_token_ttl
    assert _token_slot(first) == Slot(opened.list_id, BLOCK)  # its block spent: the open list's next


class _Clock:
    """The status lists' `time`: a clock the test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_a_block_is_handed_out_at_most_its_hold_and_never_past_its_list(
    lists: StatusLists, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(statuslist, "time", clock)
    first = _token_slot(lists)
    clock.now += BLOCK_HOLD
    assert _token_slot(lists) == Slot(first.list_id, BLOCK)  # its hold over: a new block of the same list
    with lists.database.transaction() as conn:  # the list's validity ends in 2 s, within a block's hold
        conn.execute(update(status_lists).values(open_until=int(clock.now) + 2))
    worker = _worker(lists)
    assert _token_slot(worker) == Slot(first.list_id, 2 * BLOCK)
    clock.now += 2
    assert _token_slot(worker).list_id != first.list_id  # no index of it past its open_until


def test_a_list_row_held_too_long_fails_the_grant_instead_of_hanging_it(
    lists: StatusLists, issuer_postgres_url: str
) -> None:
    _token_slot(lists)
    other = create_engine(issuer_postgres_url)
    try:
        with other.begin() as conn:
            conn.execute(text("SELECT id FROM status_lists FOR UPDATE"))  # held past the lock timeout
            started = time.monotonic()
            with pytest.raises(OperationalError, match="lock timeout"):
                _token_slot(_worker(lists))
            assert time.monotonic() - started < 10
    finally:
        other.dispose()


def test_a_token_request_waiting_too_long_for_the_list_is_answered_503(
    app: Flask, issuer_postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    login = {"grant_type": "password", "client_id": "cli", "username": "alice", "password": "wonderland"}
    assert client.post("/token", data=login).status_code == 200  # the worker's first block, and alice
    app.extensions[statuslist.EXTENSION] = _worker(app.extensions[statuslist.EXTENSION])  # no block yet
    other = create_engine(issuer_postgres_url)
    try:
        with other.begin() as conn:
            conn.execute(text("SELECT id FROM status_lists FOR UPDATE"))  # held past the lock timeout
            answer = client.post("/token", data=login)
    finally:
        other.dispose()
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.headers["Retry-After"] == "1"
    assert answer.get_json() == {
        "error": "temporarily_unavailable",
        "error_description": "the issuer is busy; try again shortly",
    }
    # The database answered: a busy moment, not an outage to page anyone about.
    said = [(record.levelname, record.getMessage()) for record in caplog.records if record.name == "issuer"]
    assert ("WARNING", "database lock wait timed out") in said
    assert not [message for level, message in said if level == "ERROR"]


def test_a_process_forked_after_a_block_was_taken_takes_its_own(lists: StatusLists) -> None:
    inherited = _token_slot(lists)  # the parent's block, which a worker forked now would inherit
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its slot's index, then leave at once
        code = 1
        try:
            lists.database.engine.dispose(close=False)  # its own connections; the parent keeps its own
            os.write(writer, str(_token_slot(lists).idx).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    child_idx = int(os.read(reader, 64) or b"-1")
    os.close(reader)
    assert os.waitpid(pid, 0)[1] == 0
    assert child_idx == BLOCK  # a block of its own, not the parent's next index
    assert _token_slot(lists) == Slot(inherited.list_id, inherited.idx + 1)


def test_workers_finding_no_open_list_at_once_open_one_between_them(lists: StatusLists) -> None:
    """Live tokens name at most two lists (the open one and the one before it), however many workers start together."""
    with lists.database.transaction() as conn:  # every list closed: the next blocks open a new one
        conn.execute(update(status_lists).values(open_until=int(time.time())))
    workers = [_worker(lists) for _ in range(6)]
    start = threading.Barrier(len(workers))
    taken: list[Slot] = []

    def first_grant(worker: StatusLists) -> None:
        start.wait()
        taken.append(_token_slot(worker))

    threads = [threading.Thread(target=first_grant, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(workers)
    assert len({slot.list_id for slot in taken}) == 1, taken
