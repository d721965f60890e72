"""Issuer login sessions made where the issuer runs, for tests that are not about how a factor was proved."""

from __future__ import annotations

from tests.support.stack import Stack

# A login session for a user, with the methods given, and the issuer's signed session cookie naming it.
_MAKE_SESSION = """
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from issuer.app import _session_secret
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
settings = IssuerSettings.from_env()
sid = LoginSessions(settings.database(), settings.login_session_ttl).create(USER_ID, amr=AMR)
app = Flask("cookie")
app.secret_key = settings.session_secret or _session_secret(settings.data_dir)
print(SecureCookieSessionInterface().get_signing_serializer(app).dumps({"sid": sid, "_permanent": True}), end="")
"""

PASSWORD_AND_CODE = ("pwd", "otp", "mfa")  # issuer.assurance.PASSWORD_AND_CODE


def session_cookie(stack: Stack, username: str, amr: tuple[str, ...] = PASSWORD_AND_CODE) -> str:
    """Return the value of an `issuer_session` cookie for a login of `username` that proved `amr`.

    Made with `LoginSessions.create(user_id, amr=...)`, not through a login form: only for a test
    about what tokens and step-up do with such a session, not how the factor was proved (the
    TOTP and passkey logins have tests of their own).
    """
    code = _MAKE_SESSION.replace("USER_ID", repr(stack.user_id(username))).replace("AMR", repr(amr))
    made = stack.issuer_python(code)
    assert made.returncode == 0, made.stderr
    return made.stdout
