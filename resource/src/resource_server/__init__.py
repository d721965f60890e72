"""The jwt-split resource server: verifies issuer-signed tokens locally and holds no secret."""

from __future__ import annotations

from flask import Flask

from jwt_verifier import TokenVerifier
from resource_server import api, pages
from resource_server.introspection import IntrospectingVerifier
from resource_server.oauth_client import IssuerClient
from resource_server.settings import ResourceSettings
from shared import logs, readiness, web
from shared.web import STATIC_DIR


def create_app(settings: ResourceSettings | None = None) -> Flask:
    """Build the resource app: the verifier library's protection, the API and the pages."""
    settings = settings or ResourceSettings.from_env()
    logs.configure("resource", settings.log_level)
    app = Flask(__name__, static_folder=STATIC_DIR)
    # Tokens travel in headers; a body is never needed, so keep any that arrives small.
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024

    app.extensions["resource.settings"] = settings
    app.extensions["resource.issuer_client"] = IssuerClient(settings)
    web.init_app(app)
    # Local verification by default; RESOURCE_VERIFICATION=introspection asks the issuer instead.
    introspecting: TokenVerifier | None = None
    if settings.verification == "introspection":
        introspecting = IntrospectingVerifier(settings)
    api.auth.init_app(app, settings.verifier, verifier=introspecting)
    readiness.init_app(app)
    app.register_blueprint(api.bp)
    pages.init_app(app, settings)
    return app
