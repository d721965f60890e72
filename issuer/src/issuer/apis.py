"""The APIs (resource servers) tokens may be asked for, in the database (owner of `apis`).

A token's `aud` is the API it was asked for with RFC 8707's `resource` parameter, or the
default API (`ISSUER_AUDIENCE`, seeded at start) when none is named. Each API lists the scopes
it understands; a token for it carries only those.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from issuer.db import Database, apis, delete_where, every, find, insert_new
from issuer.users import parse_scope


class InvalidApi(ValueError):
    """An API cannot be registered; the message says why."""


@dataclass(frozen=True)
class Api:
    """An API: its audience (the `aud` of its tokens) and the scopes it understands."""

    audience: str
    scopes: frozenset[str]

    @property
    def scope(self) -> str:
        """Return the scopes as an RFC 6749 space-separated string, sorted."""
        return " ".join(sorted(self.scopes))


def check_audience(audience: str) -> str:
    """Return the audience if it can name an API: printable ASCII without spaces, at most 255 characters."""
    if not audience or len(audience) > 255 or not audience.isascii() or not audience.isprintable() or " " in audience:
        raise InvalidApi("an API's audience must be 1-255 printable ASCII characters without spaces")
    return audience


class InvalidTarget(ValueError):
    """The `resource` asked for is not an API this client may get tokens for (RFC 8707 `invalid_target`)."""


class ApiStore:
    """APIs in the issuer's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def get(self, audience: str) -> Api | None:
        """Return the API with this audience, or None."""
        try:
            check_audience(audience)
        except InvalidApi:
            return None  # never sent to the database
        row = find(self.database, apis.c.audience, audience)
        return None if row is None else _api(row)

    def choose(self, resource: str | None, *, default: str, allowed: Callable[[str], bool]) -> Api:
        """Return the API a grant is for: the `resource` asked for, or the default API.

        `allowed` says whether the client may get tokens for an audience.
        """
        audience = default if resource is None else resource
        api = self.get(audience)
        if api is None or not allowed(audience):
            raise InvalidTarget("the resource is not an API this client may get tokens for")
        return api

    def list(self) -> list[Api]:
        """Return every API by audience."""
        return [_api(row) for row in every(self.database, apis.c.audience)]

    def add(self, audience: str, scope: str) -> Api:
        """Register an API and the scopes it understands."""
        api = Api(check_audience(audience), parse_scope(scope))
        if not insert_new(
            self.database, apis, {"audience": api.audience, "scope": api.scope, "created_at": int(time.time())}
        ):
            raise InvalidApi(f"API {audience!r} already exists")
        return api

    def delete(self, audience: str) -> bool:
        """Delete an API; return whether it existed."""
        return delete_where(self.database, apis.c.audience, audience)

    def seed(self, audience: str, scope: str) -> None:
        """Register the default API unless it exists (an operator may have changed its scopes)."""
        if self.get(audience) is None:
            with contextlib.suppress(InvalidApi):  # another worker seeded it first
                self.add(audience, scope)


def _api(row: Row[Any]) -> Api:
    return Api(row.audience, parse_scope(row.scope))
