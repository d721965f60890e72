"""The FastAPI (Starlette) integration: protect an API's routes with access tokens from one issuer.

    auth = BearerAuth(VerifierConfig(issuer=..., audience=..., resource=...))
    app = FastAPI()
    auth.init_app(app)

    @app.get("/orders")
    def orders(claims: Annotated[Claims, Depends(require_scope("orders:read"))]) -> dict[str, str]:
        return {"sub": claims["sub"]}

    # RFC 9470 step-up: the login must be multi-factor and at most 5 minutes old.
    refund_access = require_scope("orders:write", acr_values=["multi-factor"], max_age=300)

`init_app` builds the JWKS client, the verifier and the protector for that app (in
`app.state.jwt_verifier`, see `protection()`), serves the RFC 9728 metadata, and renders the
library's errors as JSON: 401/403/400 with a `WWW-Authenticate: Bearer` challenge (RFC 6750
section 3) that names the metadata URL (RFC 9728 section 5.1), 503 with `Retry-After` when
keys cannot be had; `Authorization: DPoP <token>` with a `DPoP` proof (RFC 9449) is accepted
too. `require_scope` is a dependency yielding the verified claims; it also puts
the bearer scheme in the app's OpenAPI document, its errors being ours (`auto_error=False`),
and `init_app` the DPoP scheme beside it (`jwt_verifier.fastapi_openapi`).

No JWKS fetch runs on the event loop: a token whose key is held is verified on the loop (a
signature check, tens of microseconds); one that needs a fetch (a new `kid`, no keys yet) is
verified in a worker thread, and a stale key set is refreshed in the background. The app's
shutdown (its lifespan's end) stops those background threads (`Protection.close`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from jwt_verifier.config import VerifierConfig
from jwt_verifier.dpop_scheme import dpop_request
from jwt_verifier.errors import RETRY_AFTER_SECONDS, BearerError, JwtVerifierError
from jwt_verifier.fastapi_openapi import document_dpop
from jwt_verifier.jwks import JwksClient
from jwt_verifier.loop import loop_thread, on_the_loop
from jwt_verifier.protection import Protection, build
from jwt_verifier.rfc9728 import metadata, metadata_path
from jwt_verifier.status import StatusFetchNeeded
from jwt_verifier.stepup import StepUp, step_up
from jwt_verifier.verifier import TokenVerifier

__all__ = ["BearerAuth", "Claims", "Protection", "bearer_scheme", "protection", "readiness", "require_scope"]

# The ASGI scope key under which a middleware that rewrites a request's method (HEAD run as GET)
# keeps the method the client sent: a DPoP proof's `htm` is checked against that one (RFC 9449 4.3).
METHOD_SCOPE_KEY = "jwt_verifier.method"

Claims = dict[str, Any]

STATE = "jwt_verifier"
METADATA_MAX_AGE = 300


class _FetchNeeded(JwtVerifierError):
    """The key is not held and the caller runs the event loop: verify in a worker thread instead.

    Never leaves this module: `require_scope` catches it.
    """


class _HeldKeysOnTheLoop:
    """A key source that, inside `loop_thread()` (the check on the loop), answers only from the keys held."""

    def __init__(self, jwks: JwksClient) -> None:
        self.jwks = jwks

    def get(self, kid: str) -> rsa.RSAPublicKey:
        """Return the key for `kid`; fetch (within the JWKS client's limits) unless inside `loop_thread()`."""
        key = self.jwks.held(kid)
        if key is not None:
            return key
        if on_the_loop():
            raise _FetchNeeded("the key must be fetched first")
        return self.jwks.get(kid)

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Hear of every change of the key set (the verifier purges its cache)."""
        self.jwks.subscribe(callback)


def protection(app: FastAPI) -> Protection:
    """Return the protection `init_app` installed on `app`."""
    found = getattr(app.state, STATE, None)
    if found is None:
        raise RuntimeError("jwt_verifier.fastapi: call BearerAuth.init_app(app) before serving requests")
    return cast(Protection, found)


class _BearerScheme(HTTPBearer):
    """The bearer scheme in the OpenAPI document; the token itself is read by the protector (RFC 6750)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        """Read nothing: `require_scope` reads the header and answers with our own errors."""
        return None


_SCHEME: dict[str, Any] = {
    "bearerFormat": "JWT",
    "scheme_name": "bearerAuth",
    "description": "An access token from the issuer (RFC 9068), as `Authorization: Bearer <token>` (RFC 6750).",
    "auto_error": False,
}
bearer_scheme = _BearerScheme(**_SCHEME)


class BearerAuth:
    """Protect a FastAPI app's routes with access tokens (RFC 6750, RFC 9068, RFC 9728).

    `cookie` names an HttpOnly cookie that may carry the token when no header does (see
    `ResourceProtector`).
    """

    def __init__(self, config: VerifierConfig | None = None, *, cookie: str | None = None) -> None:
        self.config = config
        self._cookie = cookie

    def init_app(
        self, app: FastAPI, config: VerifierConfig | None = None, *, verifier: TokenVerifier | None = None
    ) -> Protection:
        """Build this app's JWKS client, verifier and protector; serve the metadata; render the errors.

        `verifier` replaces local verification (introspection, say); it is called in a worker
        thread, as it may block.
        """
        config = config or self.config
        if config is None:
            raise TypeError("BearerAuth needs a VerifierConfig, in the constructor or in init_app")
        found = build(config, cookie=self._cookie, verifier=verifier, keys=_HeldKeysOnTheLoop)
        setattr(app.state, STATE, found)
        app.add_api_route(metadata_path(config.resource), _metadata, methods=["GET"], include_in_schema=False)
        app.add_exception_handler(JwtVerifierError, _render_error)
        document_dpop(app, required=config.require_dpop)  # the DPoP scheme beside the bearer one in /openapi.json
        _close_on_shutdown(app, found)
        if config.jwks_prefetch:
            found.jwks.prefetch()
        return found

    def require(
        self,
        scope: str | None = None,
        *,
        acr_values: str | Iterable[str] | None = None,
        max_age: int | None = None,
    ) -> Callable[..., Awaitable[Claims]]:
        """Return a dependency requiring a valid access token, and `scope` if given (see `require_scope`)."""
        return require_scope(scope, acr_values=acr_values, max_age=max_age)


def _close_on_shutdown(app: FastAPI, found: Protection) -> None:
    """Wrap the app's lifespan so that its shutdown stops the protection's background threads.

    The app's own lifespan (if any) runs inside, unchanged; `Protection.close` joins threads,
    so it runs in a worker thread, off the event loop.
    """
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(served: Any) -> AsyncIterator[Any]:
        try:
            async with inner(served) as state:
                yield state
        finally:
            await run_in_threadpool(found.close)

    app.router.lifespan_context = lifespan


def require_scope(
    scope: str | None = None,
    *,
    acr_values: str | Iterable[str] | None = None,
    max_age: int | None = None,
) -> Callable[..., Awaitable[Claims]]:
    """Return a dependency that yields the verified claims of the request's token, which must grant `scope`.

    Use it as `claims: Annotated[Claims, Depends(require_scope("orders:read"))]`; the app must have been
    given a `BearerAuth.init_app`. Refusals are raised as the library's errors and rendered by
    the handler `init_app` installs. `acr_values` and `max_age` demand a login strong or recent
    enough (RFC 9470): 401 `insufficient_user_authentication` otherwise, naming both in the challenge.
    """
    return _VerifiedClaims(scope, step_up(acr_values, max_age))


class _VerifiedClaims(HTTPBearer):
    """What `require_scope` returns: a dependency yielding the verified claims, and to OpenAPI the bearer scheme.

    Being the scheme itself, rather than depending on `bearer_scheme`, spares FastAPI one level
    of dependency solving on every request (about a tenth of a small endpoint's time).
    """

    def __init__(self, scope: str | None, demand: StepUp | None = None) -> None:
        super().__init__(**_SCHEME)
        self.scope = scope
        self.step_up = demand

    async def __call__(self, request: Request) -> Claims:  # type: ignore[override]
        """Return the claims of the request's verified token (on the loop when its key is held)."""
        found = protection(request.app)
        asgi = request.scope
        # The two headers read straight from the ASGI scope, whose names servers lower-case (as
        # Starlette's `Headers.getlist` reads them, without building its view of them).
        authorization: list[str] = []
        proofs: list[str] = []
        for name, value in asgi["headers"]:
            if name == b"authorization":
                authorization.append(value.decode("latin-1"))
            elif name == b"dpop":
                proofs.append(value.decode("latin-1"))
        cookies = request.cookies if found.protector.cookie is not None else None
        method = asgi.get(METHOD_SCOPE_KEY) or asgi["method"]
        # ASGI's `path` is the decoded path (root path included), as WSGI's is, and `raw_path` the
        # path as the client sent it, which a proof's `htu` names (`request.url.path` is neither).
        raw = asgi.get("raw_path") if proofs else None
        sent = raw.decode("latin-1") if isinstance(raw, bytes) else None
        dpop = dpop_request(found.config.resource, method, asgi["path"], proofs, sent)
        if found.local:
            try:
                with loop_thread():  # a key or status list not held yet is fetched off the loop
                    return found.protector.authenticate(
                        authorization, cookies, self.scope, dpop=dpop, step_up=self.step_up
                    )
            except (_FetchNeeded, StatusFetchNeeded):
                pass  # the key or the token's status list must be fetched: off the loop
        return await run_in_threadpool(
            functools.partial(
                found.protector.authenticate, authorization, cookies, self.scope, dpop=dpop, step_up=self.step_up
            )
        )


async def readiness(request: Request) -> JSONResponse:
    """Answer a readiness probe: 200 once verification keys are held, 503 with `Retry-After` until then."""
    jwks = protection(request.app).jwks
    ready = bool(jwks.kids) or await run_in_threadpool(jwks.ensure_loaded)
    if ready:
        return JSONResponse({"status": "ready", "kids": jwks.kids})
    return JSONResponse(
        {"status": "not ready", "reason": "no verification keys loaded from the issuer yet"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _metadata(request: Request) -> JSONResponse:
    document = cast(dict[str, Any], metadata(protection(request.app).config))
    return JSONResponse(document, headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE}"})


async def _render_error(request: Request, exc: Exception) -> Response:
    """Render a library error as `{"error", "error_description"}` JSON with its status and headers, never cached."""
    if not isinstance(exc, JwtVerifierError):  # pragma: no cover - registered for JwtVerifierError only
        raise exc
    resource_metadata = protection(request.app).metadata_url if isinstance(exc, BearerError) else None
    headers = {**exc.response_headers(resource_metadata), "Cache-Control": "no-store"}
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description}, status_code=exc.status, headers=headers
    )
