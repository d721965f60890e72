"""The APIs (resource servers) tokens may be asked for, in the database (owner of `apis` and `api_resource_uris`).

A token's `aud` is the API it was asked for with RFC 8707's `resource` parameter, or the
default API (`ISSUER_AUDIENCE`, seeded at start) when none is named. Each API lists the scopes
it understands; a token for it carries only those.

A client names an API by its audience or by one of its resource URIs: a strict RFC 9728 client
asks for the `resource` an API's metadata gives (its public URL), and RFC 8707 section 2 lets
the issuer map that to the API's audience. URIs are compared exactly (RFC 9728 section 3.3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Row, case, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from issuer.cache import TtlCache, pinned
from issuer.db import Database, api_resource_uris, apis, every, find, insert_missing, new_revision
from issuer.narrowing import end_unpermitted_for_api
from issuer.tokens import RefreshTokens
from issuer.users import parse_scope
from shared import audit

log = logging.getLogger(__name__)

MAX_RESOURCE_URI_LENGTH = 2048


class InvalidApi(ValueError):
    """An API cannot be registered; the message says why."""


@dataclass(frozen=True)
class Api:
    """An API: its audience (the `aud` of its tokens), the scopes it understands, its other names."""

    audience: str
    scopes: frozenset[str]
    resource_uris: frozenset[str] = frozenset()
    require_dpop: bool = (
        False  # its tokens are DPoP-bound only (RFC 9449; RFC 9728 `dpop_bound_access_tokens_required`)
    )
    # The version of its scopes and DPoP requirement (issuer.db.new_revision): what a grant's write checks.
    revision: int = field(default=0, compare=False)

    @property
    def scope(self) -> str:
        """Return the scopes as an RFC 6749 space-separated string, sorted."""
        return " ".join(sorted(self.scopes))


def check_audience(audience: str) -> str:
    """Return the audience if it can name an API: printable ASCII without spaces, at most 255 characters."""
    if not audience or len(audience) > 255 or not audience.isascii() or not audience.isprintable() or " " in audience:
        raise InvalidApi("an API's audience must be 1-255 printable ASCII characters without spaces")
    return audience


def check_resource_uri(uri: str) -> str:
    """Return the URI if it can name an API: an absolute http(s) URL without query or fragment (RFC 8707 section 2)."""
    try:
        parts = urlsplit(uri)
        usable = (
            0 < len(uri) <= MAX_RESOURCE_URI_LENGTH
            and uri.isascii()
            and uri.isprintable()
            and " " not in uri
            and parts.scheme in {"http", "https"}
            and bool(parts.hostname)
            and not parts.query
            and "#" not in uri
        )
    except ValueError:  # such as an unclosed IPv6 bracket
        usable = False
    if not usable:
        raise InvalidApi(
            f"a resource URI must be an absolute http(s) URL without query or fragment, at most "
            f"{MAX_RESOURCE_URI_LENGTH} printable ASCII characters; got {uri!r}"
        )
    return uri


def new_api(audience: str, scope: str, resource_uris: Iterable[str] = (), *, require_dpop: bool = False) -> Api:
    """Return an API registration once each of its parts is valid (InvalidApi or UserError says which is not)."""
    uris = frozenset(map(check_resource_uri, resource_uris)) - {audience}  # the audience names it already
    return Api(check_audience(audience), parse_scope(scope), uris, require_dpop)


class InvalidTarget(ValueError):
    """The `resource` asked for is not an API this client may get tokens for (RFC 8707 `invalid_target`)."""


class ApiStore:
    """APIs in the issuer's database, read through a cache of `cache_ttl` seconds (issuer.cache)."""

    def __init__(self, database: Database, *, cache_ttl: float = 0.0) -> None:
        self.database = database
        self._cache: TtlCache[tuple[str, str], Api | None] = TtlCache(cache_ttl)

    def get(self, audience: str) -> Api | None:
        """Return the API with this audience, or None."""
        try:
            check_audience(audience)
        except InvalidApi:
            return None  # never sent to the database
        return pinned(
            ("api", audience), lambda: self._cache.get(("audience", audience), lambda key: self._read(key[1]))
        )

    def _read(self, audience: str) -> Api | None:
        row = find(self.database, apis.c.audience, audience)
        if row is None:
            return None
        with self.database.reading() as conn:
            uris = conn.execute(select(api_resource_uris.c.uri).where(api_resource_uris.c.audience == audience))
            return _api(row, uris.scalars())

    def resolve(self, resource: str) -> Api | None:
        """Return the API that `resource` names, by its audience or by one of its resource URIs, or None."""
        api = self.get(resource)
        if api is not None:
            return api
        try:
            check_resource_uri(resource)
        except InvalidApi:
            return None  # never registered, never sent to the database
        named = self._cache.get(("uri", resource), lambda key: self._by_uri(key[1]))
        return None if named is None else self.get(named.audience)  # the version this request reads

    def _by_uri(self, uri: str) -> Api | None:
        row = find(self.database, api_resource_uris.c.uri, uri)
        return None if row is None else self._read(row.audience)

    def choose(self, resource: str | None, *, default: str, allowed: Callable[[str], bool]) -> Api:
        """Return the API a grant is for: the one `resource` names, or the default API.

        `allowed` says whether the client may get tokens for an audience.
        """
        api = self.get(default) if resource is None else self.resolve(resource)
        if api is None or not allowed(api.audience):
            raise InvalidTarget("the resource is not an API this client may get tokens for")
        return api

    def forget_cached(self) -> None:
        """Forget this worker's copies: the next read of each API asks the database (one changed meanwhile)."""
        self._cache.clear()

    def list(self) -> list[Api]:
        """Return every API by audience."""
        names: dict[str, set[str]] = {}
        for row in every(self.database, api_resource_uris.c.uri):
            names.setdefault(row.audience, set()).add(row.uri)
        return [_api(row, names.get(row.audience, ())) for row in every(self.database, apis.c.audience)]

    def add(self, audience: str, scope: str, resource_uris: Iterable[str] = (), *, require_dpop: bool = False) -> Api:
        """Register an API, the scopes it understands, its resource URIs, and whether it takes DPoP-bound tokens only."""
        api = new_api(audience, scope, resource_uris, require_dpop=require_dpop)
        self._register(api, replace=False)
        audit.emit("api.created", api=api.audience)
        return api

    def replace(
        self, audience: str, scope: str, resource_uris: Iterable[str] = (), *, require_dpop: bool = False
    ) -> tuple[Api, bool]:
        """Register an API, or replace its scopes, resource URIs and DPoP requirement; return it and whether it existed."""
        api = new_api(audience, scope, resource_uris, require_dpop=require_dpop)
        existed = self._register(api, replace=True)
        audit.emit("api.changed" if existed else "api.created", api=api.audience)
        return api, existed

    def delete(self, audience: str) -> bool:
        """Delete an API and its resource URIs, and end the tokens issued for it; return whether it existed."""
        self._cache.clear()
        with self.database.transaction() as conn:
            deleted = conn.execute(delete(apis).where(apis.c.audience == audience)).rowcount > 0
            revoked = RefreshTokens.revoke_api(conn, audience) if deleted else 0
        if deleted:
            audit.emit("api.deleted", api=audience)
        if revoked:
            audit.emit("token.revoked", api=audience, tokens=revoked)
        return deleted

    def seed(self, audience: str, scope: str, resource_uris: Iterable[str] = ()) -> None:
        """Register the default API unless it exists, and give it those of its resource URIs it lacks.

        An operator's changes stay: its scopes as they are, the URIs it has; a URI that names
        another API stays that API's (and is logged). Workers seeding at once all succeed.
        """
        api = new_api(audience, scope, resource_uris)
        self._cache.clear()
        with self.database.transaction() as conn:
            created = insert_missing(conn, apis, _values(api))
            for uri in sorted(api.resource_uris):
                if _owner(conn, uri) is None:
                    insert_missing(conn, api_resource_uris, {"uri": uri, "audience": audience})
                owner = _owner(conn, uri)
                if owner != audience:
                    log.warning(
                        "resource URI of the default API names another API; left to it",
                        extra={"fields": {"uri": uri, "audience": audience, "other": owner}},
                    )
        if created:
            audit.emit("api.created", api=audience)

    def _register(self, api: Api, *, replace: bool) -> bool:
        """Store a registration in one transaction; return whether the API existed (and was replaced)."""
        self._cache.clear()
        try:
            with self.database.transaction() as conn:
                existed = not insert_missing(conn, apis, _values(api))
                if existed and not replace:
                    raise InvalidApi(f"API {api.audience!r} already exists")
                owner = conn.execute(
                    select(api_resource_uris.c.audience).where(api_resource_uris.c.uri == api.audience)
                ).scalar()
                if owner is not None and owner != api.audience:
                    raise InvalidApi(f"{api.audience!r} is a resource URI of API {owner!r}")
                if existed:
                    # A new revision only when they change; the row is locked either way (replaces take turns).
                    changed = or_(apis.c.scope != api.scope, apis.c.require_dpop != api.require_dpop)
                    was_bound_only = conn.execute(
                        select(apis.c.require_dpop).where(apis.c.audience == api.audience).with_for_update()
                    ).scalar_one()
                    conn.execute(
                        update(apis)
                        .where(apis.c.audience == api.audience)
                        .values(
                            scope=api.scope,
                            require_dpop=api.require_dpop,
                            revision=case((changed, new_revision()), else_=apis.c.revision),
                        )
                    )
                    conn.execute(delete(api_resource_uris).where(api_resource_uris.c.audience == api.audience))
                    # The access tokens of grants holding scopes it no longer defines end now (issuer.narrowing),
                    # and all of them when it comes to require DPoP: which are bound is not recorded.
                    end_unpermitted_for_api(
                        conn, api.audience, api.scopes, every=api.require_dpop and not was_bound_only
                    )
                for uri in sorted(api.resource_uris):
                    owner = _owner(conn, uri)
                    if owner is not None:
                        raise InvalidApi(f"resource URI {uri!r} already names API {owner!r}")
                    conn.execute(api_resource_uris.insert().values(uri=uri, audience=api.audience))
        except IntegrityError:
            # Only a concurrent registration of the same URI for another API gets here.
            raise InvalidApi("another API took one of these resource URIs at the same moment; try again") from None
        return existed


def _owner(conn: Connection, uri: str) -> str | None:
    """Return the audience of the API that `uri` names, as an audience or a resource URI, or None."""
    if conn.execute(select(apis.c.audience).where(apis.c.audience == uri)).first() is not None:
        return uri
    owner: str | None = conn.execute(
        select(api_resource_uris.c.audience).where(api_resource_uris.c.uri == uri)
    ).scalar()
    return owner


def _values(api: Api) -> dict[str, Any]:
    return {
        "audience": api.audience,
        "scope": api.scope,
        "created_at": int(time.time()),
        "require_dpop": api.require_dpop,
        "revision": new_revision(),
    }


def _api(row: Row[Any], resource_uris: Iterable[str]) -> Api:
    return Api(row.audience, parse_scope(row.scope), frozenset(resource_uris), bool(row.require_dpop), row.revision)
