"""The protected API and the health endpoints."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Response, current_app, g, jsonify

from resource_server.jwks import JwksClient
from resource_server.protector import require

bp = Blueprint("api", __name__)


def _jwks() -> JwksClient:
    return cast(JwksClient, current_app.extensions["resource.jwks"])


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/me")
@require()
def me() -> Response:
    """Return who the token is for, its scope and all its verified claims."""
    claims = g.claims
    return _private(jsonify(sub=claims["sub"], scope=claims.get("scope", ""), claims=claims))


@bp.get("/api/admin")
@require("admin")
def admin() -> Response:
    """An endpoint only tokens with the `admin` scope may use."""
    return _private(jsonify(sub=g.claims["sub"], message="welcome, administrator"))


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is alive, whatever the issuer does."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    """Ready once verification keys are held; 503 until then."""
    jwks = _jwks()
    if jwks.ensure_loaded():
        return jsonify(status="ready", kids=jwks.kids)
    return jsonify(status="not ready", reason="no verification keys loaded from the issuer yet"), 503
