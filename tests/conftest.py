"""Fixtures shared by the integration suites: running stacks of the two services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import LoopbackStack

StackFactory = Callable[..., LoopbackStack]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    """One running stack shared by tests that do not disturb it."""
    running = LoopbackStack(tmp_path_factory.mktemp("stack")).start()
    yield running
    running.close()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Build stacks of a test's own (to stop, freeze or reconfigure); all are closed after it."""
    made: list[LoopbackStack] = []

    def factory(**options: Any) -> LoopbackStack:
        built = LoopbackStack(tmp_path / f"stack{len(made)}", **options)
        made.append(built)
        return built

    yield factory
    for built in made:
        built.close()
