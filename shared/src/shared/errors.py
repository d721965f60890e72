"""The services' JSON error pages: their own protocol errors, the verifier library's errors and Werkzeug's, one shape.

Every error leaves as `{"error", "error_description"}` JSON (RFC 6749 section 5.2 and RFC 6750
section 3 share it) with its status and headers, never cached. `ApiError` is the services'
root for their own protocol errors; the verifier library's errors (`JwtVerifierError`) carry
their meaning themselves and are rendered by the same handler. Werkzeug's HTTP exceptions
are rendered the same way, and anything unexpected becomes a logged 500 with a generic body,
never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from jwt_verifier.errors import RETRY_AFTER_SECONDS, JwtVerifierError

log = logging.getLogger(__name__)

# Error codes for HTTP statuses raised by the framework itself (Werkzeug and Flask, Starlette).
ERROR_CODES = {
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
    """A protocol error of a service with its code, HTTP status and response headers."""

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


def error_response(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> Response:
    """Build a JSON error response that is never cached."""
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers.update(headers or {})
    response.headers["Cache-Control"] = "no-store"
    return response


def _render_api_error(exc: ApiError) -> Response:
    return exc.to_response()


def _render_library_error(exc: JwtVerifierError) -> Response:
    return error_response(exc.status, exc.error, exc.description, exc.response_headers())


def _render_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        original = exc.original_exception if isinstance(exc, InternalServerError) else None
        log.error("server error", exc_info=original, extra={"fields": {"status": status}})
        return error_response(status, ERROR_CODES.get(status, "server_error"), "The server hit an unexpected error.")
    headers = {k: v for k, v in exc.get_headers() if k.lower() not in {"content-type", "content-length"}}
    description = exc.description or exc.name
    return error_response(status, ERROR_CODES.get(status, "invalid_request"), description, headers)


def init_app(app: Flask) -> None:
    """Render every error of the app as JSON; unhandled exceptions arrive as a 500 HTTPException."""
    app.register_error_handler(ApiError, _render_api_error)
    app.register_error_handler(JwtVerifierError, _render_library_error)
    app.register_error_handler(HTTPException, _render_http_exception)
