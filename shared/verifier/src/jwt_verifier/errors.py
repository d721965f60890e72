"""The one exception hierarchy of the verifier and of the services built on it, and the one handler that renders it.

Every error carries its meaning: HTTP status, OAuth error code and headers (RFC 6749 section 5.2
and RFC 6750 section 3 share the `{"error", "error_description"}` shape). Callers catch a class,
never read a status back. Werkzeug's HTTP exceptions are rendered the same way, and anything
unexpected becomes a logged 500 with a generic body, never a traceback.

    ApiError                      any protocol error (400 invalid_request unless told otherwise)
    ├── BearerError               RFC 6750 section 3: answered with a `WWW-Authenticate: Bearer` challenge
    │   ├── MissingToken          401, no error code: no token was sent (section 3.1)
    │   ├── InvalidRequest        400 invalid_request: the token was sent in a forbidden way
    │   ├── InsufficientScope     403 insufficient_scope
    │   └── InvalidToken          401 invalid_token: the one "bad token" branch
    │       ├── TokenExpired      the token was valid but its `exp` has passed (a refresh may help)
    │       └── UnknownKey        the token names a `kid` the issuer does not publish
    └── VerificationUnavailable   503 temporarily_unavailable: ours to fix, not the client's
        └── KeysUnavailable       no verification key could be loaded from the issuer yet
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

# Error codes for HTTP statuses raised by Werkzeug or Flask itself.
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    503: "temporarily_unavailable",
}


class ApiError(Exception):
    """A protocol error with its code, HTTP status and response headers."""

    status = 400
    error = "invalid_request"

    def __init__(
        self,
        description: str,
        *,
        error: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        if error is not None:
            self.error = error
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    def to_response(self) -> Response:
        """Render the error as JSON with its status and headers; a 503 always says when to retry."""
        headers = self.headers
        if self.status == 503:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **headers}
        return error_response(self.status, self.error, self.description, headers)


REALM = "jwt-split"
RETRY_AFTER_SECONDS = 5


def bearer_challenge(
    error: str | None = None,
    description: str | None = None,
    scope: str | None = None,
    *,
    resource_metadata: str | None = None,
) -> str:
    """Return an RFC 6750 section 3 `WWW-Authenticate` value (with RFC 9728 section 5.1's `resource_metadata`)."""
    params = [f'realm="{REALM}"']
    for name, value in (
        ("error", error),
        ("error_description", description),
        ("scope", scope),
        ("resource_metadata", resource_metadata),
    ):
        if value:
            # Our own fixed messages; still, a quote or backslash must not end the quoted-string.
            params.append(f'{name}="{value.replace(chr(92), "").replace(chr(34), chr(39))}"')
    return "Bearer " + ", ".join(params)


class BearerError(ApiError):
    """An error of a protected resource (RFC 6750 section 3), with its `Bearer` challenge."""

    status = 401
    challenge_error: str | None = None

    def __init__(self, description: str, *, scope: str | None = None) -> None:
        self.scope = scope
        super().__init__(description)
        self.headers["WWW-Authenticate"] = self.challenge()

    def challenge(self, resource_metadata: str | None = None) -> str:
        """Return this error's challenge, pointing at the API's RFC 9728 metadata when given."""
        # Without an error code (no token sent, section 3.1) the challenge says nothing more.
        detail = self.description if self.challenge_error else None
        return bearer_challenge(self.challenge_error, detail, self.scope, resource_metadata=resource_metadata)

    def to_response(self, resource_metadata: str | None = None) -> Response:
        """Render the error as JSON with its challenge (naming the metadata URL when given)."""
        headers = {**self.headers, "WWW-Authenticate": self.challenge(resource_metadata)}
        return error_response(self.status, self.error, self.description, headers)


class MissingToken(BearerError):
    """No token was sent (section 3.1: no error code in the challenge)."""

    error = "unauthorized"

    def __init__(self, description: str = "send an access token as 'Authorization: Bearer <token>'") -> None:
        super().__init__(description)


class InvalidRequest(BearerError):
    """The request carries the token in a way RFC 6750 forbids."""

    status = 400
    error = challenge_error = "invalid_request"


class InsufficientScope(BearerError):
    """The token is valid but lacks a scope the resource needs."""

    status = 403
    error = challenge_error = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this resource needs the '{scope}' scope", scope=scope)


class InvalidToken(BearerError):
    """The token must be refused; the message is one of our fixed texts, safe to send."""

    error = challenge_error = "invalid_token"


class TokenExpired(InvalidToken):
    """The token was valid but its `exp` has passed."""


class UnknownKey(InvalidToken):
    """The token names a `kid` the issuer does not publish; `kid` is kept for the log only."""

    def __init__(self, kid: str) -> None:
        super().__init__("the token was signed with a key the issuer does not publish")
        self.kid = kid[:128]


class VerificationUnavailable(ApiError):
    """A token cannot be checked right now (the issuer is down or answered nonsense): a 503."""

    status = 503
    error = "temporarily_unavailable"

    def __init__(self, reason: str) -> None:
        # The reason is for the log; the client learns only that it should retry.
        super().__init__(
            "tokens cannot be verified right now; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class KeysUnavailable(VerificationUnavailable):
    """No verification key could be loaded: the issuer has not been reachable yet."""


def error_response(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> Response:
    """Build a JSON error response that is never cached."""
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers.update(headers or {})
    response.headers["Cache-Control"] = "no-store"
    return response


def _render_api_error(exc: ApiError) -> Response:
    return exc.to_response()


def _render_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        original = exc.original_exception if isinstance(exc, InternalServerError) else None
        log.error("server error", exc_info=original, extra={"fields": {"status": status}})
        return error_response(status, _CODES.get(status, "server_error"), "The server hit an unexpected error.")
    headers = {k: v for k, v in exc.get_headers() if k.lower() not in {"content-type", "content-length"}}
    description = exc.description or exc.name
    return error_response(status, _CODES.get(status, "invalid_request"), description, headers)


def init_app(app: Flask) -> None:
    """Render every error of the app as JSON; unhandled exceptions arrive as a 500 HTTPException."""
    app.register_error_handler(ApiError, _render_api_error)
    app.register_error_handler(HTTPException, _render_http_exception)
