"""Passkeys at the issuer: `/account/passkeys` and "Sign in with a passkey" (W3C WebAuthn Level 3).

The relying party is the issuer itself: its RP ID is the host of `ISSUER_URL` and the only
origin it accepts is that URL's (section 5.1.3 and 13.4.9). The ceremonies (Duo Labs' `webauthn`
library verifies the responses):

- Registration (section 7.1), on the account page of a user who logged in recently, and with
  their factor if they have one (`issuer.reauth`; renaming and removing too): a discoverable
  credential (`residentKey` required), user verification required, none of the user's passkeys
  again (`excludeCredentials`), no attestation asked for (a passkey proves nothing more by it).
- Authentication (section 7.2), on the login page: `allowCredentials` empty, the browser offers
  the passkeys it holds for this RP ID and the response names the user (`userHandle`, the
  user's stable id). User verification is required: a PIN or biometric with possession of the
  key is two factors, RFC 8176 `hwk` (device-bound) or `swk` (backup eligible), `user`, `mfa`.
  The session then continues exactly like a password login (`browser.complete_login`).

Challenges (section 13.4.3) are 32 random bytes, kept in the browser's session cookie (bound to
this browser) and in the database as a hash for five minutes (`issuer.credentials`): a response
uses up the challenge, whether it passes or not. The options are fetched as JSON by a POST with
the CSRF token in the `X-CSRFToken` header; the responses come back in ordinary forms (CSRF
token field) so that success continues with the same redirects as the password form. The
browser side is `static/passkeys.js`, a file of the issuer's (the pages' CSP runs no inline
script). A refused passkey login costs from the per-address budget password failures spend
(`issuer.ratelimit.passkey_limits`); the options of a login, which anyone may ask for and
each keep a challenge row, are limited per address (`ISSUER_PASSKEY_OPTIONS_RATE_LIMIT`). It is audited (`passkey.login_failed`, or
`passkey.clone_suspected` for a counter that went back) and counted by result.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, make_response, redirect, render_template, request, session, url_for
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from werkzeug.wrappers import Response as BaseResponse

from issuer import extensions, reauth
from issuer.browser import AFTER_LOGIN, complete_login, current_user, login_page
from issuer.credentials import CloneSuspected, Passkey, PasskeyError, check_name, clean_transports
from issuer.ratelimit import client_address, limiter, note_failed_password, passkey_limits
from issuer.users import User
from shared import audit, metrics
from shared.errors import error_response
from shared.web import content_security_policy

log = logging.getLogger(__name__)

bp = Blueprint("passkeys", __name__, static_folder="static", static_url_path="/passkeys/static")

CHALLENGE = "passkey_challenge"  # the session key of the ceremony in progress
TIMEOUT_MS = 60_000
MAX_CREDENTIAL_CHARS = 8 * 1024  # with no attestation asked for, responses are a few hundred characters
RP_NAME = "jwt-split issuer"
LOGIN_REFUSED = "The passkey could not be used to sign in. Try again, or use your password."
REGISTER_REFUSED = "The passkey could not be added. Please try again."


class Refused(ValueError):
    """A ceremony's response was refused; `reason` is the audit and metric name of why."""

    def __init__(self, reason: str, passkey: Passkey | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.passkey = passkey


def rp_id() -> str:
    """Return the RP ID: the host of the issuer's URL (WebAuthn section 5.1.3)."""
    return urlsplit(extensions.current().settings.url).hostname or ""


def origin() -> str:
    """Return the one origin ceremonies may come from: the issuer URL's."""
    parts = urlsplit(extensions.current().settings.url)
    return f"{parts.scheme}://{parts.netloc}"


def _page(html: str, status: int = 200) -> Response:
    response = make_response(html, status)
    response.headers["Content-Security-Policy"] = content_security_policy(scripts=True)
    response.headers["Cache-Control"] = "no-store"
    return response


def _options(options: Any, purpose: str) -> Response:
    """Answer a ceremony's options as JSON, remembering its challenge for this browser."""
    challenge = bytes_to_base64url(options.challenge)
    extensions.current().passkeys.remember_challenge(challenge, purpose)
    session[CHALLENGE] = {"purpose": purpose, "challenge": challenge}
    response = make_response(options_to_json(options))
    response.mimetype = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


def _take_challenge(purpose: str) -> bytes:
    """Use up this browser's challenge for `purpose`, or raise Refused("no_challenge")."""
    kept = session.pop(CHALLENGE, None)
    if not isinstance(kept, dict) or kept.get("purpose") != purpose or not isinstance(kept.get("challenge"), str):
        raise Refused("no_challenge")
    if not extensions.current().passkeys.consume_challenge(kept["challenge"], purpose):
        raise Refused("no_challenge")  # expired, or used already (a replayed cookie)
    return _b64(kept["challenge"])


def _b64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Refused("malformed") from exc


def _credential(text: str) -> dict[str, Any]:
    """Return the browser's PublicKeyCredential JSON (section 5.1), its shape checked, or raise Refused("malformed")."""
    if not text or len(text) > MAX_CREDENTIAL_CHARS:
        raise Refused("malformed")
    try:
        credential = json.loads(text)
    except ValueError as exc:
        raise Refused("malformed") from exc
    if not isinstance(credential, dict) or not isinstance(credential.get("response"), dict):
        raise Refused("malformed")
    if not all(isinstance(credential.get(name), str) and credential[name] for name in ("id", "rawId", "type")):
        raise Refused("malformed")
    response = credential["response"]
    if not all(isinstance(value, str | list | type(None)) for value in response.values()):
        raise Refused("malformed")
    return credential


@bp.app_template_filter("utc_time")
def utc_time(timestamp: int) -> str:
    """Format a Unix time for the pages: minutes, UTC."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


# -- the account page -------------------------------------------------------------------------


def _account_page(user: User, error: str | None = None, status: int = 200) -> Response:
    html = render_template(
        "passkeys.html", user=user, passkeys=extensions.current().passkeys.of_user(user.id), error=error
    )
    return _page(html, status)


def _to_login() -> BaseResponse:
    """Send a form's browser with no login to the login page (303: the next request is a GET)."""
    return redirect(url_for("browser.login"), code=303)


def _login_required() -> Response:
    """Answer the JSON options endpoint for a browser with no login: 401."""
    return error_response(401, "login_required", "log in to add a passkey")


@bp.get("/account/passkeys")
def account() -> Any:
    """List the user's passkeys, with forms to add, rename and remove them; log in first."""
    user = current_user()
    if user is None:
        session[AFTER_LOGIN] = "passkeys"  # and back here after the login
        return redirect(url_for("browser.login"), code=302)
    return _account_page(user)


@bp.post("/account/passkeys/options")
@reauth.factor_change(logged_out=_login_required, back_to=None)
def register_options(user: User) -> Response:
    """Return the options of a registration ceremony for the logged-in user (section 5.4)."""
    existing = extensions.current().passkeys.of_user(user.id)
    options = generate_registration_options(
        rp_id=rp_id(),
        rp_name=RP_NAME,
        user_id=user.id.encode(),  # the userHandle a login returns: the stable id, never the name
        user_name=user.username,
        user_display_name=user.name or user.username,
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(
                id=_b64(p.credential_id), transports=[AuthenticatorTransport(t) for t in p.transports]
            )
            for p in existing
        ],
    )
    return _options(options, "register")


@bp.post("/account/passkeys")
@reauth.factor_change(logged_out=_to_login, back_to="passkeys")
def register(user: User) -> Any:
    """Verify a registration response (section 7.1) and keep the passkey under the name given."""
    try:
        name = check_name(request.form.get("name", ""))
        challenge = _take_challenge("register")
        credential = _credential(request.form.get("credential", ""))
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp_id(),
                expected_origin=origin(),
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, TypeError) as exc:
            log.info("passkey registration refused", extra={"fields": {"error": str(exc)[:200]}})
            raise Refused("bad_response") from exc
        passkey = extensions.current().passkeys.add(
            user.id,
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=clean_transports(credential["response"].get("transports") or []),
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            backup_state=verified.credential_backed_up,
            name=name,
        )
    except Refused as exc:
        metrics.PASSKEYS.labels("register", "failure").inc()
        log.info("passkey registration refused", extra={"fields": {"reason": exc.reason}})
        return _account_page(user, REGISTER_REFUSED, 400)
    except PasskeyError as exc:
        metrics.PASSKEYS.labels("register", "failure").inc()
        return _account_page(user, str(exc), 400)
    metrics.PASSKEYS.labels("register", "success").inc()
    audit.emit("passkey.registered", subject=user.username, subject_id=user.id, passkey=passkey.id)
    return redirect(url_for("passkeys.account"), code=303)


@bp.post("/account/passkeys/<passkey_id>/rename")
@reauth.factor_change(logged_out=_to_login, back_to="passkeys")
def rename(user: User, passkey_id: str) -> Any:
    """Rename one of the user's passkeys."""
    try:
        found = extensions.current().passkeys.rename(user.id, passkey_id, request.form.get("name", ""))
    except PasskeyError as exc:
        return _account_page(user, str(exc), 400)
    if not found:
        return _account_page(user, "That passkey does not exist.", 404)
    audit.emit("passkey.renamed", subject=user.username, subject_id=user.id, passkey=passkey_id)
    return redirect(url_for("passkeys.account"), code=303)


@bp.post("/account/passkeys/<passkey_id>/remove")
@reauth.factor_change(logged_out=_to_login, back_to="passkeys")
def remove(user: User, passkey_id: str) -> Any:
    """Remove one of the user's passkeys (the authenticator keeps its key; it no longer signs anyone in)."""
    if not extensions.current().passkeys.remove(user.id, passkey_id):
        return _account_page(user, "That passkey does not exist.", 404)
    audit.emit("passkey.removed", subject=user.username, subject_id=user.id, passkey=passkey_id)
    reauth.end_other_sessions(user)  # a thief's session that added a passkey ends with it
    return redirect(url_for("passkeys.account"), code=303)


# -- signing in -------------------------------------------------------------------------------


@bp.post("/login/passkey/options")
@limiter.limit(
    lambda: extensions.current().settings.passkey_options_rate_limit,
    key_func=client_address,
    methods=["POST"],
    on_breach=lambda _limit: metrics.RATE_LIMITED.labels("passkey-options").inc(),
)
def login_options() -> Response:
    """Return the options of an authentication ceremony: any passkey of this RP ID (section 5.5)."""
    options = generate_authentication_options(
        rp_id=rp_id(),
        timeout=TIMEOUT_MS,
        allow_credentials=[],  # discoverable credentials: the browser offers what it holds
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return _options(options, "login")


@bp.post("/login/passkey")
@passkey_limits()
def login() -> Any:
    """Verify an authentication response (section 7.2); on success continue like a password login."""
    try:
        passkey, user = _authenticate()
    except Refused as exc:
        note_failed_password()  # keeps the charge: refusals spend the per-address budget
        metrics.PASSKEYS.labels("login", exc.reason).inc()
        owner = extensions.current().users.get_by_id(exc.passkey.user_id) if exc.passkey else None
        who: dict[str, str | None] = {
            "subject": owner.username if owner else None,
            "subject_id": owner.id if owner else None,
            "passkey": exc.passkey.id if exc.passkey and owner else None,
        }
        if exc.reason == "clone_suspected":
            audit.emit("passkey.clone_suspected", **who)
            log.warning(
                "passkey counter went back: a cloned authenticator?", extra={"fields": {"passkey": who["passkey"]}}
            )
        else:
            audit.emit("passkey.login_failed", reason=exc.reason, **who)
            log.info("passkey login refused", extra={"fields": {"reason": exc.reason}})
        return login_page(LOGIN_REFUSED, status=400)
    metrics.PASSKEYS.labels("login", "success").inc()
    audit.emit(
        "login.succeeded",
        subject=user.username,
        subject_id=user.id,
        client=(session.get("authorize") or {}).get("client_id"),
        passkey=passkey.id,
    )
    return complete_login(user, passkey.amr)


def _authenticate() -> tuple[Passkey, User]:
    """Check the response in the form against this browser's challenge; return the passkey and its user."""
    challenge = _take_challenge("login")
    credential = _credential(request.form.get("credential", ""))
    passkey = extensions.current().passkeys.by_credential_id(credential["id"])
    if passkey is None:
        raise Refused("unknown_credential")
    user = extensions.current().users.get_by_id(passkey.user_id)
    if user is None:
        raise Refused("unknown_credential")
    handle = credential["response"].get("userHandle")
    if handle is not None and _b64(handle) != user.id.encode():
        raise Refused("bad_response", passkey)  # a discoverable credential names its user (section 7.2 step 6)
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id(),
            expected_origin=origin(),
            credential_public_key=passkey.public_key,
            credential_current_sign_count=0,  # the counter is checked below, once the signature is known good
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError) as exc:
        log.info("passkey assertion refused", extra={"fields": {"error": str(exc)[:200]}})
        raise Refused("bad_response", passkey) from exc
    try:
        extensions.current().passkeys.use(passkey, verified.new_sign_count, verified.credential_backed_up)
    except CloneSuspected as exc:
        raise Refused("clone_suspected", passkey) from exc
    return passkey, user
