"""Fixtures for the resource's tests: a client of the module's `make_app`, its issuer publishing `rsa_key`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from tests.support.fakes import JwksServer

AppFactory = Callable[..., Flask]


@pytest.fixture
def client(make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> FlaskClient:
    """A client (or browser) of a resource whose issuer publishes `rsa_key`."""
    jwks_server.serve_keys(rsa_key)
    return make_app().test_client()
