"""Unit tests for shared.readiness: the per-run directory where each worker records that it holds keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import readiness


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
