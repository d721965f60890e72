"""The user's account page at the issuer, `/account`: the factors they log in with.

It lists the factors: one-time codes (TOTP, RFC 6238; see `issuer.totp`) and a link to the
user's passkeys (`/account/passkeys`). Enrollment is three steps, every form carrying the CSRF
token: start (a new seed; the page shows its QR code and the secret, not kept in any page
after), confirm with a first code (the factor is active from then on, and the ten recovery
codes are shown, once), and remove (with a current code or a recovery code: a stolen session
alone cannot remove the factor). Each step needs a fresh login (`issuer.reauth`): at most
`ISSUER_FACTOR_CHANGE_MAX_AGE` seconds old and, for a user with a factor, multi-factor;
otherwise the browser logs in again and comes back here.

A wrong code here spends the user's login budget (`issuer.ratelimit.password_limits`, charged
to the user of the session), is audited (`login.failed`, reason `wrong_code`) and counted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import segno
from flask import Blueprint, make_response, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from issuer import extensions, reauth
from issuer.browser import AFTER_LOGIN, CODE_FAILED, code_method, current_user
from issuer.ratelimit import note_failed_password, password_limits
from issuer.totp import FactorError
from issuer.users import User
from shared import audit, metrics

log = logging.getLogger(__name__)

bp = Blueprint("account", __name__)

QR_SCALE = 5


def _session_username() -> str:
    """Return the name the account page's rate limit charges: the logged-in user's."""
    user = current_user()
    return user.username if user is not None else ""


def _private(html: str) -> Response:
    """Answer a page that holds secrets or the account's state: never stored by any cache (RFC 9111 5.2.2.5)."""
    response = make_response(html)
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_first() -> Response:
    """Send a browser with no login to log in, and back to the account page (302, as for the page itself)."""
    session[AFTER_LOGIN] = "account"
    return redirect(url_for("browser.login"), code=302)


def _overview(user: User, *, error: str | None = None, notice: str | None = None) -> Response:
    status = extensions.current().factors.status(user.id)
    return _private(
        render_template(
            "account.html",
            user=user,
            totp=status if status is not None and status.active else None,
            since=_date(status.confirmed_at) if status is not None else None,
            error=error,
            notice=notice,
        )
    )


def _date(stamp: int | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))


def _setup_page(user: User, secret: str, error: str | None = None) -> Response:
    uri = extensions.current().factors.provisioning_uri(secret, user.username)
    qr = segno.make(uri, error="m").svg_inline(
        scale=QR_SCALE, border=4, dark="#000", light="#fff", title="QR code of your one-time code secret"
    )
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return _private(render_template("totp_setup.html", qr=qr, secret=grouped, error=error))


def _wrong_code(user: User, code: str) -> None:
    note_failed_password()
    metrics.SECOND_FACTOR_CHECKS.labels(code_method(code), "failure").inc()
    audit.emit("login.failed", subject=user.username, subject_id=user.id, reason="wrong_code")


@bp.get("/account")
def overview() -> Any:
    """Show the user's factors."""
    user = current_user()
    if user is None:
        return _login_first()
    return _overview(user)


@bp.post("/account/totp")
@reauth.factor_change(logged_out=_login_first, back_to="account")
def start(user: User) -> Any:
    """Begin enrolling one-time codes: a new secret, shown with its QR code."""
    try:
        secret = extensions.current().factors.start(user.id)
    except FactorError as exc:
        return _overview(user, error=str(exc).capitalize() + ".")
    log.info("one-time code enrollment started", extra={"fields": {"sub": user.id}})
    return _setup_page(user, secret)


@bp.post("/account/totp/confirm")
@password_limits(account=_session_username)
@reauth.factor_change(logged_out=_login_first, back_to="account")
def confirm(user: User) -> Any:
    """Activate the factor with the first code; show the recovery codes, once."""
    factors = extensions.current().factors
    code = request.form.get("code", "").strip()
    try:
        recovery = factors.confirm(user.id, code)
    except FactorError as exc:
        return _overview(user, error=str(exc).capitalize() + ".")
    if recovery is None:
        _wrong_code(user, code)
        secret = factors.pending_secret(user.id)
        if secret is None:  # removed meanwhile, in another tab
            return _overview(user, error=CODE_FAILED)
        return _setup_page(user, secret, error=CODE_FAILED)
    metrics.SECOND_FACTOR_CHECKS.labels("totp", "success").inc()
    audit.emit("factor.enrolled", subject=user.username, subject_id=user.id)
    log.info("one-time codes enrolled", extra={"fields": {"sub": user.id}})
    return _private(render_template("recovery_codes.html", codes=recovery))


@bp.post("/account/totp/remove")
@password_limits(account=_session_username)
@reauth.factor_change(logged_out=_login_first, back_to="account")
def remove(user: User) -> Any:
    """Remove the factor and its recovery codes; a current code (or a recovery code) proves the user has it."""
    factors = extensions.current().factors
    if not factors.active(user.id):
        return _overview(user, error="One-time codes are not set up.")
    code = request.form.get("code", "").strip()
    method = factors.verify(user.id, code) if code else None
    if method is None:
        _wrong_code(user, code)
        return _overview(user, error=CODE_FAILED)
    metrics.SECOND_FACTOR_CHECKS.labels(code_method(code), "success").inc()
    if method == "recovery":
        audit.emit("recovery_code.used", subject=user.username, subject_id=user.id)
    factors.remove(user.id)
    audit.emit("factor.removed", subject=user.username, subject_id=user.id)
    log.info("one-time codes removed", extra={"fields": {"sub": user.id}})
    reauth.end_other_sessions(user)
    return _overview(
        user,
        notice="One-time codes were removed, and your other sessions were logged out. Logging in now needs your password only.",
    )
