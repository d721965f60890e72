"""The protected API and the health endpoints, protected with the verifier library like any API.

A browser logged in here may call the API with its access cookie (no header). The browser
login's tokens are DPoP-bound to the session's key (`resource_server.session_key`), which
the browser holds in the cookie beside: so the cookie is accepted with that key, and the token
alone, sent as a bearer token from anywhere else, is refused.

`/api/admin` wants more than the `admin` scope: a multi-factor login (RFC 9470 step-up,
`acr_values`); a token of a password-only login gets 401 `insufficient_user_authentication`
with `acr_values="multi-factor"` in its challenge, and the page `/admin` (resource_server.pages)
sends the browser back to the issuer for that login.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, g, jsonify, request

from jwt_verifier.dpop_scheme import bound_jkt
from jwt_verifier.flask import BearerAuth, protection
from jwt_verifier.stepup import StepUp, step_up
from resource_server.session_key import KEY_COOKIE, check_binding, decode
from shared import readiness
from shared.dpop_client import ServerNonces

bp = Blueprint("api", __name__)

ACCESS_COOKIE = "rs_access"  # the browser login's HttpOnly copy of the access token
# The API is GET-only and the cookie SameSite=Lax, so the cookie needs no CSRF token.
auth = BearerAuth(cookie=ACCESS_COOKIE)

F = TypeVar("F", bound=Callable[..., Any])

ADMIN_SCOPE = "admin"
ADMIN_ACR_VALUES = ("multi-factor",)  # issuer.assurance's level for two factors


def require(scope: str | None = None, *, acr_values: Iterable[str] | None = None) -> Callable[[F], F]:
    """Require what `auth.require` does; a token from the access cookie is checked against the session's key."""
    demand = step_up(acr_values)

    def decorate(view: F) -> F:
        by_header = auth.require(scope, acr_values=acr_values)(view)

        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = request.cookies.get(ACCESS_COOKIE)
            if request.headers.getlist("Authorization") or not token:
                return by_header(*args, **kwargs)
            g.claims = _cookie_claims(token, scope, demand)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def _cookie_claims(token: str, scope: str | None, demand: StepUp | None = None) -> dict[str, Any]:
    protector = protection().protector
    key = decode(request.cookies.get(KEY_COOKIE), ServerNonces())

    def bind(claims: Mapping[str, Any]) -> None:
        if bound_jkt(claims) is not None:
            check_binding(claims, key)
        elif protector.dpop is not None:
            protector.dpop.check_bearer(claims)  # a bearer token, as any other
        # without a DPoP policy the protector refuses only bound bearer tokens; this one is not

    return protector.validate(token, bind, lambda claims: protector.authorize(claims, scope, demand))


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/me")
@require()
def me() -> Response:
    """Return who the token is for, its scope and all its verified claims."""
    claims = g.claims
    return _private(jsonify(sub=claims["sub"], scope=claims.get("scope", ""), claims=claims))


def admin_answer(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Return what `/api/admin` answers a token that passed its checks (the page `/admin` shows it too)."""
    return {"sub": claims["sub"], "message": "welcome, administrator", "acr": claims.get("acr")}


@bp.get("/api/admin")
@require(scope=ADMIN_SCOPE, acr_values=ADMIN_ACR_VALUES)
def admin() -> Response:
    """An endpoint only tokens with the `admin` scope of a multi-factor login may use (RFC 9470)."""
    return _private(jsonify(admin_answer(g.claims)))


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is alive, whatever the issuer does."""
    return jsonify(status="ok")


# Ready once every worker holds the issuer's verification keys; 503 until then.
bp.get("/readyz")(readiness.readiness)
