"""Fixtures for the reports API's tests: a real issuer and profile API on loopback, and reports apps on them.

Each reports app is served by a real uvicorn on loopback (`AppClient`), as in production.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from flask import Flask

import resource_server
from issuer import create_app as create_issuer_app
from issuer import extensions
from issuer.clients import Client
from issuer.settings import IssuerSettings
from jwt_verifier import VerifierConfig
from jwt_verifier import fastapi as verifier_fastapi
from jwt_verifier.flask import protection
from reports_api import ProfileApi, ReportsSettings, create_app
from resource_server.settings import ResourceSettings
from shared.oauth_client import ServiceTokens
from tests.support.asgi import serve_asgi
from tests.support.fakes import CountingApp, WsgiServer
from tests.support.tokens import jwks_json

PROFILE_AUDIENCE = "jwt-split-api"
REPORTS_AUDIENCE = "jwt-split-reports"
REPORTS_CLIENT = "reports-api"
PUBLIC_URL = "http://reports.test"


class AppClient:
    """A reports app served by uvicorn on loopback, and a client of it."""

    def __init__(self, app: FastAPI, url: str) -> None:
        self.app = app
        self.url = url

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        """GET `path` of the app (never through a proxy, never following a redirect)."""
        with requests.Session() as session:
            session.trust_env = False
            return session.get(f"{self.url}{path}", headers=headers, timeout=30, allow_redirects=False)


AppFactory = Callable[..., AppClient]
TokenFactory = Callable[..., str]


@dataclass
class Issuer:
    """A real issuer app on loopback that knows the reports API, counting its requests."""

    url: str
    app: Flask
    counter: CountingApp
    server: WsgiServer

    @property
    def token_requests(self) -> int:
        """Return how many requests the token endpoint got."""
        return self.counter.count("/token")

    def register(self, client_id: str, jwks: str, *, audience: str, scope: str) -> None:
        """Register a private_key_jwt client of one API."""
        extensions.of(self.app).clients.add(
            Client(
                client_id,
                frozenset({"client_credentials"}),
                scopes=frozenset(scope.split()),
                audiences=frozenset({audience}),
                auth_method="private_key_jwt",
                jwks=jwks,
            )
        )


@dataclass
class ProfileService:
    """The profile API (the resource app) served on loopback."""

    url: str
    app: Flask
    server: WsgiServer


@pytest.fixture
def issuer(issuer_settings: IssuerSettings) -> Iterator[Issuer]:
    """A real issuer on loopback with the reports API registered (scopes reports:read and reports:write)."""
    server = WsgiServer()
    app = create_issuer_app(dataclasses.replace(issuer_settings, url=server.base_url))
    counter = CountingApp(app)
    server.mount(counter)
    extensions.of(app).apis.add(REPORTS_AUDIENCE, "reports:read reports:write")
    yield Issuer(server.base_url, app, counter, server)
    server.stop()


@pytest.fixture
def profile_api(issuer: Issuer) -> Iterator[ProfileService]:
    """The real profile API on loopback, verifying the issuer's tokens."""
    server = WsgiServer()
    app = resource_server.create_app(
        ResourceSettings(
            verifier=VerifierConfig(
                issuer=issuer.url,
                audience=PROFILE_AUDIENCE,
                resource=server.base_url,
                jwks_timeout=1.0,
                jwks_prefetch=False,
            ),
            issuer_internal_url=issuer.url,
        )
    )
    server.mount(app)
    yield ProfileService(server.base_url, app, server)
    server.stop()
    protection(app).close()  # its background threads
    protection(app).jwks.session.close()


@pytest.fixture
def make_app(issuer: Issuer, profile_api: ProfileService, tmp_path: Path) -> Iterator[AppFactory]:
    """Serve reports apps on the issuer and the profile API; `register=False` leaves the client unregistered."""
    apps: list[FastAPI] = []
    servers = ExitStack()

    def make(*, register: bool = True, **overrides: Any) -> AppClient:
        options: dict[str, Any] = {
            "verifier": VerifierConfig(
                issuer=issuer.url, audience=REPORTS_AUDIENCE, resource=PUBLIC_URL, scopes_supported=("reports:read",)
            ),
            "issuer_internal_url": issuer.url,
            "data_dir": tmp_path / "reports",
            "profile_api_url": profile_api.url,
            "timeout": 1.0,
            # Tokens fetched at the first call, so each test counts the issuer's requests itself.
            "token_prefetch": False,
            **overrides,
        }
        app = create_app(ReportsSettings(**options))
        apps.append(app)
        if register:
            jwks = json.dumps(profile_of(app).tokens.jwks)
            issuer.register(REPORTS_CLIENT, jwks, audience=PROFILE_AUDIENCE, scope="profile")
        return AppClient(app, servers.enter_context(serve_asgi(app)))

    yield make
    servers.close()
    for app in apps:
        verifier_fastapi.protection(app).close()  # its background threads
        verifier_fastapi.protection(app).jwks.session.close()
        profile_of(app).session.close()
        profile_of(app).tokens.session.close()


@pytest.fixture
def client(make_app: AppFactory) -> AppClient:
    """A client of a reports app whose own client is registered at the issuer."""
    return make_app()


@pytest.fixture
def token_for(issuer: Issuer, other_rsa_key: rsa.RSAPrivateKey) -> TokenFactory:
    """Return a client-credentials token of a freshly registered client, for `audience` with `scope`."""

    def mint(*, audience: str = REPORTS_AUDIENCE, scope: str = "reports:read") -> str:
        client_id = f"batch-{uuid.uuid4().hex[:8]}"
        issuer.register(client_id, jwks_json(other_rsa_key), audience=audience, scope=scope)
        tokens = ServiceTokens(
            client_id=client_id,
            key=other_rsa_key,
            token_url=f"{issuer.url}/token",
            issuer=issuer.url,
            resource=audience,
            scope=scope,
        )
        try:
            return tokens.token()
        finally:
            tokens.session.close()

    return mint


def profile_of(app: FastAPI) -> ProfileApi:
    """Return the reports app's client of the profile API."""
    api: ProfileApi = app.state.profile_api
    return api


def bearer(token: str) -> dict[str, str]:
    """Return the header that sends a bearer token."""
    return {"Authorization": f"Bearer {token}"}
