"""The protected API and the health endpoints, protected with the verifier library like any API.

A browser logged in here may call the API with its access cookie (no header). The browser
login's tokens are DPoP-bound to the session's key (`resource_server.session_key`), which
the browser holds in the cookie beside: so the cookie is accepted with that key, and the token
alone, sent as a bearer token from anywhere else, is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, g, jsonify, request

from jwt_verifier.dpop_scheme import bound_jkt
from jwt_verifier.errors import InsufficientScope
from jwt_verifier.flask import BearerAuth, protection
from resource_server.session_key import KEY_COOKIE, check_binding, decode
from shared import readiness
from shared.dpop_client import ServerNonces

bp = Blueprint("api", __name__)

ACCESS_COOKIE = "rs_access"  # the browser login's HttpOnly copy of the access token
# The API is GET-only and the cookie SameSite=Lax, so the cookie needs no CSRF token.
auth = BearerAuth(cookie=ACCESS_COOKIE)

F = TypeVar("F", bound=Callable[..., Any])


def require(scope: str | None = None) -> Callable[[F], F]:
    """Require what `auth.require` does; a token from the access cookie is checked against the session's key."""

    def decorate(view: F) -> F:
        by_header = auth.require(scope)(view)

        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = request.cookies.get(ACCESS_COOKIE)
            if request.headers.getlist("Authorization") or not token:
                return by_header(*args, **kwargs)
            g.claims = _cookie_claims(token, scope)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def _cookie_claims(token: str, scope: str | None) -> dict[str, Any]:
    protector = protection().protector
    key = decode(request.cookies.get(KEY_COOKIE), ServerNonces())

    def bind(claims: Mapping[str, Any]) -> None:
        if bound_jkt(claims) is not None:
            check_binding(claims, key)
        elif protector.dpop is not None:
            protector.dpop.check_bearer(claims)  # a bearer token, as any other
        # without a DPoP policy the protector refuses only bound bearer tokens; this one is not

    claims = protector.validate(token, bind)
    granted = str(claims.get("scope", "")).split()
    if protector.scopes and protector.scopes.isdisjoint(granted):
        raise InsufficientScope(" ".join(sorted(protector.scopes)))
    if scope is not None and scope not in granted:
        raise InsufficientScope(scope)
    return claims


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
@require(scope="admin")
def admin() -> Response:
    """An endpoint only tokens with the `admin` scope may use."""
    return _private(jsonify(sub=g.claims["sub"], message="welcome, administrator"))


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is alive, whatever the issuer does."""
    return jsonify(status="ok")


# Ready once every worker holds the issuer's verification keys; 503 until then.
bp.get("/readyz")(readiness.readiness)
