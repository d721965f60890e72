"""The browser side of the issuer: `/authorize` (RFC 6749 4.1 with PKCE), `/login`, `/logout`.

Client and redirect URI are checked first and exactly (`issuer.protocol.ClientRedirect`); when
either is wrong or repeated the user sees an error page (`PageError`) and is never redirected
(no open redirects). Other errors (`AuthorizationError`) go back to the client's registered
redirect URI as RFC 6749 4.1.2.1 errors, with `state` and `iss` (RFC 9207).

OpenID Connect Core 1.0 section 3.1.2.1 at `/authorize`: `prompt` (`none`, `login`, and
`consent`, which asks nothing: every client is first-party), `max_age`, `login_hint` and
`acr_values` (a session whose login reached none of the levels asked for, `issuer.assurance`,
logs in again, as for `prompt=login`; the login asks for whatever second factor the user has).
A login that a request forced satisfies that request: the retried `/authorize` it leads to
issues the code instead of asking again, and the tokens' `acr` says what the login reached
(less than asked when the user has no second factor: `acr_values` is voluntary).

A user with a passkey and no one-time codes cannot log in with the password alone: the page
says to use the passkey (audited `login.failed`, reason `passkey_required`; no failed
password is counted, the password was right).

A user with one-time codes (issuer.totp) gets a second page, `/login/code`, after a right
password: the login session, with `amr` `pwd otp mfa` (RFC 8176), begins only once the code (or
a recovery code) passed. Until then the browser's signed session cookie holds the user's id
and a deadline (`ISSUER_LOGIN_CODE_TTL`), which no page takes for a login.

`/logout` is also OpenID Connect RP-Initiated Logout 1.0's end-session endpoint. Its
`post_logout_redirect_uri` must be registered for the client exactly, or the user sees an
error page; the session the `id_token_hint` names ends without a question only when it is
the browser's own, otherwise the user confirms (a form with the CSRF token). A confirmation
ends the browser's own session, and the hinted one only when it belongs to the same user:
anyone may hold someone's ID token, even an expired one (RP-Initiated Logout 1.0 sections 2
and 6), so the hint never ends another person's session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, make_response, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask_wtf.csrf import CSRFProtect
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from issuer import assurance, dpop, extensions, oidc
from issuer.apis import InvalidTarget
from issuer.oidc import InvalidHint
from issuer.opaque import secret_hash
from issuer.protocol import AuthorizationError, ClientRedirect, PageError, client_redirect
from issuer.ratelimit import note_failed_password, password_limits
from issuer.sessions import public_id
from issuer.tokens import Grant
from issuer.totp import is_totp_code
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
    "prompt",
    "max_age",
    "login_hint",
    "acr_values",
    "dpop_jkt",
)
LOGOUT_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")
MAX_NONCE_LENGTH = 255
MAX_STATE_LENGTH = 1024
MAX_AGE_DIGITS = 10
MAX_ACR_VALUES_LENGTH = 255
MAX_USERNAME_LENGTH = 64
LOGIN_FAILED = "The username or password is incorrect."
CODE_FAILED = "The code is incorrect or was already used."
PASSKEY_REQUIRED = "This account signs in with a passkey: use the passkey button below."
SECOND_STEP_EXPIRED = "Your login took too long or was interrupted. Please log in again."
SECOND_STEP = "second_factor"  # the session key of a login waiting for its code
AFTER_LOGIN = "after_login"  # where a login started elsewhere than /authorize continues


def page(
    heading: str,
    text: str,
    *,
    logout: bool = False,
    logout_params: Mapping[str, str] | None = None,
    account: bool = False,
) -> Response:
    """Render a short message page; with `logout`, a form to log out (carrying `logout_params`).

    With `account`, links to the user's own pages (their passkeys). Error pages are
    `PageError`s, raised and rendered by `issuer.protocol`.
    """
    html = render_template(
        "message.html",
        heading=heading,
        text=text,
        error=False,
        logout=logout,
        logout_params=logout_params or {},
        account=account,
    )
    return make_response(html)


def current_user() -> User | None:
    """Return the user of the browser's live login session, if any."""
    user_id = extensions.current().login_sessions.user_id(session.get("sid"))
    return extensions.current().users.get_by_id(user_id) if user_id else None


@bp.get("/authorize")
def authorize() -> Any:
    """Check the client and redirect URI, make sure the user is logged in, and issue a code."""
    args = {name: request.args.get(name) for name in AUTHORIZE_PARAMS}
    repeated = [name for name in AUTHORIZE_PARAMS if len(request.args.getlist(name)) > 1]
    if {"client_id", "redirect_uri"} & set(repeated):
        raise PageError("Invalid request", "A parameter was sent more than once.")
    # A PageError unless the client and redirect URI can be trusted; from here on, errors go to the client.
    to = ClientRedirect.registered(
        extensions.current().clients.get(args["client_id"] or ""),
        args["redirect_uri"] or "",
        state=None if "state" in repeated else args["state"],  # which one would the client expect?
        iss=extensions.current().settings.url,
    )
    client = to.client

    if repeated:
        raise AuthorizationError(to, f"parameter {repeated[0]!r} was sent more than once")
    # OpenID Connect Core 1.0 section 6: no request objects here (discovery says so too).
    if "request" in request.args:
        raise AuthorizationError(to, "the request parameter is not supported", error="request_not_supported")
    if "request_uri" in request.args:
        raise AuthorizationError(to, "the request_uri parameter is not supported", error="request_uri_not_supported")
    if not args["response_type"]:  # RFC 6749 3.1: a parameter without a value is omitted
        raise AuthorizationError(to, "the 'response_type' parameter is required")
    if args["response_type"] != "code":
        raise AuthorizationError(to, "only response_type=code is supported", error="unsupported_response_type")
    if args["code_challenge_method"] != "S256" or not CHALLENGE.fullmatch(args["code_challenge"] or ""):
        raise AuthorizationError(to, "PKCE is required: send code_challenge with code_challenge_method=S256")
    try:
        requested = parse_scope(args["scope"]) if args["scope"] is not None else None
    except UserError as exc:
        raise AuthorizationError(to, "the scope is malformed", error="invalid_scope") from exc
    nonce = args["nonce"]
    if nonce is not None and not (0 < len(nonce) <= MAX_NONCE_LENGTH and nonce.isprintable() and nonce.isascii()):
        raise AuthorizationError(to, f"nonce must be 1-{MAX_NONCE_LENGTH} printable ASCII characters")
    if args["dpop_jkt"] is not None and not dpop.JKT.fullmatch(args["dpop_jkt"]):
        raise AuthorizationError(to, "dpop_jkt must be a JWK SHA-256 thumbprint, base64url (RFC 9449 section 10)")
    try:
        prompt = _prompt(args["prompt"])
        max_age = _max_age(args["max_age"])
        acr_values = _acr_values(args["acr_values"])
    except ValueError as exc:
        raise AuthorizationError(to, str(exc)) from exc
    try:  # RFC 8707: the API the token is for, or the default API
        api = extensions.current().apis.choose(
            args["resource"], default=extensions.current().settings.audience, allowed=client.may_ask_for
        )
    except InvalidTarget as exc:
        raise AuthorizationError(to, str(exc), error="invalid_target") from exc

    pending = {k: v for k, v in args.items() if v is not None}
    # A login this very request forced counts as fresh, whatever `prompt` and `max_age` say:
    # asking again would loop (max_age=0 is older than 0 seconds one second later).
    fresh = session.pop("logged_in_for", None) == pending
    session.pop("force_login", None)
    user = current_user()
    if user is None or (not fresh and ("login" in prompt or _not_enough(max_age, acr_values))):
        if "none" in prompt:
            raise AuthorizationError(to, "the user must log in", error="login_required")
        session["authorize"] = pending
        if user is not None:
            session["force_login"] = True
        return redirect(url_for("browser.login"), code=302)

    granted = oidc.granted_scopes(requested, client.narrow(user.scopes & api.scopes), api.scopes, client)
    if requested is not None and not granted:
        raise AuthorizationError(to, "none of the requested scopes can be granted", error="invalid_scope")
    if not granted & api.scopes and oidc.OPENID not in granted:  # no token for an API with none of its scopes
        raise AuthorizationError(
            to, f"none of the scopes of API {api.audience!r} can be granted here", error="invalid_scope"
        )
    grant = Grant(user.id, user.username, client.client_id, " ".join(sorted(granted)), api.audience)
    code = extensions.current().authorization_codes.issue(
        grant,
        redirect_uri=to.redirect_uri,
        challenge=args["code_challenge"] or "",
        session_hash=secret_hash(session["sid"]),
        nonce=nonce if oidc.is_openid(grant.scope) else None,
        dpop_jkt=args["dpop_jkt"],
    )
    session.pop("authorize", None)
    log.info("issued authorization code", extra={"fields": {"sub": user.id, "client_id": client.client_id}})
    return to.send(code=code)


def _prompt(value: str | None) -> frozenset[str]:
    """Return the `prompt` values of a request, or raise ValueError for an unusable combination."""
    values = frozenset((value or "").split())
    if not values <= set(oidc.PROMPT_VALUES):
        raise ValueError(f"prompt must be some of: {' '.join(oidc.PROMPT_VALUES)}")
    if "none" in values and len(values) > 1:
        raise ValueError("prompt=none cannot be combined with another value")
    return values


def _max_age(value: str | None) -> int | None:
    """Return `max_age` in seconds, or raise ValueError unless it is a non-negative integer."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_AGE_DIGITS):
        raise ValueError("max_age must be a non-negative integer number of seconds")
    return int(value)


def _acr_values(value: str | None) -> tuple[str, ...]:
    """Return the levels of `acr_values` this issuer knows, or raise ValueError for a malformed value.

    Core 1.0 section 3.1.2.1: space-separated, in order of preference, and voluntary: a level
    this issuer does not offer (`acr_values_supported`) is ignored, not an error.
    """
    if value is None:
        return ()
    if not (len(value) <= MAX_ACR_VALUES_LENGTH and value.isascii() and value.isprintable()):
        raise ValueError(f"acr_values must be at most {MAX_ACR_VALUES_LENGTH} printable ASCII characters")
    return tuple(level for level in dict.fromkeys(value.split()) if level in assurance.ACR_VALUES_SUPPORTED)


def _not_enough(max_age: int | None, acr_values: tuple[str, ...]) -> bool:
    """Return whether the browser's login must be done again for `max_age` or `acr_values` (Core 1.0 section 3.1.2.1).

    It must when it began at least `max_age` seconds ago, or reached none of the levels
    `acr_values` asks for; the login session is read once, and only when either is asked.
    """
    if max_age is None and not acr_values:
        return False
    login = extensions.current().login_sessions.login(secret_hash(session["sid"]))
    if login is None:
        return True
    # Whole seconds on both sides: "at least max_age" errs towards asking (max_age=0 always asks).
    if max_age is not None and int(time.time()) - login.auth_time >= max_age:
        return True
    return bool(acr_values) and not assurance.satisfies(login.acr, acr_values)


def _login_hint(pending: Mapping[str, str]) -> str:
    """Return the `login_hint` of a pending request when it can be a username, else ""."""
    hint = pending.get("login_hint", "").strip()
    return hint if 0 < len(hint) <= MAX_USERNAME_LENGTH and hint.isprintable() else ""


def login_page(error: str | None = None, username: str = "", status: int = 200) -> Response:
    """Render the login form, naming the application that asked, if any.

    The form's submission ends, through redirects, at that application's redirect URI: the
    page's CSP `form-action` must allow its origin (checked at /authorize before it was kept).
    """
    pending = session.get("authorize") or {}
    client = extensions.current().clients.get(pending.get("client_id", ""))
    username = username or _login_hint(pending)
    html = render_template("login.html", client=client.name if client else None, error=error, username=username)
    # The passkey button's script (issuer.passkeys) is a file of ours; nothing inline runs.
    return _may_end_at_client(make_response(html, status), scripts=True)


def _may_end_at_client(response: Response, *, scripts: bool = False) -> Response:
    """Let a login page's form end, through redirects, where the login goes next (CSP `form-action`).

    That is the pending request's redirect URI's origin when the client registered it, else every
    web client's (the app's default). With `scripts`, the page may load the issuer's own script
    files (the passkey button, issuer.passkeys); nothing inline runs either way.
    """
    pending = session.get("authorize") or {}
    client = extensions.current().clients.get(pending.get("client_id", ""))
    redirect_uri = pending.get("redirect_uri", "")
    urls: tuple[str, ...] = extensions.current().settings.web_redirect_uris
    if client is not None and redirect_uri in client.redirect_uris:
        urls = (redirect_uri,)
    targets = tuple(sorted({"{0.scheme}://{0.netloc}".format(urlsplit(url)) for url in urls}))
    # The passkey button's script (issuer.passkeys) is a file of ours; nothing inline runs.
    response.headers["Content-Security-Policy"] = content_security_policy(targets, scripts=True)
    return response


@bp.route("/login", methods=["GET", "POST"])
@password_limits()
def login() -> Any:
    """Show the login form; on success, continue the pending authorization request."""
    if request.method == "GET":
        if current_user() and session.get("authorize") and not session.get("force_login"):
            return redirect(url_for("browser.authorize", **session["authorize"]), code=302)
        return login_page()

    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    user = extensions.current().users.authenticate(username, password) if username and password else None
    if user is None:
        note_failed_password()
        _failed(extensions.current().users.known(username))
        log.info("browser login failed", extra={"fields": {"reason": "bad credentials"}})
        return login_page(LOGIN_FAILED, username[:64])

    if extensions.current().factors.active(user.id):
        # The password was right; the login is not done until the code is (a second page).
        session[SECOND_STEP] = {
            "user_id": user.id,
            "username": user.username,
            "until": int(time.time()) + extensions.current().settings.login_code_ttl,
        }
        log.info("browser login needs a one-time code", extra={"fields": {"sub": user.id}})
        return redirect(url_for("browser.login_code"), code=303)
    if extensions.current().passkeys.any_of(user.id):
        # A password alone never finishes the login of a user with a passkey (and no one-time
        # codes to ask for): it would be single-factor, enough to change the user's factors.
        # The password was right: no failed password is counted.
        _failed(user.username, user.id, reason="passkey_required")
        log.info("browser login refused", extra={"fields": {"reason": "passkey required", "sub": user.id}})
        return login_page(PASSKEY_REQUIRED, user.username)
    _succeeded(user)
    return complete_login(user, assurance.PASSWORD)


def _failed(subject: str | None, subject_id: str | None = None, *, reason: str | None = None) -> None:
    """Count and audit a failed login (`login.failed`): `subject` is the user's name, None for an unknown one.

    Whether it spends the login budget (`note_failed_password`) is the caller's to say: a
    right password refused for want of a passkey does not.
    """
    metrics.LOGINS.labels("failure").inc()
    audit.emit(
        "login.failed",
        subject=subject,
        subject_id=subject_id,
        client=(session.get("authorize") or {}).get("client_id"),
        reason=reason,
    )


def _succeeded(user: User) -> None:
    """Count and audit a login whose every step passed (a password, and a code for a user with one-time codes)."""
    metrics.LOGINS.labels("success").inc()
    audit.emit(
        "login.succeeded",
        subject=user.username,
        subject_id=user.id,
        client=(session.get("authorize") or {}).get("client_id"),
    )


def complete_login(user: User, amr: Sequence[str]) -> Any:
    """Start a fresh session for a user who just proved `amr` (RFC 8176) and continue where the login was asked for.

    The pending authorization request, a device's verification page, the account page, or the
    "Logged in" page: the same after a password, a password and a code, or a passkey
    (issuer.passkeys). The caller has counted and audited the login.
    """
    pending = session.get("authorize")
    device = session.get("device")  # a device's verification page sent the user here (issuer.device)
    after = session.get(AFTER_LOGIN)  # the account page sent the user here (issuer.account)
    replaced = session.get("sid")
    session.clear()  # a fresh session: nothing from before the login survives (no fixation)
    session_id = extensions.current().login_sessions.create(user.id, amr=amr)
    if isinstance(replaced, str):
        _replace_session(replaced, secret_hash(session_id), user.id)
    session["sid"] = session_id
    session.permanent = True
    log.info("browser login", extra={"fields": {"sub": user.id, "amr": " ".join(amr)}})
    if pending:
        session["authorize"] = pending
        session["logged_in_for"] = pending  # this login answers that request (see authorize)
        return redirect(url_for("browser.authorize", **pending), code=303)
    if isinstance(device, dict):
        session["device"] = device
        return redirect(url_for("device.verify"), code=303)
    if after == "account":
        return redirect(url_for("account.overview"), code=303)
    if after == "passkeys":
        return redirect(url_for("passkeys.account"), code=303)
    return page("Logged in", f"You are logged in as {user.username}.", logout=True, account=True)


def _second_step_user() -> User | None:
    """Return the user whose password this browser proved for a login still waiting for its code, or None.

    The state lives in the browser's signed session cookie (it is bound to this browser), for
    `ISSUER_LOGIN_CODE_TTL` seconds (5 minutes); it is not a login (`current_user` never sees
    it). A user who lost the factor meanwhile (reset by the operator) starts again.
    """
    state = session.get(SECOND_STEP)
    if not isinstance(state, dict) or not isinstance(state.get("until"), int) or state["until"] <= time.time():
        session.pop(SECOND_STEP, None)
        return None
    user = extensions.current().users.get_by_id(str(state.get("user_id", "")))
    if user is None or not extensions.current().factors.active(user.id):
        session.pop(SECOND_STEP, None)
        return None
    return user


def _second_step_account() -> str:
    """Return the name the second step's rate limit charges: the user's, whose password it follows."""
    state = session.get(SECOND_STEP)
    return str(state.get("username", "")) if isinstance(state, dict) else ""


def _code_page(error: str | None = None) -> Response:
    html = render_template("code.html", error=error, action=url_for("browser.login_code"), heading="Enter your code")
    response = _may_end_at_client(make_response(html))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/login/code", methods=["GET", "POST"])
@password_limits(account=_second_step_account)
def login_code() -> Any:
    """The second step of a login for a user with one-time codes: a TOTP code or a recovery code."""
    user = _second_step_user()
    if user is None:
        return login_page(SECOND_STEP_EXPIRED)
    if request.method == "GET":
        return _code_page()
    code = request.form.get("code", "")
    method = extensions.current().factors.verify(user.id, code) if code else None
    if method is None:
        note_failed_password()  # a wrong code spends the budget of the user's password
        metrics.SECOND_FACTOR_CHECKS.labels(code_method(code), "failure").inc()
        _failed(user.username, user.id, reason="wrong_code")
        log.info("browser login failed", extra={"fields": {"reason": "wrong code", "sub": user.id}})
        return _code_page(CODE_FAILED)
    metrics.SECOND_FACTOR_CHECKS.labels(code_method(code), "success").inc()
    if method == "recovery":
        audit.emit("recovery_code.used", subject=user.username, subject_id=user.id)
    session.pop(SECOND_STEP, None)
    _succeeded(user)
    return complete_login(user, assurance.PASSWORD_AND_CODE)


def code_method(code: str) -> str:
    """Return the metrics label of what was typed: `totp` for six digits, else `recovery`."""
    return "totp" if is_totp_code(code.strip()) else "recovery"


@dataclass(frozen=True)
class LogoutRequest:
    """An end-session request whose parameters passed every check."""

    params: dict[str, str]  # what the confirmation form carries back
    client_id: str | None  # from `client_id` or the hint's `aud`
    sid: str | None  # the session the ID token hint names
    sub: str | None  # the user the ID token hint names
    redirect_uri: str | None
    state: str | None


class LogoutRefused(ValueError):
    """An end-session request the user must see an error page for; the message says why."""


def _logout_request(values: MultiDict[str, str]) -> LogoutRequest:
    """Check an end-session request (RP-Initiated Logout 1.0 section 2), or raise LogoutRefused."""
    if any(len(values.getlist(name)) > 1 for name in LOGOUT_PARAMS):
        raise LogoutRefused("A parameter was sent more than once.")
    params = {name: value for name in LOGOUT_PARAMS if (value := values.get(name))}
    client_id, sid, subject = params.get("client_id"), None, None
    if "id_token_hint" in params:
        try:
            hint = oidc.logout_hint(params["id_token_hint"])
        except InvalidHint as exc:
            log.info("end-session refused", extra={"fields": {"reason": str(exc)}})
            raise LogoutRefused("The application's logout request is not valid.") from exc
        if client_id is not None and client_id != hint.client_id:
            raise LogoutRefused("The logout request names two different applications.")
        client_id, sid, subject = hint.client_id, hint.sid, hint.sub
    client = extensions.current().clients.get(client_id) if client_id is not None else None
    if client_id is not None and client is None:
        raise LogoutRefused("This application is not registered with the issuer.")
    redirect_uri = params.get("post_logout_redirect_uri")
    if redirect_uri is not None and (client is None or redirect_uri not in client.post_logout_redirect_uris):
        log.warning(
            "end-session refused: unregistered post_logout_redirect_uri", extra={"fields": {"client_id": client_id}}
        )
        raise LogoutRefused("The address to return to after logging out is not registered for this application.")
    state = params.get("state")
    if state is not None and len(state) > MAX_STATE_LENGTH:
        raise LogoutRefused("The logout request is too long.")
    return LogoutRequest(params, client_id, sid, subject, redirect_uri, state)


def _same_user(own: str | None, named: str, sub: str | None) -> bool:
    """Return whether the session a hint names belongs to the user of the browser's own session.

    RP-Initiated Logout 1.0 sections 2 and 6: the hint says whom the relying party means, but
    anyone may hold someone's ID token (an expired one is a valid hint); only the browser's own
    session, live or expired, says who is at the browser.
    """
    sessions = extensions.current().login_sessions
    user_id = sessions.owner(own) if own is not None else None
    if user_id is None or sessions.owner(named) != user_id:
        return False
    user = extensions.current().users.get_by_id(user_id)
    return user is not None and sub is not None and oidc.is_subject(sub, user)


def _check_csrf() -> None:
    """Refuse a confirmation form without a valid CSRF token, as every other form is refused."""
    csrf = current_app.extensions.get("csrf")
    if isinstance(csrf, CSRFProtect):
        csrf.protect()  # raises CSRFError, rendered by the app's handler


def _replace_session(replaced: str, new_hash: str, user_id: str) -> None:
    """End the session a login replaces in this browser (a second tab, `prompt=login`, `max_age`).

    Left live, no later logout of this browser could end it, and the refresh tokens it produced
    would outlive every logout. The same user keeps what they hold, even from a session that has
    expired: the tokens move to the new session (a retry or a second tab never logs anyone out),
    so its logout ends them too. Another user's session ends with its tokens.
    """
    old_hash = secret_hash(replaced)
    if extensions.current().login_sessions.owner(old_hash) != user_id:
        _end_sessions(old_hash)
        return
    with extensions.current().database.transaction():
        extensions.current().refresh_tokens.move_session(old_hash, new_hash)
        extensions.current().login_sessions.end(old_hash)


def _end_sessions(*session_hashes: str | None) -> None:
    """End login sessions known by their hashes, revoking the refresh tokens they produced."""
    with extensions.current().database.transaction():
        for session_hash in dict.fromkeys(filter(None, session_hashes)):
            extensions.current().login_sessions.end(session_hash)
            extensions.current().refresh_tokens.revoke_session(session_hash)
    session.clear()


def _logged_out(asked: LogoutRequest) -> Any:
    """Send the browser where the relying party asked, or show that the user is logged out."""
    if asked.redirect_uri is not None:
        return client_redirect(asked.redirect_uri, state=asked.state)
    return page("Logged out", "You have been logged out.")


def _confirm_logout(asked: LogoutRequest) -> Response:
    """Ask the user to confirm; the form may end in a redirect to the relying party (CSP form-action)."""
    text = "An application asks to end your session at the issuer. Log out?"
    response = make_response(page("Log out", text, logout=True, logout_params=asked.params))
    if asked.redirect_uri is not None:
        parts = urlsplit(asked.redirect_uri)
        response.headers["Content-Security-Policy"] = content_security_policy((f"{parts.scheme}://{parts.netloc}",))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    """End the issuer login session: asked by the user, or by a relying party (RP-Initiated Logout 1.0).

    A GET, or a POST without our CSRF token (a relying party's form), is a request: it ends
    the session at once only when the ID token hint names the browser's own session, and
    otherwise asks. A POST with the CSRF token is the user's confirmation: it ends the
    browser's session, and the one the hint names when it is the same user's.
    """
    values = request.args if request.method == "GET" else request.form
    confirmed = request.method == "POST" and (
        "csrf_token" in request.form or not any(name in request.form for name in LOGOUT_PARAMS)
    )
    if confirmed:
        _check_csrf()
    try:
        asked = _logout_request(values)
    except LogoutRefused as exc:
        raise PageError("Cannot log out", str(exc)) from exc
    sessions = extensions.current().login_sessions
    session_id = session.get("sid")
    own = secret_hash(session_id) if isinstance(session_id, str) else None  # live or expired
    named = sessions.hash_of(asked.sid) if asked.sid is not None else None
    if named is not None and not _same_user(own, named, asked.sub):
        log.info("end-session hint names another user's session", extra={"fields": {"client_id": asked.client_id}})
        named = None  # never ended from this browser
    if confirmed:
        _end_sessions(own, named)
        log.info("logged out", extra={"fields": {"client_id": asked.client_id}})
        return _logged_out(asked)
    if own is not None and asked.sid is not None and public_id(own) == asked.sid:
        _end_sessions(own)
        log.info("logged out by the relying party", extra={"fields": {"client_id": asked.client_id}})
        return _logged_out(asked)
    if sessions.live_hash(session_id) is None and named is None:
        if not asked.params:
            return page("Logged out", "You are not logged in.")
        return _logged_out(asked)  # nothing to end: nothing to ask
    if not asked.params:
        return page("Log out", "End your session at the issuer?", logout=True)
    return _confirm_logout(asked)


@bp.record_once
def _exempt_logout(state: BlueprintSetupState) -> None:
    """Let relying parties POST end-session requests: `logout` checks the CSRF token of confirmations itself."""
    csrf = state.app.extensions.get("csrf")
    if isinstance(csrf, CSRFProtect):
        csrf.exempt(logout)
