"""Per-request plumbing for an ASGI (FastAPI) service: trace context, request ids, access log, headers, metrics, JSON errors.

The ASGI counterpart of `shared.web` (and `shared.errors`' handler), so a FastAPI service
answers like the Flask ones: each request a server span continuing the caller's
`traceparent` (its context, like the request id, follows the request into worker threads),
an `X-Request-ID` on every answer (the caller's, when it is sane), `X-Content-Type-Options: nosniff`, one access-log line per request (the path only:
query strings can carry codes or tokens), the `jwt_split_http_*` metrics by route name, and
every error as `{"error", "error_description"}` JSON, never cached: the services' `ApiError`,
Starlette's HTTP exceptions, a request that fails validation (400), and anything unexpected
(a logged 500 with a generic body, never a traceback). The verifier library's errors are
rendered by `jwt_verifier.fastapi`.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from jwt_verifier import fastapi as verifier_fastapi
from jwt_verifier import observe
from jwt_verifier.errors import RETRY_AFTER_SECONDS
from shared import logs, metrics, readiness, tracing
from shared.errors import ERROR_CODES, ApiError
from shared.metrics import METHODS, UNMATCHED, PrometheusObserver

log = logging.getLogger("access")
errors_log = logging.getLogger("shared.errors")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestPlumbing:
    """ASGI middleware: request id, default headers, access log and request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection scope; only HTTP requests are counted and logged."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, b"x-request-id")
        request_id = supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        token = logs.REQUEST_ID.set(request_id)
        tracestate = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"tracestate") or None
        trace = tracing.begin_request(scope["method"], _header(scope, b"traceparent") or None, tracestate)
        started = time.perf_counter()
        status = 500
        error: BaseException | None = None
        counted = False

        def count() -> None:
            # Counted and logged as the answer starts, as Flask's after_request does: a caller
            # that has its answer can already see it counted.
            nonlocal counted
            counted = True
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "name", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            metrics.HTTP_REQUESTS.labels(endpoint, method, str(status)).inc()
            metrics.HTTP_DURATION.labels(endpoint).observe(elapsed)
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round(elapsed * 1000, 2),
            }
            log.info("request", extra={"fields": fields})

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers.setdefault("X-Content-Type-Options", "nosniff")
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not counted:
                count()  # no answer went through here: the server's own 500 follows
            route = getattr(scope.get("route"), "path", None)
            if route:
                tracing.name_request(scope["method"], route)
            tracing.end_request(trace, status, error)
            logs.REQUEST_ID.reset(token)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def error_response(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> Response:
    """Build a JSON error response that is never cached."""
    merged = {**(headers or {}), "Cache-Control": "no-store"}
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=merged)


async def _render_api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    headers = exc.headers
    if exc.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **headers}
    return error_response(exc.status, exc.error, exc.description, headers)


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    status = exc.status_code
    if status >= 500:
        errors_log.error("server error", extra={"fields": {"status": status}})
        return error_response(status, ERROR_CODES.get(status, "server_error"), "The server hit an unexpected error.")
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() not in {"content-type", "content-length"}}
    return error_response(status, ERROR_CODES.get(status, "invalid_request"), str(exc.detail), headers)


async def _render_invalid_request(request: Request, exc: Exception) -> Response:
    # The validation detail echoes the input back; say only where the request went wrong.
    where = ""
    if isinstance(exc, RequestValidationError) and exc.errors():
        where = " (" + ".".join(str(part) for part in exc.errors()[0].get("loc", ())) + ")"
    return error_response(400, "invalid_request", f"the request is not valid{where}")


async def _render_unexpected(request: Request, exc: Exception) -> Response:
    errors_log.error("server error", exc_info=exc, extra={"fields": {"status": 500}})
    return error_response(500, "server_error", "The server hit an unexpected error.")


def init_app(app: FastAPI) -> None:
    """Install the request plumbing, the JSON error handlers and the verifier's metrics on `app`."""
    observe.install(PrometheusObserver())
    tracing.trace_jwks_fetches()
    app.add_middleware(RequestPlumbing)
    app.add_exception_handler(ApiError, _render_api_error)
    app.add_exception_handler(HTTPException, _render_http_exception)
    app.add_exception_handler(RequestValidationError, _render_invalid_request)
    app.add_exception_handler(Exception, _render_unexpected)


def init_readiness(app: FastAPI, *, also: Callable[[], bool] | None = None) -> None:
    """Mark this worker ready once the verifier of `app` holds keys, and `also()` is true if given.

    See `shared.readiness.watch`; `readiness_probe` reads it for the whole service.
    """
    readiness.watch(verifier_fastapi.protection(app).jwks, also=also)


async def readiness_probe(request: Request) -> Response:
    """Answer a readiness probe: 200 when this worker and all its siblings hold keys, else 503 (shared.readiness)."""
    response = await verifier_fastapi.readiness(request)
    if response.status_code != 200:
        return response
    reason = readiness.siblings_waiting()
    if reason is None:
        return response
    return JSONResponse(
        {"status": "not ready", "reason": reason},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


# Swagger UI's script and stylesheet, from the swagger-ui-bundle package: served by the app
# itself, so /docs renders offline and needs no third origin.
SWAGGER_UI = Path(str(swagger_ui_path))
SWAGGER_VERSION = SWAGGER_UI.name  # swagger-ui-4.15.5: in the assets' paths, so they may be cached long
ASSET_MAX_AGE = 86400
_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8"}
_INIT_SCRIPT = "swagger-init.js"


def serve_docs(app: FastAPI, path: str = "/docs") -> None:
    """Serve Swagger UI for the app's `/openapi.json` at `path`, all of it from this origin, under a strict CSP.

    Build the app with `docs_url=None`. The page loads Swagger UI's script and stylesheet, and
    a script of ours that starts it, from `{path}/{SWAGGER_VERSION}/`: no inline script, so
    `script-src 'self'` and `style-src 'self'`; it fetches the OpenAPI document from this origin
    only and may not be framed.
    """
    # The Swagger UI bundled here (4.15) renders OpenAPI 3.0 documents only, and FastAPI writes
    # 3.1 by default; the documents of our routes use nothing 3.1 adds.
    app.openapi_version = "3.0.3"
    openapi_url = app.openapi_url or "/openapi.json"
    base = f"{path}/{SWAGGER_VERSION}"
    title = html.escape(f"{app.title} - Swagger UI")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
        f"<title>{title}</title>\n"
        '<link rel="icon" href="data:,">\n'  # no request for a favicon
        f'<link rel="stylesheet" href="{base}/swagger-ui.css">\n'
        '</head>\n<body>\n<div id="swagger-ui"></div>\n'
        f'<script src="{base}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{base}/{_INIT_SCRIPT}"></script>\n'
        "</body>\n</html>\n"
    )
    # FastAPI's settings for Swagger UI, with no badge from validator.swagger.io.
    settings = {
        "url": openapi_url,
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "showExtensions": True,
        "showCommonExtensions": True,
        "validatorUrl": None,
    }
    init = (
        f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(settings)}, "
        "{presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]}));\n"
    )
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    headers = {"Content-Security-Policy": csp, "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}
    cached = {"Cache-Control": f"public, max-age={ASSET_MAX_AGE}"}

    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    async def init_script() -> Response:
        return Response(init, media_type="text/javascript; charset=utf-8", headers=cached)

    app.add_api_route(path, docs, methods=["GET"], include_in_schema=False, name="docs")
    app.add_api_route(f"{base}/{_INIT_SCRIPT}", init_script, methods=["GET"], include_in_schema=False, name="docs.init")
    for name, media_type in _ASSETS.items():
        app.add_api_route(
            f"{base}/{name}",
            _asset(SWAGGER_UI / name, media_type),
            methods=["GET"],
            include_in_schema=False,
            name="docs.asset",
        )


def _asset(file: Path, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return FileResponse(file, media_type=media_type, headers={"Cache-Control": f"public, max-age={ASSET_MAX_AGE}"})

    return asset
