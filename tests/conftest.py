"""Fixtures shared by the integration suites: running stacks on two backends.

`stack` and `make_stack` are parametrized: every test that uses them runs once against
gunicorn processes on loopback and once against Docker Compose containers (marked
`container`), so both deployments prove the same behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.compose import ComposeStack, build_images, compose_available
from tests.support.stack import LoopbackStack, Stack

StackFactory = Callable[..., Stack]

BACKENDS = [pytest.param("loopback"), pytest.param("compose", marks=pytest.mark.container)]


@pytest.fixture(scope="session")
def compose_images() -> None:
    """Check Docker and build the images once; fail (never skip) when Docker is missing."""
    problem = compose_available()
    if problem is not None:
        pytest.fail(f"container tests need Docker Compose: {problem}", pytrace=False)
    build_images()


def _stack_class(backend: str, request: pytest.FixtureRequest) -> type[Stack]:
    if backend == "compose":
        request.getfixturevalue("compose_images")
        return ComposeStack
    return LoopbackStack


@pytest.fixture(scope="session", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack per backend, shared by tests that do not disturb it."""
    running = _stack_class(request.param, request)(tmp_path_factory.mktemp(f"stack-{request.param}"))
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture(params=BACKENDS)
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StackFactory]:
    """Build stacks of a test's own (to stop, freeze or reconfigure); all are closed after it."""
    cls = _stack_class(request.param, request)
    made: list[Stack] = []

    def factory(**options: Any) -> Stack:
        built = cls(tmp_path / f"stack{len(made)}", **options)
        made.append(built)
        return built

    yield factory
    for built in made:
        built.close()
