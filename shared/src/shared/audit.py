"""The audit trail: one JSON line per security event, apart from access and application lines.

Every line goes through `emit`, on the logger `jwt_split.audit`, with `"audit": true`: an
operator routes the trail by either. Event names come from a fixed list (`EVENTS`) and fields
from a fixed set (`FIELDS`); `emit` refuses anything else, so no token, password, code or key
can reach the trail as a field someone added in passing. docs/observability.md ("Audit trail")
documents each event and field; docs/audit-event.schema.json is the schema of a line.

Where the event happened (`source`) is found, not passed: `http` inside a request (with the
client's address, as the rate limits see it, the request id and the Flask endpoint), `cli`
in the operator's command (with the operator's OS user), `system` otherwise (the service
itself: key lifecycle steps that fall due, what is seeded at start). A caller passes
`source="system"` for a step the service takes on its own while serving a request.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from flask import Flask, current_app, g, has_request_context, request

from shared.logs import JsonFormatter

LOGGER: Final = "jwt_split.audit"
EXTENSION: Final = "jwt_split.audit"  # app.extensions key: how to find the client's address

log = logging.getLogger(LOGGER)
# The trail is not chatter to turn down: the operator's log level never silences it.
log.setLevel(logging.INFO)

EVENTS: Final[dict[str, str]] = {
    "login.succeeded": "a login passed: a password check (password grant or login form) or a passkey",
    "login.failed": "a password check failed (password grant or login form)",
    "rate_limit.hit": "a request was refused with 429 by a password-guessing limit",
    "refresh.reuse_detected": "a spent refresh token was presented again; its family was revoked",
    "code.reuse_detected": "an authorization code was redeemed twice; what it granted was revoked",
    "token.revoked": "refresh tokens were revoked (RFC 7009 revocation, or with their login session)",
    "session.ended": "an issuer login session was ended (logout, or revocation of its refresh token)",
    "key.staged": "a new signing key was published as next",
    "key.activated": "a signing key began signing",
    "key.retiring": "a signing key stopped signing (still published)",
    "key.retired": "a signing key was withdrawn from the JWKS and its private half erased",
    "user.created": "a user was added",
    "user.changed": "a user's name, e-mail address or scopes changed",
    "user.deleted": "a user was deleted",
    "client.created": "a client was registered",
    "client.changed": "a client's registration was replaced",
    "client.deleted": "a client was deleted",
    "client.auth_failed": "a client failed to authenticate (the reason says which way)",
    "client.assertion_replayed": "a private_key_jwt assertion was presented again (its jti was used)",
    "api.created": "an API was registered",
    "api.changed": "an API's scopes or resource URIs were replaced",
    "api.deleted": "an API was deleted",
    "device.authorization_issued": "a device authorization request got its device and user codes (RFC 8628)",
    "device.approved": "a user approved a device authorization request",
    "device.denied": "a user denied a device authorization request",
    "device.exchanged": "an approved device code was exchanged for tokens",
    "passkey.registered": "a user registered a passkey (WebAuthn credential)",
    "passkey.renamed": "a user renamed one of their passkeys",
    "passkey.removed": "a user removed one of their passkeys",
    "passkey.login_failed": "a passkey login was refused (the reason says why)",
    "passkey.clone_suspected": "a passkey's signature counter went back: a cloned authenticator; the login was refused",
    "factor.enrolled": "a user confirmed one-time codes (TOTP) as their second factor",
    "factor.removed": "a user's one-time codes and recovery codes were removed (by the user or the operator)",
    "recovery_code.used": "a recovery code was spent in place of a one-time code",
}

SOURCES: Final = ("http", "cli", "system")
# Why a key step was forced rather than planned, and why a client failed to authenticate.
KEY_REASONS: Final = ("unreadable",)
CLIENT_AUTH_REASONS: Final = (
    "no_credentials",  # no credentials and no client_id
    "unknown_client",  # no client is registered with the id given
    "wrong_method",  # another method than the client's, more than one, or an unsupported one
    "malformed",  # the Basic header or the assertion cannot be read
    "wrong_secret",
    "bad_assertion",  # signature, iss, sub, aud, exp, iat, nbf or jti refused
    "no_key",  # no registered key the assertion can name
    "key_refused",  # the client's key is out of bounds (exponent, modulus)
    "keys_unavailable",  # the client's JWKS URL could not be fetched (or is being fetched)
)
# A refused passkey login (besides `malformed`, a response that cannot be read).
PASSKEY_REASONS: Final = (
    "no_challenge",  # no live challenge of this browser's ceremony (expired, used, or none)
    "unknown_credential",  # no passkey is registered with the credential id sent
    "bad_response",  # challenge, origin, RP ID, flags, user handle or signature refused
)
# Why a login failed after its password passed (login.failed), or why one was refused outright.
LOGIN_REASONS: Final = (
    "wrong_code",  # the one-time code or recovery code of the second step was wrong or used
    "second_factor_required",  # the password grant, for a user who has a second factor
    "passkey_required",  # the login page, a right password of a user with a passkey and no one-time codes
)
REASONS: Final = KEY_REASONS + CLIENT_AUTH_REASONS + PASSKEY_REASONS + LOGIN_REASONS
MAX_TEXT: Final = 128  # every value here is short (names, ids); a longer one is cut

FieldValue = str | int | list[str] | None

# The fields a caller may give, and their types. Never a secret: see the module docstring.
FIELDS: Final[dict[str, type]] = {
    "subject": str,  # a user's username (never a name typed for nobody)
    "subject_id": str,  # a user's stable id
    "client": str,  # a registered client's client_id
    "api": str,  # a registered API's audience
    "kid": str,  # a signing key's id (its public thumbprint)
    "family": str,  # a refresh-token family's id (a random handle, not a token)
    "tokens": int,  # how many refresh tokens were revoked
    "limit": str,  # which rate limit: password-account or password-address
    "changes": list,  # names of the attributes that changed, never their values
    "reason": str,  # one of REASONS
    "passkey": str,  # a passkey's id at the issuer (a random handle, not the credential id)
    "source": str,  # only "system", to override a request's source
}


class AuditError(ValueError):
    """An audit event or field that is not in the fixed list (a bug in the caller)."""


class _Process:
    """Where this process's events come from outside a request (`use_command_line` changes it)."""

    source = "system"
    actor: str | None = None


def init_app(app: Flask, address: Callable[[], str] | None = None) -> None:
    """Take the client's address from `address` (the app's trusted-proxy rule) in `app`'s requests."""
    app.extensions[EXTENSION] = address or (lambda: request.remote_addr or "")


def use_command_line(service: str, terminal_trail: Path | None = None) -> None:
    """Mark this process as the operator's command: source `cli`, its OS user, lines on stderr.

    While stderr is a terminal, a person reads it: the lines go to the file `terminal_trail`
    instead (appended, owner-only), if one is given. Redirected, stderr keeps them.
    """
    _Process.source = "cli"
    _Process.actor = _os_user()
    if not log.handlers:
        handler: logging.Handler = (
            _PrivateFile(terminal_trail) if terminal_trail is not None and sys.stderr.isatty() else _CurrentStderr()
        )
        handler.setFormatter(JsonFormatter(service))
        log.addHandler(handler)
        log.propagate = False  # nothing else is configured in a command; never twice if it were


def emit(event: str, **fields: FieldValue) -> None:
    """Write one audit line for `event` with `fields`; refuse an event or field not in the lists."""
    if event not in EVENTS:
        raise AuditError(f"unknown audit event {event!r}")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise AuditError(f"unknown audit fields {unknown} for {event!r}")
    entry: dict[str, object] = {"audit": True, "event": event, **_origin(fields.pop("source", None))}
    for name, value in fields.items():
        if value is None:
            continue
        if not isinstance(value, FIELDS[name]) or isinstance(value, bool):
            raise AuditError(f"audit field {name!r} must be a {FIELDS[name].__name__}")
        entry[name] = _bounded(value)
    if "reason" in entry and entry["reason"] not in REASONS:
        raise AuditError(f"unknown audit reason {entry['reason']!r}")
    log.info(event, extra={"fields": entry})


def _origin(source: FieldValue) -> dict[str, object]:
    """Return where the event comes from: source and, as they apply, address, request id, endpoint, actor."""
    if source not in (None, "system"):
        raise AuditError("only source='system' may be given")
    origin: dict[str, object] = {}
    if has_request_context():
        origin["request_id"] = g.get("request_id")
        origin["endpoint"] = request.endpoint
        if source is None:
            address = current_app.extensions.get(EXTENSION)
            origin["source"] = "http"
            origin["address"] = (address() if address is not None else request.remote_addr or "")[:64]
    if "source" not in origin:
        origin["source"] = source or _Process.source
        if origin["source"] == "cli" and _Process.actor:
            origin["actor"] = _Process.actor
    return {name: value for name, value in origin.items() if value is not None}


def _bounded(value: str | int | list[str]) -> object:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, int):
        return value
    return sorted(str(item)[:MAX_TEXT] for item in value)


def _os_user() -> str:
    try:
        return getpass.getuser()[:MAX_TEXT]
    except (KeyError, OSError):  # a uid with no name (containers): the number says who
        return f"uid:{os.getuid()}"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to whatever sys.stderr is when a line is written (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record to the current stderr."""
        self.stream = sys.stderr
        super().emit(record)


class _PrivateFile(logging.Handler):
    """Append each line to a file only its owner may read; stderr keeps a line the file refuses."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record to the file (created 0600, its directory 0700), or write it to stderr."""
        line = self.format(record) + "\n"
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with os.fdopen(
                os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8"
            ) as trail:
                trail.write(line)
        except OSError:
            sys.stderr.write(line)  # never lost: a line on the terminal beats none in the trail
