"""Fixtures shared by the integration suites: running stacks on three backends, and databases.

`stack` and `make_stack` are parametrized: every test that uses them runs against gunicorn
processes on loopback with the issuer on SQLite, the same with the issuer on PostgreSQL, and
Docker Compose containers (marked `container`), so each deployment proves the same behaviour.

`postgres_server` and `redis_server` run private servers from Debian's packages for the
session (`make services` installs them); without them a test that asks fails, never skips.
`postgres_url` gives each test an empty database of its own on that PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support import databases
from tests.support.compose import ComposeStack, build_images, compose_available
from tests.support.processes import NotStarted
from tests.support.stack import LoopbackStack, PostgresStack, Stack

StackFactory = Callable[..., Stack]

# The issuer on its embedded SQLite (loopback), on PostgreSQL (loopback too), and in containers.
BACKENDS = [pytest.param("loopback"), pytest.param("postgresql"), pytest.param("compose", marks=pytest.mark.container)]


@pytest.fixture(scope="session")
def compose_images() -> None:
    """Check Docker and build the images once; fail (never skip) when Docker is missing."""
    problem = compose_available()
    if problem is not None:
        pytest.fail(f"container tests need Docker Compose: {problem}", pytrace=False)
    build_images()


def _stack_class(backend: str, request: pytest.FixtureRequest) -> Callable[..., Stack]:
    if backend == "compose":
        request.getfixturevalue("compose_images")
        return ComposeStack
    if backend == "postgresql":
        return functools.partial(PostgresStack, server=request.getfixturevalue("postgres_server"))
    return LoopbackStack


@pytest.fixture(scope="session", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack per backend, with the reports API, shared by tests that do not disturb it."""
    running = _stack_class(request.param, request)(tmp_path_factory.mktemp(f"stack-{request.param}"), reports=True)
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


def _serve(server: AbstractContextManager[str]) -> Iterator[str]:
    """Yield the URL of a started server; fail (never skip) the tests when it cannot start."""
    with ExitStack() as running:
        try:
            url = running.enter_context(server)
        except NotStarted as exc:
            pytest.fail(str(exc), pytrace=False)
        yield url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL for the session: `postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres`."""
    yield from _serve(databases.postgres_server())


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """An empty database of the test's own on the session's PostgreSQL, dropped after the test."""
    with databases.fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A private Redis without persistence for the session: `redis://127.0.0.1:PORT/0`."""
    yield from _serve(databases.redis_server())
