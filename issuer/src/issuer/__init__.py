"""The jwt-split issuer: the only holder of the private keys; it logs users in and signs tokens."""

from __future__ import annotations

import logging

from argon2 import PasswordHasher
from flask import Flask

from issuer import db, oauth, wellknown
from issuer.clients import registered_clients
from issuer.keys import KeyStore
from issuer.settings import IssuerSettings
from issuer.users import UserError, UserStore, parse_demo_users
from shared import logs, web

log = logging.getLogger(__name__)


def create_app(settings: IssuerSettings | None = None) -> Flask:
    """Build the issuer app: database, key store, demo users and routes."""
    settings = settings or IssuerSettings.from_env()
    logs.configure("issuer", settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    db.initialise(settings.db_path)
    keys = KeyStore(
        settings.key_dir,
        settings.db_path,
        rsa_key_bits=settings.rsa_key_bits,
        reload_interval=settings.key_reload_interval,
    )
    keys.ensure_active()
    hasher = settings.password_hasher()
    _seed_demo_users(settings, hasher)

    app.extensions["issuer.settings"] = settings
    app.extensions["issuer.keys"] = keys
    app.extensions["issuer.hasher"] = hasher
    app.extensions["issuer.clients"] = registered_clients()

    web.init_app(app)
    db.init_app(app)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(oauth.bp)
    return app


def _seed_demo_users(settings: IssuerSettings, hasher: PasswordHasher) -> None:
    """Add the users named in ISSUER_DEMO_USERS that do not exist yet (run and compose only)."""
    if not settings.demo_users:
        return
    conn = db.connect(settings.db_path)
    try:
        store = UserStore(conn, hasher)
        for name, password, scope in parse_demo_users(settings.demo_users):
            if store.get(name) is not None:
                continue
            try:
                store.add(name, password, scope, enforce_policy=False)
                log.info("seeded demo user", extra={"fields": {"sub": name, "scope": scope}})
            except UserError:
                pass  # another worker seeded it first
    finally:
        conn.close()
