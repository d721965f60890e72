"""The protected API and the health endpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, current_app, g, jsonify, request

from resource_server.jwks import JwksClient, KeysUnavailable, UnknownKey
from resource_server.rfc6750 import InsufficientScope, InvalidTokenError, MissingToken, bearer_token
from shared.errors import ApiError
from shared.verifier import InvalidToken, Verifier

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

F = TypeVar("F", bound=Callable[..., Any])


def _verifier() -> Verifier:
    return cast(Verifier, current_app.extensions["resource.verifier"])


def _jwks() -> JwksClient:
    return cast(JwksClient, current_app.extensions["resource.jwks"])


ACCESS_COOKIE = "rs_access"


def authenticate() -> dict[str, Any]:
    """Verify the request's token and return its claims, or raise the RFC 6750 error.

    The token comes from the Authorization header, or else from the HttpOnly cookie the
    browser login set (a GET-only API under SameSite=Lax needs no CSRF token).
    """
    token = bearer_token(request) or request.cookies.get(ACCESS_COOKIE)
    if token is None:
        raise MissingToken()
    return verify(token)


def verify(token: str) -> dict[str, Any]:
    """Verify a token and return its claims, or raise the RFC 6750 (or 503) error."""
    try:
        claims = _verifier().verify(token)
    except InvalidToken as exc:
        log.info("token refused", extra={"fields": {"reason": str(exc)}})
        raise InvalidTokenError(str(exc)) from exc
    except UnknownKey as exc:
        log.info("token refused", extra={"fields": {"reason": "unknown kid", "kid": str(exc)[:128]}})
        raise InvalidTokenError("the token was signed with a key the issuer does not publish") from exc
    except KeysUnavailable as exc:
        log.warning("no verification keys; cannot verify", extra={"fields": {"reason": str(exc)}})
        raise ApiError(
            "verification keys are not available yet; try again shortly",
            error="temporarily_unavailable",
            status=503,
            headers={"Retry-After": "5"},
        ) from exc
    return claims


def requires(scope: str | None = None) -> Callable[[F], F]:
    """Require a valid access token, and the given scope if any; claims go to `g.claims`."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            claims = authenticate()
            if scope is not None and scope not in str(claims.get("scope", "")).split():
                log.info("scope missing", extra={"fields": {"sub": claims["sub"], "needed": scope}})
                raise InsufficientScope(scope)
            g.claims = claims
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/me")
@requires()
def me() -> Response:
    """Return who the token is for, its scope and all its verified claims."""
    claims = g.claims
    return _private(jsonify(sub=claims["sub"], scope=claims.get("scope", ""), claims=claims))


@bp.get("/api/admin")
@requires("admin")
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
