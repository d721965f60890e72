"""Deleting or narrowing a client ends every token it no longer permits, including those it is being issued meanwhile.

issuer.statuslist: the deletion of a client sets INVALID, in its transaction, the slots of its
grants. A client-credentials request that authenticated the client before the deletion committed,
and took its slot and wrote its grant after the deletion read the client's grants, is answered
200 with a token no deletion ever marks: the reports API accepts it for its whole lifetime. A
client whose key leaked, asking for tokens in a loop, keeps some through its own deletion.
Narrowing it (`clients add --replace`) ends what it no longer permits the same way, and the
same race left tokens for an API the client had lost, issued by a worker's older copy of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import REPORTS_AUDIENCE, PostgresStack
from tests.support.tokens import jwks_json, new_rsa_key

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


def _stream_through(stack: PostgresStack, client_id: str, key: Any, change: Callable[[], Any]) -> list[str]:
    """Ask for reports tokens from THREADS threads while `change` runs; return how many seconds after it each still works."""
    issued: list[tuple[float, str]] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            answer = stack.service_token(client_id, key, resource=REPORTS_AUDIENCE)
            if answer.status_code == 200:
                with lock:
                    issued.append((time.monotonic(), answer.json()["access_token"]))
            else:  # refused, or asked to retry: never a server error
                with lock:
                    refused.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        changed = change()
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert changed.returncode == 0, changed.stderr
    assert issued, f"no token was issued before the change: {refused[:3]}"
    assert all(answer[:3] in {"400", "401", "503"} for answer in refused), refused[:5]
    time.sleep(SETTLE)
    return [f"{at - started:.2f}" for at, token in issued if stack.get_reports("/api/caller", token).status_code != 401]


def test_no_token_issued_to_a_client_outlives_its_deletion(pg_stack: PostgresStack) -> None:
    key = new_rsa_key()
    client_id = pg_stack.register_client(key, "--audience", REPORTS_AUDIENCE, "--scope", "reports:read")
    accepted = _stream_through(pg_stack, client_id, key, lambda: pg_stack.issuer_cli("clients", "delete", client_id))
    assert not accepted, (
        f"{len(accepted)} tokens of the deleted client still accepted, "
        f"issued this many seconds after `clients delete` started: {accepted[:10]}"
    )


def test_no_token_for_an_api_a_client_lost_outlives_the_narrowing(pg_stack: PostgresStack) -> None:
    key = new_rsa_key()
    scope = "reports:read profile"
    client_id = pg_stack.register_client(
        key, "--audience", REPORTS_AUDIENCE, "--audience", "jwt-split-api", "--scope", scope
    )

    def narrow() -> Any:  # the same registration, for the profile API only
        return pg_stack.issuer_cli(
            "clients", "add", client_id, "--replace", "--grant", "client_credentials", "--jwks-file", "-",
            "--audience", "jwt-split-api", "--scope", scope, stdin=jwks_json(key),
        )  # fmt: skip

    accepted = _stream_through(pg_stack, client_id, key, narrow)
    assert not accepted, (
        f"{len(accepted)} reports tokens of a client narrowed to another API still accepted, "
        f"issued this many seconds after `clients add --replace` started: {accepted[:10]}"
    )
