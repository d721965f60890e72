"""Fixtures for the issuer's tests: the app of a module's `settings`, a client of it, and its settings on each engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from issuer import create_app, extensions
from issuer.kek import KEK_FILE_NAME
from issuer.settings import IssuerSettings
from tests.support.browsing import DEMO_USERS, WEB_REDIRECT_URI


@pytest.fixture
def app(settings: IssuerSettings) -> Iterator[Flask]:
    """The issuer app on the test module's `settings`; its database connections are closed afterwards."""
    app = create_app(settings)
    yield app
    extensions.of(app).database.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def on_postgresql(issuer_settings: IssuerSettings, issuer_postgres_url: str) -> IssuerSettings:
    """The issuer with the demo users on a PostgreSQL database of the test's own (for what only concurrent writers show)."""
    return dataclasses.replace(
        issuer_settings,
        demo_users=DEMO_USERS,
        database_url=issuer_postgres_url,
        key_encryption_key=(issuer_settings.data_dir / KEK_FILE_NAME).read_text().strip(),
        session_secret="S" * 48,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def on_each_engine(request: pytest.FixtureRequest, issuer_settings: IssuerSettings) -> IssuerSettings:
    """The issuer with the demo users and the resource's web client on SQLite, then on a PostgreSQL database of the test's own.

    On PostgreSQL the keys are wrapped with the key-encryption key the SQLite set-up wrote, and
    the session secret is set, as a deployment with a shared database must; its database is a
    copy of a template with the schema and a first key, as the SQLite data directory is.
    """
    settings = dataclasses.replace(issuer_settings, demo_users=DEMO_USERS, web_redirect_uris=(WEB_REDIRECT_URI,))
    if request.param == "sqlite":
        return settings
    return dataclasses.replace(
        settings,
        database_url=request.getfixturevalue("issuer_postgres_url"),
        key_encryption_key=(issuer_settings.data_dir / KEK_FILE_NAME).read_text().strip(),
        session_secret="S" * 48,
    )
