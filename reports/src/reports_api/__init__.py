"""The reports API: a FastAPI app protected with the jwt_verifier library, calling the first API with its own token.

It shows the two halves of service-to-service auth:
- as an API, it verifies tokens for its own audience (`jwt-split-reports`) locally, so a token
  for the profile API (`jwt-split-api`) is refused here, and the other way round;
- as a client, it gets tokens for the profile API with client credentials, signing in with
  `private_key_jwt`: its private key stays in its own data directory and the issuer fetches
  only the public half from `/client-jwks.json`. Those tokens are DPoP-bound (RFC 9449) to a
  second key kept there (`dpop-key.pem`), and each call to the profile API carries a proof.

    GET /api/report   (scope reports:read) who called, and what the profile API said to us
    GET /api/caller   (scope reports:read) who called, from the token alone

Served by gunicorn with uvicorn workers (shared.asgi_worker); its OpenAPI document is at
/openapi.json, rendered at /docs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import requests
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from jwt_verifier import VerifierConfig
from jwt_verifier.env import Variable, boolean, number, read, setting, upper, url, variables
from jwt_verifier.fastapi import BearerAuth, Claims, require_scope
from shared import asgi, logs, tracing
from shared.asgi_head import HeadAsGet
from shared.dpop_client import load_or_create_dpop_key
from shared.errors import ApiError
from shared.oauth_client import IssuerError, ServiceTokens, load_or_create_key, read_answer_headers
from shared.settings import Environ, issuer_internal_url_setting, verifier_from_env

log = logging.getLogger(__name__)
router = APIRouter()


PREFIX = "REPORTS_"
DATA_DIR = Path("var/reports")  # relative to the working directory

# The reports API's own defaults for the verifier's settings (`REPORTS_ISSUER`, `REPORTS_AUDIENCE`,
# `REPORTS_PUBLIC_URL`, `REPORTS_LEEWAY`, `REPORTS_JWKS_*`, ...); the others are the library's.
VERIFIER_DEFAULTS: dict[str, Any] = {
    "issuer": "http://localhost:8000",
    "audience": "jwt-split-reports",
    "resource": "http://localhost:8002",
    "scopes_supported": ("reports:read",),
}


def _default_verifier() -> VerifierConfig:
    return VerifierConfig(**VERIFIER_DEFAULTS)


@dataclass(frozen=True)
class ReportsSettings:
    """Everything the reports API is configured with (`REPORTS_*` variables; see docs/configuration.md)."""

    verifier: VerifierConfig = field(default_factory=_default_verifier)
    issuer_internal_url: str = issuer_internal_url_setting(
        "the issuer as the reports API reaches it: the JWKS and the token endpoint"
    )
    client_id: str = setting("CLIENT_ID", "reports-api", doc="its client id at the issuer")
    data_dir: Path = setting("DATA_DIR", DATA_DIR, parse=Path, doc="where its client key is kept")
    profile_api_url: str = setting("PROFILE_API_URL", "http://localhost:8001", parse=url, doc="the profile API")
    profile_api_audience: str = setting("PROFILE_API_AUDIENCE", "jwt-split-api", doc="the resource it asks for")
    profile_api_scope: str = setting("PROFILE_API_SCOPE", "profile", doc="the scope it asks for")
    timeout: float = setting("TIMEOUT", 5.0, parse=number(0.1), doc="timeout of its calls")
    # Each worker fetches its service token at start and renews it ahead of need.
    token_prefetch: bool = setting("TOKEN_PREFETCH", True, parse=boolean, doc="fetch the service token at start")
    log_level: str = setting("LOG_LEVEL", "INFO", parse=upper, doc="log level")
    # The `htu` of its DPoP proofs to the profile API: the URL the profile API knows itself by
    # (its RESOURCE_PUBLIC_URL), which differs from PROFILE_API_URL behind compose's network.
    profile_api_public_url: str = setting(
        "PROFILE_API_PUBLIC_URL",
        "",
        parse=url,
        shown="$REPORTS_PROFILE_API_URL",  # empty: the same as `profile_api_url`
        doc="the profile API's public URL (its RESOURCE_PUBLIC_URL): the htu of DPoP proofs",
    )

    @property
    def issuer(self) -> str:
        """Return the issuer's public URL: the expected `iss`, and the `aud` of its client assertions."""
        return self.verifier.issuer

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> ReportsSettings:
        """Build settings from the environment, naming the variable of any bad value."""
        env = os.environ if environ is None else environ
        verifier = verifier_from_env(cls, PREFIX, env, VERIFIER_DEFAULTS)
        return read(cls, env, PREFIX, given={"verifier": verifier}, context={"issuer": verifier.issuer})

    @classmethod
    def variables(cls) -> list[Variable]:
        """List every variable the reports API reads, with its default as docs/configuration.md writes it."""
        shown = {"jwks_url": "$REPORTS_ISSUER_INTERNAL_URL/.well-known/jwks.json"}
        return [
            *variables(VerifierConfig, PREFIX, defaults=VERIFIER_DEFAULTS, shown=shown),
            *variables(cls, PREFIX),
        ]


class UpstreamError(ApiError):
    """The profile API did not give an answer we can use (a 502: our upstream failed us)."""

    status = 502
    error = "bad_gateway"


TOO_SLOW = "the profile API did not answer in time; try again shortly"


class UpstreamUnavailable(UpstreamError):
    """The profile API could not be reached: a 503, try again."""

    status = 503
    error = "temporarily_unavailable"


@dataclass(frozen=True)
class ProfileApi:
    """The first API, called with the reports API's own client-credentials token."""

    url: str
    tokens: ServiceTokens
    timeout: float
    session: requests.Session
    public_url: str = ""  # the profile API's own idea of its URL (DPoP's `htu`); `url` if empty

    def me(self, deadline: float | None = None) -> dict[str, Any]:
        """Return the claims the profile API verified in our token; one retry with a fresh token after a 401.

        `deadline` (a `time.monotonic()` value) bounds all calls together: each waits at most
        what is left of it, and none starts past it. With DPoP-bound tokens each call carries
        a fresh proof, and a call the profile API answers with `use_dpop_nonce` is made once
        more with its nonce.
        """
        for attempt in (1, 2):
            token = self.tokens.token()
            status, body = self._call(token, deadline)
            if status != 401 or attempt == 2:
                break
            self.tokens.forget(token)  # expired or revoked under us: one more try with a new token
        if status >= 500 or status == 429:
            raise UpstreamUnavailable(f"the profile API is busy or failing (HTTP {status})")
        if status != 200:
            raise UpstreamError(f"the profile API refused our service token (HTTP {status})")
        claims = body.get("claims") if isinstance(body, dict) else None
        if not isinstance(claims, dict):
            raise UpstreamError("the profile API answered without the claims it verified")
        return claims

    def _call(self, token: str, deadline: float | None) -> tuple[int, Any]:
        dpop = self.tokens.dpop
        proof_url = f"{self.public_url or self.url}/api/me"
        for attempt in (1, 2):
            timeout = self.timeout if deadline is None else min(self.timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise UpstreamUnavailable(TOO_SLOW)
            if dpop is None:
                headers = {"Authorization": f"Bearer {token}"}
            else:
                headers = {"Authorization": f"DPoP {token}", "DPoP": dpop.proof("GET", proof_url, token)}
            try:
                # Bounded in size and time, no redirects: the answer of a peer is input like any other.
                status, answer_headers, body = read_answer_headers(
                    self.session, "GET", f"{self.url}/api/me", timeout=timeout, headers=headers
                )
            except requests.RequestException as exc:
                raise UpstreamUnavailable("the profile API could not be reached; try again shortly") from exc
            if dpop is None:
                break
            if attempt == 1 and dpop.nonce_asked(proof_url, status, answer_headers, body):
                continue  # the profile API wants its nonce in the proof: once more with it
            dpop.remember_nonce(proof_url, answer_headers)
            break
        return status, body


def _profile_api(request: Request) -> ProfileApi:
    api: ProfileApi = request.app.state.profile_api
    return api


Caller = Annotated[Claims, Depends(require_scope("reports:read"))]


@router.get("/api/report", name="reports.report")
async def report(claims: Caller, request: Request) -> JSONResponse:
    """Report who called, and who the profile API saw when this service called it with its own token."""
    # The token keeper and the call are blocking (requests): in a worker thread, never on the event loop.
    # One deadline, REPORTS_TIMEOUT, over the service token and both tries: the calls within
    # it; a token fetch that outlasts it is left to finish in its thread (bounded by its own timeout).
    api = _profile_api(request)
    try:
        with anyio.fail_after(api.timeout):
            seen = await anyio.to_thread.run_sync(api.me, time.monotonic() + api.timeout, abandon_on_cancel=True)
    except TimeoutError as exc:
        raise UpstreamUnavailable(TOO_SLOW) from exc
    # Keys in sorted order: the same bytes as the Flask app answered.
    return JSONResponse(
        {
            "caller": {"aud": claims["aud"], "scope": claims.get("scope", ""), "sub": claims["sub"]},
            "profile_api": {"aud": seen.get("aud"), "scope": seen.get("scope", ""), "sub": seen.get("sub")},
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/api/caller", name="reports.caller")
async def caller(claims: Caller) -> JSONResponse:
    """Say who called, from the verified token alone (no call to the profile API)."""
    return JSONResponse(
        {"aud": claims["aud"], "scope": claims.get("scope", ""), "sub": claims["sub"]},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/client-jwks.json", name="reports.client_jwks")
async def client_jwks(request: Request) -> JSONResponse:
    """Publish this service's public client key: the issuer checks its client assertions with it."""
    return JSONResponse(_profile_api(request).tokens.jwks, headers={"Cache-Control": "public, max-age=300"})


@router.get("/healthz", name="reports.healthz")
async def healthz() -> dict[str, str]:
    """Answer while the process is alive."""
    return {"status": "ok"}


# Ready once every worker holds the issuer's verification keys (and, with prefetch, a service
# token); 503 until then.
router.add_api_route("/readyz", asgi.readiness_probe, methods=["GET"], name="reports.readyz")


def _holds_token(tokens: ServiceTokens) -> bool:
    """Return whether a service token is at hand (fetching one if none is and the issuer may be asked)."""
    try:
        tokens.token()
    except IssuerError:
        return False
    return True


def create_app(settings: ReportsSettings | None = None) -> FastAPI:
    """Build the reports API."""
    settings = settings or ReportsSettings.from_env()
    logs.configure("reports", settings.log_level)
    # No 307 from "/api/report/" to "/api/report": a redirect answers before auth, and clients resend tokens.
    app = FastAPI(title="jwt-split reports API", version="0.2.0", docs_url=None, redoc_url=None, redirect_slashes=False)
    app.add_middleware(HeadAsGet)  # innermost: the request plumbing logs and counts it as HEAD
    asgi.init_app(app)
    asgi.serve_docs(app)
    # The keys first: a bad key file fails here, before the verifier starts its background threads.
    client_key = load_or_create_key(settings.data_dir / "client-key.pem")
    dpop_key = load_or_create_dpop_key(settings.data_dir / "dpop-key.pem")
    BearerAuth(settings.verifier).init_app(app)
    tokens = ServiceTokens(
        client_id=settings.client_id,
        key=client_key,
        token_url=f"{settings.issuer_internal_url}/token",
        issuer=settings.issuer,
        resource=settings.profile_api_audience,
        scope=settings.profile_api_scope,
        timeout=settings.timeout,
        # Its tokens are DPoP-bound (RFC 9449) to a key beside its client key: a token that
        # leaks from its memory or logs is useless without that key.
        dpop=dpop_key,
    )
    if settings.token_prefetch:
        tokens.keep_fresh()  # every worker holds a token before its first call, and through an issuer outage
        # Ready once it holds one too: a call before would be refused while the token is retried.
        asgi.init_readiness(app, also=lambda: _holds_token(tokens))
    else:
        asgi.init_readiness(app)
    profile_api = ProfileApi(
        settings.profile_api_url,
        tokens,
        settings.timeout,
        tracing.session(),
        settings.profile_api_public_url or settings.profile_api_url,
    )
    app.state.profile_api = profile_api
    app.include_router(router)
    return app
