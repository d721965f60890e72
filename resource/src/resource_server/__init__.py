"""The jwt-split resource server: verifies issuer-signed tokens locally and holds no secret."""

from __future__ import annotations

from flask import Flask

from resource_server import api, pages, protector
from resource_server.introspection import IntrospectingVerifier
from resource_server.jwks import JwksClient
from resource_server.oauth_client import IssuerClient
from resource_server.settings import ResourceSettings
from shared import logs, web
from shared.verifier import TokenVerifier, Verifier
from shared.web import STATIC_DIR


def create_app(settings: ResourceSettings | None = None) -> Flask:
    """Build the resource app: JWKS client, verifier, protector and routes."""
    settings = settings or ResourceSettings.from_env()
    logs.configure("resource", settings.log_level)
    app = Flask(__name__, static_folder=STATIC_DIR)
    # Tokens travel in headers; a body is never needed, so keep any that arrives small.
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024

    jwks = JwksClient(settings)
    verifier: TokenVerifier
    if settings.verification == "introspection":
        verifier = IntrospectingVerifier(settings)
    else:
        verifier = Verifier(
            jwks,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            max_token_bytes=settings.max_token_bytes,
            cache_size=settings.token_cache_size,
        )
    app.extensions["resource.settings"] = settings
    app.extensions["resource.jwks"] = jwks
    app.extensions["resource.issuer_client"] = IssuerClient(settings)
    app.extensions["resource.verifier"] = verifier

    if settings.jwks_prefetch:
        jwks.prefetch()

    web.init_app(app)
    protector.init_app(app, verifier)
    app.register_blueprint(api.bp)
    pages.init_app(app, settings)
    return app
