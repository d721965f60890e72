"""The Flask integration: protect an app's views with access tokens from one issuer.

    auth = BearerAuth(VerifierConfig(issuer=..., audience=..., resource=...))
    auth.init_app(app)

    @app.get("/orders")
    @auth.require(scope="orders:read")
    def orders() -> dict[str, str]:
        return {"sub": g.claims["sub"]}

    @app.post("/refunds")
    @auth.require(scope="orders:write", acr_values=["multi-factor"], max_age=300)  # RFC 9470 step-up
    def refund() -> dict[str, str]: ...

`init_app` builds the JWKS client, the verifier and the protector for that app (in
`app.extensions["jwt_verifier"]`, see `protection()`), serves the RFC 9728 metadata, and
renders the library's errors as JSON: 401/403/400 with a `WWW-Authenticate: Bearer`
challenge that names the metadata URL, 503 with `Retry-After` when keys cannot be had.
`Authorization: DPoP <token>` with a `DPoP` proof (RFC 9449) is accepted too, checked against
the URL the client called: the public origin of `resource` and the request's path.

Flask has no shutdown hook: an app torn down while its process lives on (a test, a reload)
stops the background threads `init_app` started with `protection(app).close()`; a process
that exits need not (they are daemon threads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request

from jwt_verifier.config import VerifierConfig
from jwt_verifier.dpop_scheme import dpop_request
from jwt_verifier.errors import RETRY_AFTER_SECONDS, BearerError, JwtVerifierError, VerificationUnavailable
from jwt_verifier.protection import Protection, build
from jwt_verifier.rfc9728 import metadata, metadata_path
from jwt_verifier.stepup import step_up
from jwt_verifier.verifier import TokenVerifier

__all__ = ["BearerAuth", "Protection", "error_response", "protection", "readiness", "sent_target"]

F = TypeVar("F", bound=Callable[..., Any])

EXTENSION = "jwt_verifier"
METADATA_MAX_AGE = 300


def protection(app: Flask | None = None) -> Protection:
    """Return the protection of `app` (the current app by default)."""
    return cast(Protection, (app or current_app).extensions[EXTENSION])


class BearerAuth:
    """A Flask extension that verifies the access tokens of an API (RFC 6750, RFC 9068, RFC 9728).

    `cookie` names an HttpOnly cookie that may carry the token when no header does (see
    `ResourceProtector`). One extension object may protect several apps: what `init_app`
    builds is kept per app.
    """

    def __init__(
        self,
        config: VerifierConfig | None = None,
        *,
        cookie: str | None = None,
        app: Flask | None = None,
    ) -> None:
        self.config = config
        self._cookie = cookie
        if app is not None:
            self.init_app(app)

    def init_app(
        self, app: Flask, config: VerifierConfig | None = None, *, verifier: TokenVerifier | None = None
    ) -> None:
        """Build this app's JWKS client, verifier and protector; serve the metadata; render the errors.

        `config` overrides the one given to the constructor (an app factory knows it only
        then); `verifier` replaces local verification (introspection, say).
        """
        config = config or self.config
        if config is None:
            raise TypeError("BearerAuth needs a VerifierConfig, in the constructor or in init_app")
        found = build(config, cookie=self._cookie, verifier=verifier)
        app.extensions[EXTENSION] = found
        app.add_url_rule(metadata_path(config.resource), "jwt_verifier.metadata", _metadata, methods=["GET"])
        app.register_error_handler(BearerError, _render_bearer_error)
        app.register_error_handler(VerificationUnavailable, _render_unavailable)
        if config.jwks_prefetch:
            found.jwks.prefetch()

    def require(
        self,
        scope: str | None = None,
        *,
        acr_values: str | Iterable[str] | None = None,
        max_age: int | None = None,
    ) -> Callable[[F], F]:
        """Require a valid access token, and `scope` if given; the verified claims go to `g.claims`.

        `acr_values` (the token's `acr` must be one of them) and `max_age` (its `auth_time` at
        most that many seconds ago) demand a login strong or recent enough (RFC 9470): a token
        that falls short gets 401 `insufficient_user_authentication`, naming both in its challenge.
        """
        demand = step_up(acr_values, max_age)

        def decorate(view: F) -> F:
            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                found = protection()
                proofs = request.headers.getlist("DPoP")
                sent = sent_target() if proofs else None  # what a proof's `htu` is compared with
                dpop = dpop_request(
                    found.config.resource, request.method, request.script_root + request.path, proofs, sent
                )
                g.claims = found.protector.acquire(request, scope, dpop=dpop, step_up=demand)
                return view(*args, **kwargs)

            return cast(F, wrapper)

        return decorate


def sent_target() -> str | None:
    """Return the request target as the WSGI server received it (gunicorn's `RAW_URI`, else `REQUEST_URI`), if it says."""
    target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    return target if isinstance(target, str) else None


def readiness() -> Response:
    """Answer a readiness probe: 200 once verification keys are held, 503 with `Retry-After` until then."""
    jwks = protection().jwks
    if jwks.ensure_loaded():
        return jsonify(status="ready", kids=jwks.kids)
    response = jsonify(status="not ready", reason="no verification keys loaded from the issuer yet")
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _metadata() -> Response:
    response = jsonify(metadata(protection().config))
    response.headers["Cache-Control"] = f"public, max-age={METADATA_MAX_AGE}"
    return response


def error_response(exc: JwtVerifierError, resource_metadata: str | None = None) -> Response:
    """Render a library error as `{"error", "error_description"}` JSON with its status and headers, never cached."""
    response = jsonify(error=exc.error, error_description=exc.description)
    response.status_code = exc.status
    response.headers.update(exc.response_headers(resource_metadata))
    response.headers["Cache-Control"] = "no-store"
    return response


def _render_bearer_error(exc: BearerError) -> Response:
    return error_response(exc, protection().metadata_url)


def _render_unavailable(exc: VerificationUnavailable) -> Response:
    return error_response(exc)
