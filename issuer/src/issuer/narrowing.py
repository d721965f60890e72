"""What a grant may keep once a registration narrows, and the access tokens a narrowing ends now.

A grant holds scopes of its API and, with `openid`, identity scopes (OpenID Connect Core 1.0
section 5.4: `openid`, `profile`, `email`) the API does not define. After `clients add
--replace`, `users update --scope` or `apis add --replace`, a refresh or a code exchange keeps
only what the client, the user and the API still allow (`issuer.oauth._narrowed`, RFC 9700
section 2.3). The access tokens already issued of a grant that holds more end at once, in the
transaction of the change: the grant's status-list index is set INVALID and forgotten
(`issuer.statuslist.revoke_grants`), so that its refresh family, refreshed narrowed, gets a
new valid index. Every access token of a grant shares its index: a grant that ever held a
scope now refused ends whole, even its tokens that asked for less.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, select
from sqlalchemy.sql.expression import ColumnElement

from issuer.db import apis, status_grants
from issuer.statuslist import end_unpermitted, hold_new_grants

OPENID = "openid"
IDENTITY_SCOPES = frozenset({OPENID, "profile", "email"})


def kept_on_refresh(held: frozenset[str], api_scopes: frozenset[str]) -> frozenset[str]:
    """Return the identity scopes of a held grant that a refresh keeps (the API's own are narrowed apart)."""
    return held & (IDENTITY_SCOPES - api_scopes) if OPENID in held else frozenset()


def end_unpermitted_of_user(conn: Connection, user_id: str, scopes: frozenset[str]) -> int:
    """End the tokens of a user's grants holding a scope of their API the user no longer has; return how many slots changed."""
    api_scopes = {
        row.audience: frozenset(row.scope.split()) for row in conn.execute(select(apis.c.audience, apis.c.scope))
    }

    def permitted(audience: str, held: frozenset[str]) -> bool:
        return held - kept_on_refresh(held, api_scopes.get(audience, frozenset())) <= scopes

    return _end_unpermitted(conn, status_grants.c.user_id == user_id, permitted)


def end_unpermitted_for_api(conn: Connection, audience: str, scopes: frozenset[str], *, every: bool = False) -> int:
    """End the tokens of the grants for an API holding a scope it no longer defines (or, with `every`, all); return how many slots changed.

    `every` when the API comes to require DPoP: its bearer tokens must end, and which tokens are
    bound is not recorded, so all end; a bound family refreshed gets a new index.
    """

    def permitted(_audience: str, held: frozenset[str]) -> bool:
        return not every and held - kept_on_refresh(held, scopes) <= scopes

    hold_new_grants(conn)  # a grant made from the API's older copy meanwhile: read below, or refused
    return _end_unpermitted(conn, status_grants.c.audience == audience, permitted)


def _end_unpermitted(
    conn: Connection, where: ColumnElement[bool], permitted: Callable[[str, frozenset[str]], bool]
) -> int:
    return end_unpermitted(conn, where, lambda audience, scope: permitted(audience, frozenset(scope.split())))
