"""Unit tests for shared.readiness: the per-run directory where each worker records that it holds keys."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jwt_verifier.config import VerifierConfig
from jwt_verifier.jwks import JwksClient
from jwt_verifier.status import StatusChecked, StatusLists
from jwt_verifier.verifier import Verifier
from shared import readiness
from tests.support.statuslists import JWKS_PATH, StatusServer
from tests.support.tokens import new_rsa_key


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run of two workers, as the gunicorn master prepares it."""
    # Set, not deleted, first: monkeypatch then removes what prepare() sets when the test ends.
    monkeypatch.setenv(readiness.READY_DIR_ENV, "")
    path = readiness.prepare(str(tmp_path), 2)
    assert os.environ[readiness.READY_DIR_ENV] == str(path)
    return path


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_a_process_outside_a_run_is_ready_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(readiness.READY_DIR_ENV, raising=False)
    readiness.mark_ready()
    assert readiness.workers_waiting() == (0, 1)


def test_every_worker_must_record_that_it_is_ready(run_dir: Path) -> None:
    assert readiness.workers_waiting() == (2, 2)
    readiness.mark_ready()  # this process stands for one worker
    assert readiness.workers_waiting() == (1, 2)
    (run_dir / str(os.getppid())).touch()  # a live sibling
    assert readiness.workers_waiting() == (0, 2)


def test_a_dead_workers_record_does_not_count(run_dir: Path) -> None:
    readiness.mark_ready()
    (run_dir / str(_dead_pid())).touch()  # killed before the master could forget it
    assert readiness.workers_waiting() == (1, 2)


def test_a_worker_that_exited_is_forgotten_and_the_count_follows_the_master(run_dir: Path) -> None:
    readiness.mark_ready()
    readiness.set_workers(run_dir, 1)
    assert readiness.workers_waiting() == (0, 1)
    readiness.worker_exited(run_dir, os.getpid())
    readiness.worker_exited(run_dir, os.getpid())  # twice: harmless
    assert readiness.workers_waiting() == (1, 1)


def test_a_run_that_ended_is_not_ready(run_dir: Path) -> None:
    readiness.mark_ready()
    readiness.remove(run_dir)
    readiness.mark_ready()  # the directory is gone: nothing to record, no error
    assert readiness.workers_waiting() == (1, 1)


def test_a_worker_that_checks_token_status_waits_for_the_issuers_lists() -> None:
    server = StatusServer(new_rsa_key())
    try:
        config = VerifierConfig(
            issuer=server.base_url, audience="api", resource="http://api.test", jwks_url=server.base_url + JWKS_PATH
        )
        jwks = JwksClient(config)
        lists = StatusLists(config, jwks, background=False)
        verifier = Verifier(jwks, issuer=config.issuer, audience=config.audience)
        assert readiness.with_status_lists(verifier, None) is None
        condition = readiness.with_status_lists(StatusChecked(verifier, lists), lambda: True)
        assert condition is not None
        lists.prefetching = True  # as prefetch() sets it, without its thread
        server.down = True
        lists.refresh_due()
        assert not condition()
        server.down = False
        time.sleep(0.15)  # past the first quick retry
        lists.refresh_due()
        assert condition()
        refusing = readiness.with_status_lists(StatusChecked(verifier, lists), lambda: False)
        assert refusing is not None
        assert not refusing()  # the app's own condition still counts
    finally:
        server.close()
