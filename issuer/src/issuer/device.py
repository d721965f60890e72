"""The device authorization grant (RFC 8628): how a command-line tool logs a user in without their password.

- `POST /device_authorization` (section 3.1): a client, public or confidential (authenticated
  as at `/token`), gets a device code, a user code and where the user should go. Scope and
  `resource` are decided as for every other grant: what the client may ask of the API, and a
  request that could give nothing of it is refused (`invalid_scope`), never issued empty.
- `/device` (section 3.3): the user logs in (the login form of issuer.browser), types the user
  code (or arrives with it in `verification_uri_complete`, and confirms it: section 5.4's
  remote phishing), sees the named client and the scopes, and approves or denies.
- `/token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code` (sections 3.4, 3.5):
  `authorization_pending`, `slow_down` (the interval grows by 5 seconds for this and every later
  poll), `access_denied`, `expired_token`; an approved code is exchanged once.

User codes (section 6.1): 8 characters of "BCDFGHJKLMNPQRSTVWXZ" (no vowels: no words; no
digits or look-alikes), shown as XXXX-XXXX, read back case-insensitively without dashes or
spaces: 20^8 (about 2^34.5) codes, valid for minutes. Section 5.1: guessing is limited by the
password limits of issuer.ratelimit (a wrong code counts as a failed password check for the
address), and only a logged-in user can type codes at all. Both codes are stored as SHA-256
hashes; the device code is 256 random bits. The store is issuer.device_codes.
"""

from __future__ import annotations

import logging
from typing import Any, cast
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from issuer import browser, dpop, extensions, oauth, oidc
from issuer.clients import DEVICE_CODE, Client
from issuer.db import Database
from issuer.device_codes import MAX_TYPED, DeviceCodes, Request, display, normalise
from issuer.opaque import secret_hash
from issuer.protocol import OAuthError, PageError
from issuer.ratelimit import client_address, limiter, note_failed_password, password_limits
from issuer.users import User, UserError, parse_scope
from shared import audit, metrics

log = logging.getLogger(__name__)

bp = Blueprint("device", __name__)


def current() -> DeviceCodes:
    """Return the device codes store of the app handling this request."""
    return cast(DeviceCodes, current_app.extensions["issuer.device"])


# -- the device authorization endpoint (section 3.1) --------------------------------------------


@bp.post("/device_authorization")
@limiter.limit(
    lambda: extensions.current().settings.device_authorization_rate_limit,
    key_func=client_address,
    methods=["POST"],
    on_breach=lambda _limit: metrics.RATE_LIMITED.labels("device-authorization").inc(),
)
def device_authorization() -> Response:
    """Start a device authorization: the device code, the user code and where the user goes."""
    try:
        return _device_authorization()
    except OAuthError as exc:
        metrics.DEVICE_AUTHORIZATIONS.labels("authorization", exc.error).inc()
        raise


def _device_authorization() -> Response:
    params = oauth._form()
    client = oauth._authenticated_client(params)
    if DEVICE_CODE not in client.grant_types:
        raise OAuthError("the client may not use the device authorization grant", error="unauthorized_client")
    # No token is issued here: a DPoP-only API is enforced at the poll, which carries the proof.
    api = oauth._requested_api(params, client)
    requested = params.get("scope")
    allowed = client.narrow(api.scopes)
    if requested is not None and oidc.is_openid(requested):
        allowed |= client.narrow(frozenset({oidc.OPENID}) | (oidc.IDENTITY_SCOPES - api.scopes))
    scope = oauth._for_api(oauth._scope(requested, allowed), api)
    settings = extensions.current().settings
    device_code, user_code = current().issue(
        client.client_id, scope, api.audience, ttl=settings.device_code_ttl, interval=settings.device_poll_interval
    )
    metrics.DEVICE_AUTHORIZATIONS.labels("authorization", "issued").inc()
    audit.emit("device.authorization_issued", client=client.client_id)
    log.info("device authorization issued", extra={"fields": {"client_id": client.client_id, "scope": scope}})
    verification_uri = f"{settings.url}/device"
    response = jsonify(
        device_code=device_code,
        user_code=display(user_code),
        verification_uri=verification_uri,
        verification_uri_complete=f"{verification_uri}?{urlencode({'user_code': display(user_code)})}",
        expires_in=settings.device_code_ttl,
        interval=settings.device_poll_interval,
    )
    response.headers.update(oauth.NO_STORE)
    return response


# -- the token endpoint's device_code grant (sections 3.4, 3.5) ---------------------------------


def device_code_grant(params: dict[str, str], client: Client) -> Response:
    """Answer a device's poll: an error while there is nothing to give, then the tokens, once."""
    device_code = oauth._required(params, "device_code")
    with extensions.current().database.transaction():
        polled = current().poll(device_code, client.client_id)
        if polled.grant is not None:
            # Narrowed like a code exchange: the registrations may have changed since the approval.
            # Refused here, the transaction rolls back and the code stays unspent.
            grant, _ = oauth._narrowed(polled.grant, client, params.get("resource"), None, "this device code")
            grant = oauth.with_login(grant, polled.session_hash)  # the approving login, kept by the family
            refresh_token = extensions.current().refresh_tokens.issue(grant, dpop_jkt=dpop.bound_to(client))
    if polled.grant is None:
        # The token request is one unit that a failure rolls back: keep when it was polled (and any
        # slow_down), or a device polling too fast would never be told to slow down (section 3.5).
        extensions.current().database.keep()
        if polled.error not in {"authorization_pending", "slow_down"}:
            log.info("device code refused", extra={"fields": {"reason": polled.error, "client_id": client.client_id}})
        metrics.DEVICE_AUTHORIZATIONS.labels("poll", polled.error).inc()
        raise OAuthError(polled.description, error=polled.error or "invalid_grant")
    metrics.DEVICE_AUTHORIZATIONS.labels("poll", "exchanged").inc()
    audit.emit("device.exchanged", subject=grant.username, subject_id=grant.user_id, client=client.client_id)
    return oauth._token_response(grant, refresh_token, session_hash=polled.session_hash)


# -- the verification page (section 3.3) --------------------------------------------------------


def _page(template_args: dict[str, Any], status: int = 200) -> Response:
    response = make_response(render_template("device.html", **template_args), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _entry(user_code: str = "", error: str | None = None) -> Response:
    return _page({"step": "enter", "user_code": user_code, "error": error}, 400 if error else 200)


@bp.get("/device")
def verify() -> Any:
    """Ask for the user code (prefilled from `verification_uri_complete`), once the user has logged in."""
    typed = request.args.get("user_code", "")[:MAX_TYPED]
    if browser.current_user() is None:
        session["device"] = {"user_code": typed}
        return redirect(url_for("browser.login"), code=302)
    remembered = (session.pop("device", None) or {}).get("user_code", "")
    code = normalise(typed or remembered)
    return _entry(display(code) if code else "")


def _lookup(typed: str) -> tuple[Request, Client]:
    """Return the pending request of a typed user code and its client; a failure counts against the limits."""
    code = normalise(typed)
    found = current().pending(code) if code else None
    client = extensions.current().clients.get(found.client_id) if found else None
    if found is None or client is None:
        note_failed_password()  # section 5.1: guessing user codes spends the address's budget
        metrics.DEVICE_AUTHORIZATIONS.labels("verification", "unknown_code").inc()
        log.info("device user code refused", extra={"fields": {"reason": "unknown, expired or decided"}})
        raise _WrongCode(typed)
    return found, client


class _WrongCode(Exception):
    def __init__(self, typed: str) -> None:
        super().__init__("unknown user code")
        self.typed = typed


@bp.post("/device")
@password_limits()
def confirm() -> Any:
    """Check the typed user code and show what the named client asks for."""
    user = browser.current_user()
    if user is None:
        return redirect(url_for("device.verify"), code=303)
    try:
        found, client = _lookup(request.form.get("user_code", ""))
    except _WrongCode as exc:
        return _entry(exc.typed[:MAX_TYPED], "That code is not valid, or it has expired. Check it and try again.")
    code = normalise(request.form.get("user_code", "")) or ""
    return _page(
        {
            "step": "confirm",
            "user_code": display(code),
            "client": client.name,
            "scopes": _granted(found, client, user).split(),  # what allowing gives, not all that was asked
            "api": found.audience,
            "username": user.username,
        }
    )


def _granted(found: Request, client: Client, user: User) -> str:
    """Return what an approval grants: the scopes asked for that the user and the client may have ("" for none)."""
    api = extensions.current().apis.get(found.audience)
    if api is None:
        return ""
    try:
        requested = parse_scope(found.scope)
    except UserError:
        return ""
    granted = oidc.granted_scopes(requested, client.narrow(user.scopes & api.scopes), api.scopes, client)
    if not granted & api.scopes and oidc.OPENID not in granted:
        return ""
    return " ".join(sorted(granted))


@bp.post("/device/decision")
@password_limits()
def decide() -> Any:
    """Record the user's approval or denial of the request their user code names."""
    user = browser.current_user()
    if user is None:
        return redirect(url_for("device.verify"), code=303)
    action = request.form.get("action", "")
    if action not in {"approve", "deny"}:
        raise PageError("Invalid request", "Choose to allow or deny the device.")
    try:
        found, client = _lookup(request.form.get("user_code", ""))
    except _WrongCode as exc:
        return _entry(exc.typed[:MAX_TYPED], "That code is not valid, or it has expired. Check it and try again.")
    scope = _granted(found, client, user) if action == "approve" else ""
    # Nothing of the API to give: denied, never an empty token (RFC 9700 section 2.3).
    approved, refused = bool(scope), action == "approve" and not scope
    sid = session.get("sid")
    session_hash = secret_hash(sid) if isinstance(sid, str) else None
    if not current().decide(
        found.device_code_hash, approved=approved, user_id=user.id, scope=scope, session_hash=session_hash
    ):
        return _entry("", "That code is not valid, or it has expired. Check it and try again.")
    result = "approved" if approved else "denied"
    metrics.DEVICE_AUTHORIZATIONS.labels("verification", result).inc()
    audit.emit(f"device.{result}", subject=user.username, subject_id=user.id, client=client.client_id)
    log.info(f"device authorization {result}", extra={"fields": {"sub": user.id, "client_id": client.client_id}})
    if refused:
        text = f"You have none of the permissions {client.name} asks for: the device was not signed in."
        return _page({"step": "done", "heading": "Not allowed", "text": text})
    if approved:
        text = f"{client.name} is now signed in as {user.username}. You can return to your device."
        return _page({"step": "done", "heading": "Device approved", "text": text})
    return _page({"step": "done", "heading": "Device denied", "text": f"{client.name} was not signed in."})


def init_app(app: Flask, database: Database) -> None:
    """Register the device grant's routes and store, and make the token endpoint accept its grant type."""
    app.extensions["issuer.device"] = DeviceCodes(database)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(device_authorization)  # a client's back channel, no cookies (as /token)
    app.register_blueprint(bp)
