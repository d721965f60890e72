"""Deleting a client ends every token it holds, including those it is being issued as it is deleted.

issuer.statuslist: the deletion of a client sets INVALID, in its transaction, the slots of its
grants. A client-credentials request that authenticated the client before the deletion committed,
and took its slot and wrote its grant after the deletion read the client's grants, is answered
200 with a token no deletion ever marks: the reports API accepts it for its whole lifetime. A
client whose key leaked, asking for tokens in a loop, keeps some through its own deletion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import REPORTS_AUDIENCE, PostgresStack
from tests.support.tokens import new_rsa_key

# Cheap password hashing, no lockouts; the issuer's two workers take index blocks of their own.
ENV = {
    "ISSUER_ARGON2_TIME_COST": "1",
    "ISSUER_ARGON2_MEMORY_KIB": "8192",
}
THREADS = 4
SETTLE = 4.0  # seconds for the APIs to re-read the lists (ttl 1 s)


@pytest.fixture
def pg_stack(postgres_server: str, tmp_path: Path) -> Iterator[PostgresStack]:
    """A PostgreSQL stack with the reports API and two issuer workers."""
    running = PostgresStack(tmp_path / "stack", server=postgres_server, issuer_env=ENV, workers=2, reports=True)
    try:
        running.start()
        yield running
    finally:
        running.close()


def test_no_token_issued_to_a_client_outlives_its_deletion(pg_stack: PostgresStack) -> None:
    key = new_rsa_key()
    client_id = pg_stack.register_client(key, "--audience", REPORTS_AUDIENCE, "--scope", "reports:read")
    issued: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            answer = pg_stack.service_token(client_id, key, resource=REPORTS_AUDIENCE)
            if answer.status_code == 200:
                with lock:
                    issued.append((time.monotonic(), answer.json()["access_token"]))

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        deleted = pg_stack.issuer_cli("clients", "delete", client_id)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert deleted.returncode == 0, deleted.stderr
    assert issued, "no token was issued before the deletion"
    time.sleep(SETTLE)
    accepted = [
        round(at - started, 2) for at, token in issued if pg_stack.get_reports("/api/caller", token).status_code != 401
    ]
    assert not accepted, (
        f"{len(accepted)} of {len(issued)} tokens of the deleted client still accepted, "
        f"issued this many seconds after `clients delete` started: {accepted[:10]}"
    )
