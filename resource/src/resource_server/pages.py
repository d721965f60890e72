"""The resource's web page and its side of the browser login (authorization code + PKCE).

No token ever appears in a URL or where JavaScript could read it: the access and refresh
tokens live in HttpOnly, SameSite=Lax cookies of the resource's own (Secure over HTTPS).
The resource holds no secret, so the login cookie carries the `state` and PKCE verifier as
random values that only this browser has seen; `/callback` requires the `state` to match.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request
from werkzeug.wrappers import Response

from resource_server.api import ACCESS_COOKIE, verify
from resource_server.oauth_client import IssuerClient, IssuerError
from resource_server.settings import ResourceSettings
from shared.errors import ApiError
from shared.verifier import TokenExpired

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)

REFRESH_COOKIE = "rs_refresh"
LOGIN_COOKIE = "rs_login"


def _settings() -> ResourceSettings:
    return cast(ResourceSettings, current_app.extensions["resource.settings"])


def _issuer() -> IssuerClient:
    return cast(IssuerClient, current_app.extensions["resource.issuer_client"])


def _set_cookie(response: Response, name: str, value: str, max_age: int | None, path: str = "/") -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="Lax",
        secure=_settings().secure_cookies,
    )


def _store_tokens(response: Response, tokens: dict[str, Any]) -> None:
    expires_in = tokens.get("expires_in")
    _set_cookie(response, ACCESS_COOKIE, tokens["access_token"], expires_in if isinstance(expires_in, int) else None)
    if isinstance(tokens.get("refresh_token"), str):
        _set_cookie(response, REFRESH_COOKIE, tokens["refresh_token"], None)


def _forget_tokens(response: Response) -> None:
    secure = _settings().secure_cookies
    for name in (ACCESS_COOKIE, REFRESH_COOKIE):
        response.delete_cookie(name, path="/", httponly=True, samesite="Lax", secure=secure)


class KeysNotLoaded(Exception):
    """The cookie cannot be checked yet: no verification keys (the issuer has not answered)."""


def _claims_from_cookie() -> tuple[dict[str, Any] | None, bool]:
    """Return the cookie token's claims, and whether it merely expired (so a refresh may help)."""
    token = request.cookies.get(ACCESS_COOKIE)
    if not token:
        return None, request.cookies.get(REFRESH_COOKIE) is not None
    try:
        return verify(token), False
    except ApiError as exc:
        if exc.status == 503:
            raise KeysNotLoaded from exc
        return None, isinstance(exc.__cause__, TokenExpired)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = current_app.make_response((render_template(template, **context), status))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def index() -> Response:
    """Show who is logged in and their token's claims, or a link to log in."""
    try:
        claims, expired = _claims_from_cookie()
    except KeysNotLoaded:
        # Keep the cookies: an issuer outage must not log anyone out.
        return _page(
            "index.html", 503, claims=None, error="Your login cannot be checked right now. Please try again shortly."
        )
    refreshed: dict[str, Any] | None = None
    # Only an expired token is renewed; a tampered one logs the browser out.
    if claims is None and expired and request.cookies.get(REFRESH_COOKIE):
        try:
            refreshed = _issuer().refresh(request.cookies[REFRESH_COOKIE])
            claims = verify(refreshed["access_token"])
        except (IssuerError, ApiError):
            refreshed, claims = None, None
    if claims is None:
        response = _page("index.html", claims=None)
        if request.cookies.get(ACCESS_COOKIE) or request.cookies.get(REFRESH_COOKIE):
            _forget_tokens(response)
        return response
    expires_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claims["exp"]))
    response = _page(
        "index.html",
        claims=claims,
        expires_at=expires_at,
        expires_in=max(0, int(claims["exp"] - time.time())),
    )
    if refreshed is not None:
        _store_tokens(response, refreshed)
    return response


@bp.get("/login")
def login() -> Response:
    """Start the authorization code flow: send the browser to the issuer."""
    flow = _issuer().authorization_request()
    response = redirect(flow.url, code=302)
    _set_cookie(response, LOGIN_COOKIE, f"{flow.state}.{flow.verifier}", 600, path="/callback")
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_failed(message: str, status: int = 400) -> Response:
    response = _page("index.html", status, claims=None, error=message)
    response.delete_cookie(
        LOGIN_COOKIE, path="/callback", httponly=True, samesite="Lax", secure=_settings().secure_cookies
    )
    return response


@bp.get("/callback")
def callback() -> Response:
    """Finish the flow: check `state` (and `iss`), exchange the code, keep the tokens in cookies."""
    state, _, verifier = request.cookies.get(LOGIN_COOKIE, "").partition(".")
    if not state or not hmac.compare_digest(state, request.args.get("state", "")):
        log.info("login callback refused", extra={"fields": {"reason": "state mismatch"}})
        return _login_failed(
            "The login could not be completed (it expired or did not start here). Please log in again."
        )
    if request.args.get("iss") != _settings().issuer:  # RFC 9207: our issuer always sends it
        return _login_failed("The login answer came from an unexpected issuer.")
    if "error" in request.args:
        log.info("login refused by the issuer", extra={"fields": {"error": request.args.get("error", "")[:64]}})
        return _login_failed("The issuer did not grant the login. Please try again.")
    code = request.args.get("code", "")
    if not code:
        return _login_failed("The login answer had no code. Please log in again.")
    try:
        tokens = _issuer().exchange(code, verifier)
        claims = verify(tokens["access_token"])
    except IssuerError as exc:
        return _login_failed(f"The login could not be completed: {exc}.", 502)
    except ApiError as exc:
        return _login_failed(f"The issuer's token was refused: {exc.description}.", 502)
    log.info("browser login", extra={"fields": {"sub": claims["sub"], "jti": claims["jti"]}})
    response = redirect("/", code=303)
    _store_tokens(response, tokens)
    response.delete_cookie(
        LOGIN_COOKIE, path="/callback", httponly=True, samesite="Lax", secure=_settings().secure_cookies
    )
    return response


def _same_origin() -> bool:
    """Return whether a state-changing request comes from our own pages (CSRF defence)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in {"same-origin", "none"}
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    ours = urlsplit(_settings().public_url)
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)


@bp.post("/logout")
def logout() -> Response:
    """Log out: revoke the refresh token (ending the issuer session) and clear the cookies."""
    if not _same_origin():
        return _page("index.html", 403, claims=None, error="Logging out must start from this site.")
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if refresh_token:
        _issuer().revoke(refresh_token)
    response = redirect("/", code=303)
    _forget_tokens(response)
    log.info("browser logout")
    return response
