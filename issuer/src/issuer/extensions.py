"""Typed access to the process-wide objects `create_app` keeps in `app.extensions`."""

from __future__ import annotations

from typing import cast

from argon2 import PasswordHasher
from flask import current_app

from issuer.clients import Client
from issuer.codes import AuthorizationCodes
from issuer.db import get_db
from issuer.keys import KeyStore
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
from issuer.tokens import RefreshTokens
from issuer.users import UserStore


def settings() -> IssuerSettings:
    """Return the app's settings."""
    return cast(IssuerSettings, current_app.extensions["issuer.settings"])


def key_store() -> KeyStore:
    """Return the app's key store."""
    return cast(KeyStore, current_app.extensions["issuer.keys"])


def clients() -> dict[str, Client]:
    """Return the registered clients by id."""
    return cast(dict[str, Client], current_app.extensions["issuer.clients"])


def users() -> UserStore:
    """Return the user store on this request's database connection."""
    return UserStore(get_db(), cast(PasswordHasher, current_app.extensions["issuer.hasher"]))


def login_sessions() -> LoginSessions:
    """Return the login sessions on this request's database connection."""
    return LoginSessions(get_db(), settings().login_session_ttl)


def authorization_codes() -> AuthorizationCodes:
    """Return the authorization codes on this request's database connection."""
    return AuthorizationCodes(get_db())


def refresh_tokens() -> RefreshTokens:
    """Return the refresh token store on this request's database connection."""
    return RefreshTokens(get_db(), settings().refresh_token_ttl)
