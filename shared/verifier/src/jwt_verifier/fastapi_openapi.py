"""The DPoP scheme (RFC 9449 section 7.1) in a FastAPI app's OpenAPI document, beside the bearer one.

FastAPI lists the bearer scheme (`bearerAuth`) on every route `require_scope` protects. The API
accepts a DPoP-bound token too, sent as `Authorization: DPoP <token>` with a `DPoP` proof
header: OpenAPI 3.0 names that pair an `http` scheme `DPoP` (the scheme RFC 9449 registers),
added here as a second way to call each such route, or the only one when the API requires
DPoP (`require_dpop`: bearer use refused). OpenAPI has no way to say "and a header signed for
this request", so the scheme's description says it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

BEARER = "bearerAuth"
DPOP = "dpopAuth"
DPOP_SCHEME: dict[str, str] = {
    "type": "http",
    "scheme": "DPoP",
    "description": (
        "A DPoP-bound access token from the issuer (`cnf.jkt`, RFC 9449), as `Authorization: DPoP <token>` "
        "with one `DPoP` header: a proof JWT signed by the token's key for this request's method and URL "
        "(`htm`, `htu`), with `ath` the token's hash, fresh `iat` and `jti`, and the API's nonce when it asks."
    ),
}


def document_dpop(app: FastAPI, *, required: bool) -> None:
    """Make the app's OpenAPI document offer the DPoP scheme wherever it offers the bearer one (alone if `required`)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    lock = threading.Lock()

    def openapi() -> dict[str, Any]:
        with lock:  # FastAPI builds the document once and caches it in `openapi_schema`
            if app.openapi_schema is None:
                _add_dpop(generate(), required=required)
            document: dict[str, Any] = app.openapi_schema or {}
            return document

    app.openapi = openapi  # type: ignore[method-assign]


def _add_dpop(document: dict[str, Any], *, required: bool) -> None:
    schemes = document.get("components", {}).get("securitySchemes", {})
    if BEARER not in schemes:
        return  # no protected route
    schemes[DPOP] = dict(DPOP_SCHEME)
    for path in document.get("paths", {}).values():
        for operation in path.values():
            security = operation.get("security") if isinstance(operation, dict) else None
            if security and {BEARER: []} in security:
                operation["security"] = [{DPOP: []}] if required else [*security, {DPOP: []}]
