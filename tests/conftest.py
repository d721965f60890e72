"""Fixtures shared by the integration suites: running stacks on three backends, and databases.

`stack` and `make_stack` are parametrized: every test that uses them runs against gunicorn
processes on loopback with the issuer on SQLite and the same with the issuer on PostgreSQL, so
both databases prove the same behaviour. A test whose subject is the deployment (marked
`deployment`: containers stopped or restarted, volumes, the network between the services, the
CLIs run in them, public URLs) also runs on Docker Compose containers (marked `container`);
at least one test of each such group does. The others would only repeat on containers what
loopback proves, at a container stack's start-up each (CI time).

`postgres_server` and `redis_server` run private servers from Debian's packages for the
session (`make services` installs them); without them a test that asks fails, never skips.
`postgres_url` gives each test an empty database of its own on that PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.support import databases
from tests.support.compose import ComposeStack, build_images, compose_available
from tests.support.processes import NotStarted
from tests.support.stack import LoopbackStack, PostgresStack, Stack

StackFactory = Callable[..., Stack]

# The issuer on its embedded SQLite (loopback), on PostgreSQL (loopback too), and in containers.
LOCAL_BACKENDS = [pytest.param("loopback"), pytest.param("postgresql")]
BACKENDS = [*LOCAL_BACKENDS, pytest.param("compose", marks=pytest.mark.container)]
STACK_SCOPES: dict[str, Literal["session", "function"]] = {
    "stack": "session",
    "nonce_stack": "session",
    "make_stack": "function",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `stack`, `nonce_stack` and `make_stack` over the backends: on compose only for a `deployment` test.

    A module that defines a fixture of that name (its own stack) parametrizes it itself. A test
    marked `sqlite_only` runs on loopback alone: one whose subject is timing in Python that no
    database changes, and that waits long for it (CI time), while its database steps are proved
    on both by other tests.
    """
    deployment = metafunc.definition.get_closest_marker("deployment") is not None
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    for name, scope in STACK_SCOPES.items():
        if name in metafunc.fixturenames and not hasattr(metafunc.module, name):
            backends = BACKENDS if deployment else LOCAL_BACKENDS
            if sqlite_only:
                backends = [backend for backend in backends if backend.values == ("loopback",)]
            metafunc.parametrize(name, backends, indirect=True, scope=scope)


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


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack per backend, with the reports API, shared by tests that do not disturb it."""
    running = _stack_class(request.param, request)(tmp_path_factory.mktemp(f"stack-{request.param}"), reports=True)
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture(scope="session")
def nonce_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack per backend whose issuer requires DPoP nonces (`ISSUER_DPOP_NONCE`), shared likewise."""
    directory = tmp_path_factory.mktemp(f"nonce-stack-{request.param}")
    running = _stack_class(request.param, request)(directory, issuer_env={"ISSUER_DPOP_NONCE": "true"})
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture
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
