"""Typed access to the process-wide objects `create_app` keeps in `app.extensions`."""

from __future__ import annotations

from typing import cast

from flask import current_app

from issuer.clients import Client
from issuer.codes import AuthorizationCodes
from issuer.db import Database
from issuer.keys import KeyStore
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
from issuer.tokens import RefreshTokens
from issuer.users import UserStore


def settings() -> IssuerSettings:
    """Return the app's settings."""
    return cast(IssuerSettings, current_app.extensions["issuer.settings"])


def database() -> Database:
    """Return the app's database."""
    return cast(Database, current_app.extensions["issuer.database"])


def key_store() -> KeyStore:
    """Return the app's key store."""
    return cast(KeyStore, current_app.extensions["issuer.keys"])


def clients() -> dict[str, Client]:
    """Return the registered clients by id."""
    return cast(dict[str, Client], current_app.extensions["issuer.clients"])


def users() -> UserStore:
    """Return the user store."""
    return cast(UserStore, current_app.extensions["issuer.users"])


def login_sessions() -> LoginSessions:
    """Return the login sessions."""
    return cast(LoginSessions, current_app.extensions["issuer.login_sessions"])


def authorization_codes() -> AuthorizationCodes:
    """Return the authorization codes."""
    return cast(AuthorizationCodes, current_app.extensions["issuer.authorization_codes"])


def refresh_tokens() -> RefreshTokens:
    """Return the refresh token store."""
    return cast(RefreshTokens, current_app.extensions["issuer.refresh_tokens"])
