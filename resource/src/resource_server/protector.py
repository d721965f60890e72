"""Who a request is for: the one place the resource checks a token (like Authlib's ResourceProtector).

The API and the pages both ask here. The verifier behind it is local verification
(`shared.verifier.Verifier` with keys from the JWKS client) or the issuer's introspection
endpoint; both implement `shared.verifier.TokenVerifier` and raise the errors of
`shared.errors`, which carry their own status and challenge. This module logs why a token was
refused, once, and lets the errors pass on unchanged: the API's error handler renders them as
JSON, the pages catch the classes they care about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Request, current_app, g, request

from resource_server.rfc6750 import bearer_token
from shared.errors import InsufficientScope, InvalidToken, MissingToken, UnknownKey, VerificationUnavailable
from shared.verifier import TokenVerifier

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ACCESS_COOKIE = "rs_access"  # the browser login's HttpOnly copy of the access token


class ResourceProtector:
    """Verify the token a request carries and check the scope a resource needs."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def validate(self, token: str) -> dict[str, Any]:
        """Return the token's verified claims, or raise (and log) why not."""
        try:
            return self.verifier.verify(token)
        except UnknownKey as exc:
            log.info("token refused", extra={"fields": {"reason": "unknown kid", "kid": exc.kid}})
            raise
        except InvalidToken as exc:
            log.info("token refused", extra={"fields": {"reason": exc.description}})
            raise
        except VerificationUnavailable as exc:
            log.warning("cannot verify tokens now", extra={"fields": {"reason": str(exc)}})
            raise

    def acquire(self, req: Request, scope: str | None = None) -> dict[str, Any]:
        """Return the claims of the request's token, which must grant `scope` if given.

        The token comes from the Authorization header, or else from the HttpOnly cookie the
        browser login set (a GET-only API under SameSite=Lax needs no CSRF token).
        """
        token = bearer_token(req) or req.cookies.get(ACCESS_COOKIE)
        if token is None:
            raise MissingToken()
        claims = self.validate(token)
        if scope is not None and scope not in str(claims.get("scope", "")).split():
            log.info("scope missing", extra={"fields": {"sub": claims["sub"], "needed": scope}})
            raise InsufficientScope(scope)
        return claims


def init_app(app: Flask, verifier: TokenVerifier) -> None:
    """Protect the app's resources with this verifier."""
    app.extensions["resource.protector"] = ResourceProtector(verifier)


def protector() -> ResourceProtector:
    """Return the current app's protector."""
    return cast(ResourceProtector, current_app.extensions["resource.protector"])


def require(scope: str | None = None) -> Callable[[F], F]:
    """Require a valid access token, and the given scope if any; the claims go to `g.claims`."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.claims = protector().acquire(request, scope)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
