"""The browser side of the issuer: `/authorize` (RFC 6749 4.1 with PKCE), `/login`, `/logout`.

Client and redirect URI are checked first and exactly; when either is wrong the user sees an
error page and is never redirected (no open redirects). Other errors go back to the client's
registered redirect URI as RFC 6749 4.1.2.1 errors, with `state` and `iss` (RFC 9207).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, make_response, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from issuer import extensions, oidc
from issuer.apis import InvalidTarget
from issuer.clients import Client
from issuer.opaque import secret_hash
from issuer.ratelimit import note_failed_password, password_limits
from issuer.tokens import Grant
from issuer.users import User, UserError, parse_scope
from shared import audit, metrics
from shared.pkce import CHALLENGE
from shared.web import content_security_policy

log = logging.getLogger(__name__)

bp = Blueprint("browser", __name__)

AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "nonce",
)
MAX_NONCE_LENGTH = 255
LOGIN_FAILED = "The username or password is incorrect."


def page(heading: str, text: str, status: int = 200, *, error: bool = False, logout: bool = False) -> tuple[str, int]:
    """Render a short message page."""
    return render_template("message.html", heading=heading, text=text, error=error, logout=logout), status


def current_user() -> User | None:
    """Return the user of the browser's live login session, if any."""
    user_id = extensions.current().login_sessions.user_id(session.get("sid"))
    return extensions.current().users.get_by_id(user_id) if user_id else None


def _redirect_to_client(redirect_uri: str, **params: str | None) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in redirect_uri else "?"
    response = redirect(f"{redirect_uri}{separator}{query}", code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/authorize")
def authorize() -> Any:
    """Check the client and redirect URI, make sure the user is logged in, and issue a code."""
    args = {name: request.args.get(name) for name in AUTHORIZE_PARAMS}
    if any(len(request.args.getlist(name)) > 1 for name in AUTHORIZE_PARAMS):
        return page("Invalid request", "A parameter was sent more than once.", 400, error=True)
    client: Client | None = extensions.current().clients.get(args["client_id"] or "")
    if client is None or "authorization_code" not in client.grant_types:
        return page("Unknown application", "This application is not registered with the issuer.", 400, error=True)
    redirect_uri = args["redirect_uri"] or ""
    if redirect_uri not in client.redirect_uris:
        log.warning("authorize refused: unregistered redirect_uri", extra={"fields": {"client_id": client.client_id}})
        return page("Invalid redirect", "The redirect address is not registered for this application.", 400, error=True)

    issuer = extensions.current().settings.url
    state = args["state"]

    def deny(error: str, description: str) -> Response:
        return _redirect_to_client(redirect_uri, error=error, error_description=description, state=state, iss=issuer)

    if args["response_type"] != "code":
        return deny("unsupported_response_type", "only response_type=code is supported")
    if args["code_challenge_method"] != "S256" or not CHALLENGE.fullmatch(args["code_challenge"] or ""):
        return deny("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
    try:
        requested = parse_scope(args["scope"]) if args["scope"] is not None else None
    except UserError:
        return deny("invalid_scope", "the scope is malformed")
    nonce = args["nonce"]
    if nonce is not None and not (0 < len(nonce) <= MAX_NONCE_LENGTH and nonce.isprintable() and nonce.isascii()):
        return deny("invalid_request", f"nonce must be 1-{MAX_NONCE_LENGTH} printable ASCII characters")
    try:  # RFC 8707: the API the token is for, or the default API
        api = extensions.current().apis.choose(
            args["resource"], default=extensions.current().settings.audience, allowed=client.may_ask_for
        )
    except InvalidTarget as exc:
        return deny("invalid_target", str(exc))

    user = current_user()
    if user is None:
        session["authorize"] = {k: v for k, v in args.items() if v is not None}
        return redirect(url_for("browser.login"), code=302)

    granted = oidc.granted_scopes(requested, client.narrow(user.scopes & api.scopes), api.scopes, client)
    if requested and not granted:
        return deny("invalid_scope", "none of the requested scopes can be granted")
    grant = Grant(user.id, user.username, client.client_id, " ".join(sorted(granted)), api.audience)
    code = extensions.current().authorization_codes.issue(
        grant,
        redirect_uri=redirect_uri,
        challenge=args["code_challenge"] or "",
        session_hash=secret_hash(session["sid"]),
        nonce=nonce if oidc.is_openid(grant.scope) else None,
    )
    session.pop("authorize", None)
    log.info("issued authorization code", extra={"fields": {"sub": user.username, "client_id": client.client_id}})
    return _redirect_to_client(redirect_uri, code=code, state=state, iss=issuer)


def _login_page(error: str | None = None, username: str = "") -> Response:
    """Render the login form, naming the application that asked, if any.

    The form's submission ends, through redirects, at that application's redirect URI: the
    page's CSP `form-action` must allow its origin (checked at /authorize before it was kept).
    """
    pending = session.get("authorize") or {}
    client = extensions.current().clients.get(pending.get("client_id", ""))
    redirect_uri = pending.get("redirect_uri", "")
    html = render_template("login.html", client=client.name if client else None, error=error, username=username)
    response = make_response(html)
    if client is not None and redirect_uri in client.redirect_uris:
        parts = urlsplit(redirect_uri)
        response.headers["Content-Security-Policy"] = content_security_policy((f"{parts.scheme}://{parts.netloc}",))
    return response


@bp.route("/login", methods=["GET", "POST"])
@password_limits()
def login() -> Any:
    """Show the login form; on success, continue the pending authorization request."""
    if request.method == "GET":
        if current_user() and session.get("authorize"):
            return redirect(url_for("browser.authorize", **session["authorize"]), code=302)
        return _login_page()

    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    user = extensions.current().users.authenticate(username, password) if username and password else None
    if user is None:
        note_failed_password()
        metrics.LOGINS.labels("failure").inc()
        audit.emit(
            "login.failed",
            subject=extensions.current().users.known(username),
            client=(session.get("authorize") or {}).get("client_id"),
        )
        log.info("browser login failed", extra={"fields": {"reason": "bad credentials"}})
        return _login_page(LOGIN_FAILED, username[:64])

    pending = session.get("authorize")
    session.clear()  # a fresh session: nothing from before the login survives (no fixation)
    session["sid"] = extensions.current().login_sessions.create(user.id)
    session.permanent = True
    metrics.LOGINS.labels("success").inc()
    audit.emit("login.succeeded", subject=user.username, subject_id=user.id, client=(pending or {}).get("client_id"))
    log.info("browser login", extra={"fields": {"sub": user.username}})
    if pending:
        session["authorize"] = pending
        return redirect(url_for("browser.authorize", **pending), code=303)
    return page("Logged in", f"You are logged in as {user.username}.", logout=True)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    """End the issuer login session (GET asks first; the POST carries the CSRF token)."""
    if request.method == "GET":
        if current_user() is None:
            return page("Logged out", "You are not logged in.")
        return page("Log out", "End your session at the issuer?", logout=True)
    session_id = session.get("sid")
    if isinstance(session_id, str):
        # Ending the session also revokes the refresh tokens it produced.
        session_hash = secret_hash(session_id)
        with extensions.current().database.transaction():
            extensions.current().login_sessions.end(session_hash)
            extensions.current().refresh_tokens.revoke_session(session_hash)
    session.clear()
    return page("Logged out", "You have been logged out.")
