"""The process-wide objects `create_app` builds once, kept in `app.extensions["issuer"]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flask import Flask, current_app

from issuer.apis import ApiStore
from issuer.client_keys import RemoteKeys
from issuer.clients import ClientAssertions, ClientStore
from issuer.codes import AuthorizationCodes
from issuer.credentials import Passkeys
from issuer.db import Database
from issuer.keys import KeyStore
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
from issuer.tokens import RefreshTokens
from issuer.totp import TotpFactors
from issuer.users import UserStore


@dataclass(frozen=True)
class Issuer:
    """The settings, the database and its stores (one owner per table)."""

    settings: IssuerSettings
    database: Database
    keys: KeyStore
    users: UserStore
    login_sessions: LoginSessions
    authorization_codes: AuthorizationCodes
    refresh_tokens: RefreshTokens
    clients: ClientStore
    client_assertions: ClientAssertions
    apis: ApiStore
    remote_keys: RemoteKeys
    passkeys: Passkeys
    factors: TotpFactors

    def init_app(self, app: Flask) -> None:
        """Keep this issuer's objects on the app."""
        app.extensions["issuer"] = self


def of(app: Flask) -> Issuer:
    """Return the objects of an issuer app."""
    return cast(Issuer, app.extensions["issuer"])


def current() -> Issuer:
    """Return the objects of the app handling this request."""
    return of(current_app)
