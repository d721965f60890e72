"""The protected API and the health endpoints, protected with the verifier library like any API."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from jwt_verifier.flask import BearerAuth
from shared import readiness

bp = Blueprint("api", __name__)

ACCESS_COOKIE = "rs_access"  # the browser login's HttpOnly copy of the access token
# The API is GET-only and the cookie SameSite=Lax, so the cookie needs no CSRF token.
auth = BearerAuth(cookie=ACCESS_COOKIE)


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/me")
@auth.require()
def me() -> Response:
    """Return who the token is for, its scope and all its verified claims."""
    claims = g.claims
    return _private(jsonify(sub=claims["sub"], scope=claims.get("scope", ""), claims=claims))


@bp.get("/api/admin")
@auth.require(scope="admin")
def admin() -> Response:
    """An endpoint only tokens with the `admin` scope may use."""
    return _private(jsonify(sub=g.claims["sub"], message="welcome, administrator"))


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is alive, whatever the issuer does."""
    return jsonify(status="ok")


# Ready once every worker holds the issuer's verification keys; 503 until then.
bp.get("/readyz")(readiness.readiness)
