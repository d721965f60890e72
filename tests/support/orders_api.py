"""The README's tiny orders API, in Flask and in FastAPI, as the verifier's integration tests build it."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from flask import Flask, g

from jwt_verifier import VerifierConfig
from jwt_verifier.fastapi import BearerAuth as FastApiAuth
from jwt_verifier.fastapi import Claims, readiness, require_scope
from jwt_verifier.flask import BearerAuth as FlaskAuth
from tests.support.tokens import ISSUER

AUDIENCE = "orders-api"
RESOURCE = "https://orders.example"


def orders_config(jwks_url: str, /, **options: Any) -> VerifierConfig:
    """Return the orders API's verifier settings: keys from `jwks_url` (unless `options` say otherwise) on first need."""
    config = VerifierConfig(
        issuer=ISSUER,
        audience=AUDIENCE,
        resource=RESOURCE,
        jwks_url=jwks_url,
        scopes_supported=("orders:read", "orders:write"),
        jwks_cooldown=0.0,
        jwks_prefetch=False,
    )
    return dataclasses.replace(config, **options)


def flask_app(config: VerifierConfig) -> Flask:
    """Build the README's whole Flask integration: an API with one protected view."""
    app = Flask(__name__)
    auth = FlaskAuth(config)
    auth.init_app(app)

    @app.get("/orders")
    @auth.require(scope="orders:read")
    def orders() -> dict[str, Any]:
        return {"sub": g.claims["sub"]}

    return app


def fastapi_app(config: VerifierConfig) -> FastAPI:
    """Build the README's whole FastAPI integration: an API with one protected route and an open one."""
    app = FastAPI()
    FastApiAuth(config).init_app(app)
    app.add_api_route("/readyz", readiness)

    @app.get("/orders")
    def orders(claims: Annotated[Claims, Depends(require_scope("orders:read"))]) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"status": "ok"}

    return app
