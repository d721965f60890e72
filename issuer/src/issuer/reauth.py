"""Changing a factor needs a fresh login: what a stolen or forgotten session cookie cannot do.

Enrolling or removing one-time codes and adding, renaming or removing a passkey (and fetching a
registration's options) is allowed only to a session whose login is at most
`ISSUER_FACTOR_CHANGE_MAX_AGE` seconds old (5 minutes) and, once the user has a factor (active
one-time codes or a passkey), whose login proved it (`amr` holds `mfa`, RFC 8176). Otherwise the
page sends the browser to log in again, as `prompt=login` does (OpenID Connect Core 1.0 section
3.1.2.1), and back to the page it came from; a JSON endpoint answers 401 with what to do. Each
such view is decorated with `factor_change`, which holds the rule once.

A session cookie stolen after the login therefore changes no factor once the login is older
than the limit: the attacker's own passkey, which would outlive every logout, can be added only
in those first minutes (docs/security.md says so). Removing a factor ends the user's other
sessions and their tokens (`end_other_sessions`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from flask import Response as FlaskResponse
from flask import redirect, session, url_for
from werkzeug.wrappers import Response

from issuer import extensions
from issuer.browser import AFTER_LOGIN, current_user
from issuer.opaque import secret_hash
from issuer.second_factor import has_second_factor
from issuer.sessions import LoginSessions
from issuer.users import User
from shared import audit
from shared.errors import error_response

log = logging.getLogger(__name__)

RELOGIN = "log in again (with your passkey or one-time code, if you have one) to change how you log in"

P = ParamSpec("P")
R = TypeVar("R")


def fresh_enough(user: User) -> bool:
    """Return whether the browser's session may change the user's factors (see the module)."""
    session_id = session.get("sid")
    if not isinstance(session_id, str):
        return False
    login = extensions.current().login_sessions.login(secret_hash(session_id))
    if login is None:
        return False
    max_age = extensions.current().settings.factor_change_max_age
    if int(time.time()) - login.auth_time > max_age:
        return False
    return "mfa" in login.amr or not has_second_factor(extensions.current().database, user.id)


def end_other_sessions(user: User) -> int:
    """End the user's login sessions but this browser's, with their refresh and access tokens (a factor was removed).

    Whoever held another session, or tokens from one, kept what a factor now gone had proved
    (`acr` `multi-factor`): the session that removed it, fresh and multi-factor, goes on.
    Return how many sessions ended.
    """
    keep = secret_hash(str(session.get("sid", "")))
    with extensions.current().database.transaction() as conn:
        ended, revoked = LoginSessions.end_all_of_user(conn, user.id, keep=keep)
    if ended:
        audit.emit("session.ended", subject=user.username, subject_id=user.id)
    if revoked:
        audit.emit("token.revoked", subject=user.username, subject_id=user.id, tokens=revoked)
    log.info("factor removed: other sessions ended", extra={"fields": {"sub": user.id, "sessions": ended}})
    return ended


def log_in_again(user: User, back_to: str) -> Response:
    """Send the browser to log in again, then back to `back_to` (`account` or `passkeys`)."""
    log.info("factor change needs a fresh login", extra={"fields": {"sub": user.id}})
    session[AFTER_LOGIN] = back_to
    return redirect(url_for("browser.login"), code=303)


def refused_json(user: User) -> FlaskResponse:
    """Answer a JSON endpoint of a factor change for a session that is not fresh enough: 401."""
    log.info("factor change needs a fresh login", extra={"fields": {"sub": user.id}})
    return error_response(401, "login_required", RELOGIN)


def factor_change(
    *, logged_out: Callable[[], Response], back_to: str | None
) -> Callable[[Callable[Concatenate[User, P], R]], Callable[P, R | Response]]:
    """Guard a view that changes the user's factors (see the module); the view gets the logged-in user first.

    A browser with no live login session gets `logged_out()` (each view says how: a redirect
    to the login page, or a JSON 401). A session that is not `fresh_enough` logs in again and
    comes back to `back_to` (`account` or `passkeys`, `log_in_again`), or, with `back_to`
    None (a JSON endpoint), is answered 401 (`refused_json`).
    """

    def decorate(view: Callable[Concatenate[User, P], R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            user = current_user()
            if user is None:
                return logged_out()
            if not fresh_enough(user):
                return refused_json(user) if back_to is None else log_in_again(user, back_to)
            return view(user, *args, **kwargs)

        return guarded

    return decorate
