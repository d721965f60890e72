"""Public discovery: the JWKS (RFC 7517), server metadata (RFC 8414), liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from issuer import extensions, oidc, statuslist
from jwt_verifier.dpop import SUPPORTED_ALGORITHMS as DPOP_ALGORITHMS

log = logging.getLogger(__name__)

bp = Blueprint("wellknown", __name__)

GRANT_TYPES = [
    "authorization_code",
    "refresh_token",
    "password",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
]


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """Publish the public halves of the next, active and retiring keys."""
    keys = extensions.current().keys
    try:
        # Read fresh: a key another worker has just begun signing with must be here already.
        published = keys.published(fresh=True)
    except (OperationalError, InterfaceError) as exc:
        # The database is down: no key can begin signing here without it, so the last snapshot
        # still holds what this replica signs with, and verifiers can go on refreshing meanwhile
        # (a balancer sends them to a replica that reaches the database while there is one).
        published = keys.last_published()
        if not published:
            raise
        log.warning("jwks served from the last snapshot", extra={"fields": {"error": type(exc.orig).__name__}})
    response = jsonify(keys=published)
    response.headers["Cache-Control"] = f"public, max-age={extensions.current().settings.jwks_max_age}"
    return response


@bp.get("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    """Describe the issuer's endpoints and what it supports (RFC 8414)."""
    return _cached(_oauth_metadata())


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """Describe the issuer as an OpenID Provider (OpenID Connect Discovery 1.0 section 3)."""
    return _cached(oidc.provider_metadata(_oauth_metadata()))


def _cached(document: dict[str, Any]) -> Response:
    response = jsonify(document)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def _oauth_metadata() -> dict[str, Any]:
    url = extensions.current().settings.url
    document: dict[str, Any] = {
        "issuer": url,
        "jwks_uri": f"{url}/.well-known/jwks.json",
        "authorization_endpoint": f"{url}/authorize",
        "token_endpoint": f"{url}/token",
        "revocation_endpoint": f"{url}/revoke",
        "grant_types_supported": [
            grant for grant in GRANT_TYPES if grant != "password" or extensions.current().settings.password_grant
        ],
        # RFC 8628 section 4 (issuer.device)
        "device_authorization_endpoint": f"{url}/device_authorization",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        # /revoke authenticates a client as /token does (RFC 7009 section 2.1); `none` is a public client's.
        "revocation_endpoint_auth_methods_supported": ["none", "private_key_jwt", "client_secret_basic"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),  # RFC 9449 section 5.1
    }
    introspection = current_app.extensions.get("issuer.introspection")
    if introspection is not None and introspection.enabled:
        document["introspection_endpoint"] = f"{url}/introspect"
        document["introspection_endpoint_auth_methods_supported"] = ["client_secret_basic"]
    lists = current_app.extensions.get(statuslist.EXTENSION)
    if lists is not None and lists.enabled:  # ISSUER_STATUS_LISTS
        # draft-ietf-oauth-status-list-21 section 9: where the lists live tokens refer to are listed.
        document["status_list_aggregation_endpoint"] = f"{url}/statuslists"
    return document


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is alive (liveness: cheap, and true while the database is down)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 while the issuer reaches its database (what a load balancer checks); 503 otherwise."""
    with extensions.current().database.reading() as conn:
        conn.execute(text("SELECT 1"))  # unreachable: the app's handler answers 503 with Retry-After
    return jsonify(status="ready")
