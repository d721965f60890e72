"""The issuer's Flask app: `create_app`, and the start-up checks gunicorn's master runs (`check_start`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from flask import Flask, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from issuer import (
    account,
    browser,
    device,
    dpop,
    introspect,
    oauth,
    oidc,
    passkeys,
    protocol,
    prune,
    ratelimit,
    statuslist,
    wellknown,
)
from issuer.apis import ApiStore
from issuer.client_keys import RemoteKeys
from issuer.clients import ClientAssertions, ClientStore, builtin_clients
from issuer.codes import AuthorizationCodes
from issuer.credentials import Passkeys
from issuer.db import private_dir, private_file
from issuer.extensions import Issuer
from issuer.keys import KeyStoreError, WrongKeyEncryptionKey
from issuer.protocol import PageError
from issuer.ratelimit import client_address, quiet_limiter_log, retry_after
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
from issuer.tokens import RefreshTokens
from issuer.totp import SeedUnreadable, TotpFactors
from issuer.users import UserError, UserStore, parse_demo_users
from shared import audit, logs, web
from shared.errors import error_response
from shared.settings import SettingsError
from shared.web import STATIC_DIR, content_security_policy

log = logging.getLogger("issuer")  # the name its log lines have always had

csrf = CSRFProtect()

# Endpoints of the browser blueprints that answer JSON, a 429 too.
JSON_ENDPOINTS = frozenset({"device.device_authorization", "passkeys.register_options", "passkeys.login_options"})

# gunicorn's "App failed to load": its master stops instead of starting workers again.
CANNOT_START = 4


def create_app(settings: IssuerSettings | None = None) -> Flask:
    """Build the issuer app: database, key store, demo users and routes."""
    settings = settings or IssuerSettings.from_env()
    logs.configure("issuer", settings.log_level)
    quiet_limiter_log()
    app = Flask(__name__, static_folder=STATIC_DIR)
    secret = settings.session_secret or _session_secret(settings.data_dir)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="issuer_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=settings.login_session_ttl,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage,
        # Shared counters unreachable (Redis down): each worker counts in memory meanwhile, so
        # guessing stays limited and logins go on; never a 500 (see issuer.ratelimit).
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 1, "socket_timeout": 1},
        CONTENT_SECURITY_POLICY=content_security_policy(_origins(settings.web_redirect_uris)),
    )

    database = settings.database()
    database.upgrade()
    keks = settings.load_kek()
    keys = settings.key_store(database, keks)
    keys.start(settings.legacy_key_dir)
    users = UserStore(database, settings.password_hasher())
    _seed_demo_users(settings, users)
    clients = ClientStore(database, cache_ttl=settings.registry_cache_ttl)
    clients.seed(builtin_clients(settings.web_redirect_uris, settings.web_post_logout_redirect_uris))
    apis = ApiStore(database, cache_ttl=settings.registry_cache_ttl)
    apis.seed(settings.audience, settings.audience_scope, settings.audience_resource_uris)

    refresh_tokens = RefreshTokens(
        database,
        ttl=settings.refresh_token_ttl,
        family_ttl=settings.refresh_family_ttl,
        reuse_grace=settings.refresh_reuse_grace,
        # From the key-encryption key, which every replica of one database shares.
        successor_key=_subkey(keks[0], RefreshTokens.SUCCESSOR),
        previous_successor_keys=tuple(_subkey(old, RefreshTokens.SUCCESSOR) for old in keks[1:]),
    )
    Issuer(
        settings=settings,
        database=database,
        keys=keys,
        users=users,
        login_sessions=LoginSessions(database, settings.login_session_ttl),
        authorization_codes=AuthorizationCodes(database),
        refresh_tokens=refresh_tokens,
        clients=clients,
        client_assertions=ClientAssertions(database),
        apis=apis,
        remote_keys=RemoteKeys(settings.url),
        passkeys=Passkeys(database),
        # TOTP seeds are sealed like the signing keys: under the first KEK, opened by any.
        factors=TotpFactors(database, keks, issuer_name=urlsplit(settings.url).hostname or "jwt-split"),
    ).init_app(app)

    # RFC 9449 section 8: nonces every replica accepts, from the key-encryption key they share.
    dpop.init_app(
        app,
        database,
        nonce_secret=_subkey(keks[0], dpop.NONCE).hex(),
        nonce_lifetime=settings.dpop_nonce_lifetime,
        nonce_required=settings.dpop_nonce,
    )

    if settings.prune_interval:
        prune.start(database, settings.prune_interval)  # in each worker: create_app runs after the fork

    web.init_app(app)
    audit.init_app(app, address=client_address)  # the address the rate limits see
    csrf.init_app(app)
    csrf.exempt(oauth.bp)  # token and revocation endpoints take no cookies, so need no CSRF token
    ratelimit.init_app(app)
    protocol.init_app(app)  # every OAuth error: JSON, a redirect to the client, or a page
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(429, _rate_limited)
    for unusable in (OperationalError, InterfaceError):
        app.register_error_handler(unusable, _database_unavailable)
    app.register_error_handler(KeyStoreError, _signing_unavailable)
    app.register_error_handler(SeedUnreadable, _codes_unavailable)
    app.register_error_handler(IntegrityError, _raced_a_change)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(oauth.bp)
    introspect.init_app(app)  # RFC 7662, off unless ISSUER_INTROSPECTION_SECRET is set
    oidc.init_app(app)  # /userinfo
    statuslist.init_app(
        app,
        statuslist.StatusLists(
            database,
            keys,
            settings.url,
            capacity=settings.status_list_capacity,
            validity=settings.status_list_validity,
            ttl=settings.status_list_ttl,
            access_token_ttl=settings.access_token_ttl,
            enabled=settings.status_lists,
        ),
    )
    app.register_blueprint(browser.bp)
    app.register_blueprint(account.bp)  # /account: the user's factors (one-time codes, a link to the passkeys)
    app.register_blueprint(passkeys.bp)  # /account/passkeys and "Sign in with a passkey" (WebAuthn)
    device.init_app(app, database)  # RFC 8628: /device_authorization, /device, and its grant at /token
    return app


def check_start(settings: IssuerSettings | None = None) -> None:
    """Exit with one line naming the setting when the issuer cannot start; gunicorn's master runs this first.

    Checks the settings and that the key-encryption key opens the stored signing keys, before
    any worker starts: workers failing at once make gunicorn halt with tracebacks of its own.
    A database that cannot be read yet is left to the workers (they migrate it, or answer 503).
    """
    try:
        settings = settings or IssuerSettings.from_env()
        keks = settings.load_kek()
        database = settings.database()
    except SettingsError as exc:
        _cannot_start(exc, "INFO")
    except OSError as exc:  # such as a data directory that cannot be made or written
        where = exc.filename or (settings.data_dir if settings else "the data directory")
        reason = (
            f"{where} cannot be used: {exc.strerror or exc} (ISSUER_DATA_DIR, or the file ISSUER_DATABASE_URL names)"
        )
        _cannot_start(SettingsError(reason), "INFO")
    try:
        settings.key_store(database, keks).check_key_encryption_key()
    except WrongKeyEncryptionKey as exc:
        _cannot_start(exc, settings.log_level)
    except DBAPIError as exc:
        log.info("start-up check skipped the key store", extra={"fields": {"error": type(exc.orig).__name__}})
    finally:
        database.dispose()


def _cannot_start(exc: Exception, level: str) -> NoReturn:
    logs.configure("issuer", level)
    # One line: the message names the setting; a traceback would only bury it.
    log.critical("cannot start", extra={"fields": {"reason": str(exc)}})
    sys.exit(CANNOT_START)


def _session_secret(data_dir: Path) -> str:
    """Return the key that signs session cookies, created once in the data directory (0600).

    Written to a private temporary file and linked into place, so that workers starting
    together all read the same complete key.
    """
    path = data_dir / "session-secret"
    if not path.exists():
        private_dir(data_dir)
        temporary = data_dir / f".session-secret.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        temporary.unlink()
    private_file(path)  # tighten a secret someone loosened
    return path.read_text().strip()


def _origins(urls: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({"{0.scheme}://{0.netloc}".format(urlsplit(url)) for url in urls}))


def _csrf_failed(exc: CSRFError) -> ResponseReturnValue:
    log.info("csrf check failed", extra={"fields": {"reason": exc.description}})
    return PageError(
        "Form expired", "The form was missing its security token or it expired. Please try again."
    ).to_response()


def _rate_limited(_exc: HTTPException) -> ResponseReturnValue:
    seconds = retry_after()
    log.warning("rate limited", extra={"fields": {"path": request.path, "retry_after": seconds}})
    headers = {"Retry-After": str(seconds)}
    if request.blueprint in {"browser", "device", "passkeys", "account"} and request.endpoint not in JSON_ENDPOINTS:
        text = f"Too many login attempts. Please wait {seconds} seconds and try again."
        return PageError(
            "Too many attempts", text, error="too_many_requests", status=429, headers=headers
        ).to_response()
    return error_response(429, "too_many_requests", f"too many requests; retry in {seconds} seconds", headers)


def _subkey(key: bytes, purpose: str) -> bytes:
    """Derive a key for one purpose from another, so that no two uses share a key."""
    return hmac.new(key, purpose.encode(), hashlib.sha256).digest()


def _codes_unavailable(exc: SeedUnreadable) -> ResponseReturnValue:
    """Answer 503 when a user's TOTP seed cannot be opened (a KEK change half done); the log says why."""
    log.error("one-time code seed unreadable", extra={"fields": {"reason": str(exc)}})
    return PageError(
        "Temporarily unavailable",
        "One-time codes cannot be checked right now. Please try again shortly.",
        error="temporarily_unavailable",
        status=503,
        headers={"Retry-After": "5"},
    ).to_response()


def _database_unavailable(exc: OperationalError | InterfaceError) -> ResponseReturnValue:
    """Answer 503 when the database cannot be used right now (unreachable, or a lock held too long)."""
    if _lock_wait_timed_out(exc):  # the database answers: a row or SQLite's write lock was held too long
        log.warning("database lock wait timed out", extra={"fields": {"error": type(exc.orig).__name__}})
        return error_response(
            503, "temporarily_unavailable", "the issuer is busy; try again shortly", {"Retry-After": "1"}
        )
    log.error("database unavailable", extra={"fields": {"error": type(exc.orig).__name__}})
    return error_response(
        503, "temporarily_unavailable", "the issuer cannot reach its database; try again shortly", {"Retry-After": "5"}
    )


def _lock_wait_timed_out(exc: OperationalError | InterfaceError) -> bool:
    """Return whether `exc` is a lock wait that timed out: PostgreSQL's `lock_timeout` (55P03), SQLite's busy timeout."""
    if getattr(exc.orig, "sqlstate", None) == "55P03":
        return True
    return isinstance(exc.orig, sqlite3.OperationalError) and "database is locked" in str(exc.orig)


def _raced_a_change(exc: IntegrityError) -> ResponseReturnValue:
    """Answer 409 when a write broke a constraint because what it refers to changed meanwhile.

    A login racing `users delete` (its code or refresh token refers to a user just deleted), a
    registration removed mid-request: nothing was written, and asking again gets the real answer.
    """
    log.warning("request raced a change", extra={"fields": {"error": type(exc.orig).__name__}})
    return error_response(409, "conflict", "what this request refers to changed while it ran; try again")


def _signing_unavailable(exc: KeyStoreError) -> ResponseReturnValue:
    """Answer 503 when no key can sign right now; the log says why, the client only that it may retry."""
    log.error("no signing key", extra={"fields": {"reason": str(exc)}})
    return error_response(
        503,
        "temporarily_unavailable",
        "the issuer cannot sign tokens right now; try again shortly",
        {"Retry-After": "5"},
    )


def _seed_demo_users(settings: IssuerSettings, users: UserStore) -> None:
    """Add the users named in ISSUER_DEMO_USERS that do not exist yet (run and compose only)."""
    for name, password, scope in parse_demo_users(settings.demo_users):
        if users.get(name) is not None:
            continue
        try:
            # A demo user gets a display name and an address at example.com (RFC 2606: nobody's).
            users.add(name, password, scope, enforce_policy=False, name=name.capitalize(), email=f"{name}@example.com")
            log.info("seeded demo user", extra={"fields": {"user": name, "scope": scope}})
        except UserError:
            pass  # another worker seeded it first
