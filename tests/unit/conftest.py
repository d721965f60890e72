"""Fixtures for the in-process unit tests: session RSA keys, a hand-moved clock, a tiny JWKS server."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from issuer import create_app
from issuer.db import Database
from issuer.kek import KEK_FILE_NAME
from issuer.settings import IssuerSettings
from issuer.users import User, UserStore
from tests.support import databases
from tests.support.browsing import DEMO_USERS, WEB_REDIRECT_URI
from tests.support.fakes import FakeClock, JwksServer, LiveIssuer, WsgiServer
from tests.support.tokens import new_rsa_key

# -- keys ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """The key the trusted issuer signs with."""
    return new_rsa_key()


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    """A second key: the next key in a rotation, or an attacker's key."""
    return new_rsa_key()


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A client's P-256 key, for DPoP proofs."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def other_ec_key() -> ec.EllipticCurvePrivateKey:
    """Another client's P-256 key (a thief's)."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def small_rsa_key() -> rsa.RSAPrivateKey:
    """A 1024-bit key, too short to be trusted."""
    return new_rsa_key(1024)


# -- clock --------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    """A fresh hand-moved clock."""
    return FakeClock()


# -- issuer settings ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def issuer_data_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An issuer data directory with its schema and first (2048-bit) key, made once."""
    data_dir = tmp_path_factory.mktemp("issuer-template")
    _schema_and_first_key(IssuerSettings(data_dir=data_dir))
    return data_dir


def _schema_and_first_key(settings: IssuerSettings) -> None:
    """Bring `settings`' database to the current schema and give it its first signing key, as a first start does."""
    database = settings.database()
    database.upgrade()
    settings.key_store(database, settings.load_kek()).start(settings.legacy_key_dir)
    database.dispose()


@pytest.fixture
def issuer_settings(tmp_path: Path, issuer_data_template: Path) -> IssuerSettings:
    """Issuer settings on a private copy of the template data directory, with cheap argon2."""
    data_dir = tmp_path / "issuer"
    shutil.copytree(issuer_data_template, data_dir)
    return IssuerSettings(
        url="http://issuer.test",
        data_dir=data_dir,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        key_reload_interval=0.0,
        prune_interval=0,  # no pruning thread in in-process apps; tests prune by hand
    )


@pytest.fixture(scope="session")
def postgres_schema_template(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL database at the issuer's current schema, made once; `database` copies it for each test."""
    with databases.fresh_database(postgres_server) as url:
        made = Database.for_data_dir(url, tmp_path_factory.mktemp("schema-template"))
        made.upgrade()
        made.dispose()
        yield databases.database_name(url)


@pytest.fixture(scope="session")
def postgres_issuer_template(
    postgres_server: str, issuer_data_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A PostgreSQL database with the schema and a first key, sealed under the template data directory's KEK, made once.

    What `issuer_data_template` is on SQLite: each test on PostgreSQL gets a copy
    (`issuer_postgres_url`), as each test on SQLite gets a copy of that directory.
    """
    with databases.fresh_database(postgres_server) as url:
        settings = IssuerSettings(
            data_dir=tmp_path_factory.mktemp("postgres-template"),
            database_url=url,
            key_encryption_key=(issuer_data_template / KEK_FILE_NAME).read_text().strip(),
            session_secret="S" * 48,
        )
        _schema_and_first_key(settings)
        yield databases.database_name(url)


@pytest.fixture
def issuer_postgres_url(postgres_server: str, postgres_issuer_template: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own with the schema and the first key of `postgres_issuer_template`."""
    with databases.fresh_database(postgres_server, template=postgres_issuer_template) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty issuer database at the current schema: embedded SQLite, then PostgreSQL (a copy of a template)."""
    with contextlib.ExitStack() as made:
        url = ""
        if request.param == "postgresql":
            server, template = (
                request.getfixturevalue("postgres_server"),
                request.getfixturevalue("postgres_schema_template"),
            )
            url = made.enter_context(databases.fresh_database(server, template=template))
        fresh = Database.for_data_dir(url, tmp_path / "issuer-db")
        fresh.upgrade()  # a copy of the template is at the current schema already: this checks it
        yield fresh
        fresh.dispose()


@pytest.fixture
def hasher() -> PasswordHasher:
    """An argon2id hasher with the cheapest parameters, for speed."""
    return PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


@pytest.fixture
def users(database: Database, hasher: PasswordHasher) -> UserStore:
    """A user store on the fresh database."""
    return UserStore(database, hasher)


@pytest.fixture
def alice(users: UserStore) -> User:
    """The user alice (password 'wonderland', scopes admin and profile)."""
    return users.add("alice", "wonderland", "profile admin")


@pytest.fixture
def bob(users: UserStore) -> User:
    """The user bob (password 'builder', scope profile)."""
    return users.add("bob", "builder", "profile")


@pytest.fixture
def live_issuer(issuer_settings: IssuerSettings) -> Iterator[LiveIssuer]:
    """A real issuer app served on a loopback port, with the demo users alice and bob."""
    server = WsgiServer()
    settings = dataclasses.replace(
        issuer_settings, url=server.base_url, demo_users=DEMO_USERS, web_redirect_uris=(WEB_REDIRECT_URI,)
    )
    app = create_app(settings)
    server.mount(app)
    yield LiveIssuer(server.base_url, settings, app)
    server.stop()


# -- logging ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo the `dictConfig` each `create_app` applies, so no test inherits another's handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    werkzeug_level = logging.getLogger("werkzeug").level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel(werkzeug_level)


# -- a JWKS server ------------------------------------------------------------------------


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    """A JWKS server of the test's own, answering an empty key set until told otherwise."""
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
def dead_url() -> str:
    """A URL on a loopback port where nothing listens."""
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"
