"""The jwt-split resource server: verifies issuer-signed tokens locally and holds no secret."""

from __future__ import annotations

from flask import Flask

from resource_server import api, pages
from resource_server.introspection import IntrospectingVerifier
from resource_server.jwks import JwksClient
from resource_server.oauth_client import IssuerClient
from resource_server.settings import ResourceSettings
from shared import logs, web
from shared.verifier import Verifier
from shared.web import STATIC_DIR


def create_app(settings: ResourceSettings | None = None) -> Flask:
    """Build the resource app: JWKS client, verifier and routes."""
    settings = settings or ResourceSettings.from_env()
    logs.configure("resource", settings.log_level)
    app = Flask(__name__, static_folder=STATIC_DIR)
    # Tokens travel in headers; a body is never needed, so keep any that arrives small.
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024

    jwks = JwksClient(
        settings.jwks_url,
        timeout=settings.jwks_timeout,
        max_bytes=settings.jwks_max_bytes,
        default_ttl=settings.jwks_default_ttl,
        min_ttl=settings.jwks_min_ttl,
        max_ttl=settings.jwks_max_ttl,
        cooldown=settings.jwks_cooldown,
    )
    app.extensions["resource.settings"] = settings
    app.extensions["resource.jwks"] = jwks
    app.extensions["resource.issuer_client"] = IssuerClient(
        public_issuer=settings.issuer,
        internal_issuer=settings.issuer_internal_url,
        client_id=settings.client_id,
        redirect_uri=settings.redirect_uri,
        scope=settings.scope,
        timeout=settings.issuer_timeout,
    )
    app.extensions["resource.verifier"] = (
        IntrospectingVerifier(
            settings.introspection_url,
            client_id=settings.introspection_client_id,
            secret=settings.introspection_secret,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            max_token_bytes=settings.max_token_bytes,
            timeout=settings.issuer_timeout,
        )
        if settings.verification == "introspection"
        else Verifier(
            jwks,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            max_token_bytes=settings.max_token_bytes,
            cache_size=settings.token_cache_size,
        )
    )

    if settings.jwks_prefetch:
        jwks.prefetch()

    web.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    return app
