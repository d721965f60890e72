"""Fixtures for the issuer's tests: the app of a module's `settings`, and a client of it."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from issuer import create_app
from issuer.settings import IssuerSettings


@pytest.fixture
def app(settings: IssuerSettings) -> Flask:
    """The issuer app on the test module's `settings`."""
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()
