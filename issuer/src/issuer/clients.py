"""OAuth clients registered with the issuer, in the database.

Owner of `clients`, `client_post_logout_redirect_uris` and `client_assertions`.

A client is public (`none`: CLIs and browsers, which can keep no secret) or confidential:
`private_key_jwt` (RFC 7523: the issuer keeps only the client's public keys, from a registered
JWKS or a JWKS URL) or `client_secret_basic` (RFC 6749 2.3.1: the issuer keeps the secret's
SHA-256; secrets are long and random, so a fast hash is right). The two built-in clients, the
command line (`cli`) and the resource's browser login (`resource-web`), are seeded at start
from settings.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Row, bindparam, case, delete, or_, select, update

from issuer.cache import TtlCache, pinned
from issuer.codes import AuthorizationCodes
from issuer.db import (
    Database,
    client_assertions,
    client_post_logout_redirect_uris,
    clients,
    delete_where,
    every,
    insert_missing,
    new_revision,
    users,
)
from issuer.device_codes import DeviceCodes
from issuer.opaque import secret_hash
from issuer.statuslist import revoke_unpermitted
from issuer.tokens import RefreshTokens
from issuer.users import USER_ID, parse_scope
from shared import audit

DEFAULT_CLIENT_ID = "cli"
WEB_CLIENT_ID = "resource-web"
BUILTIN_CLIENT_IDS = frozenset({DEFAULT_CLIENT_ID, WEB_CLIENT_ID})

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 section 3.4
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "password", "client_credentials", DEVICE_CODE})
AUTH_METHODS = ("none", "private_key_jwt", "client_secret_basic")
MIN_SECRET_LENGTH = 32
MAX_URI_LENGTH = 2048


@dataclass(frozen=True)
class Client:
    """A registered client: what it may do, and how it proves who it is."""

    client_id: str
    grant_types: frozenset[str]
    redirect_uris: tuple[str, ...] = ()
    scopes: frozenset[str] | None = None  # None: no limit of the client's own
    audiences: frozenset[str] | None = None  # None: any registered API
    auth_method: str = "none"
    secret_hash: str | None = None
    jwks: str | None = None
    jwks_uri: str | None = None
    # OpenID Connect RP-Initiated Logout: where the browser may go after logging out, exactly.
    post_logout_redirect_uris: tuple[str, ...] = ()
    # RFC 9449 section 5.2 `dpop_bound_access_tokens`: no token without a DPoP proof.
    require_dpop: bool = False
    # RFC 9449 section 8: the client's proofs must carry a server nonce, whatever ISSUER_DPOP_NONCE says.
    require_dpop_nonce: bool = False
    # The registration's version (issuer.db.new_revision): what a grant's write checks it still is (issuer.statuslist).
    revision: int = field(default=0, compare=False)

    @property
    def name(self) -> str:
        """Return how the login page names the client."""
        return {WEB_CLIENT_ID: "the jwt-split resource", DEFAULT_CLIENT_ID: "the command line"}.get(
            self.client_id, self.client_id
        )

    def narrow(self, scopes: frozenset[str]) -> frozenset[str]:
        """Return the scopes this client may be granted out of `scopes`."""
        return scopes if self.scopes is None else scopes & self.scopes

    def may_ask_for(self, audience: str) -> bool:
        """Return whether this client may get tokens for the API `audience`."""
        return self.audiences is None or audience in self.audiences


class ClientError(ValueError):
    """A client cannot be registered or changed; the message says why."""


def builtin_clients(
    web_redirect_uris: tuple[str, ...], web_post_logout_redirect_uris: tuple[str, ...] = ()
) -> list[Client]:
    """Return the two clients every issuer has: the command line, and the resource's browser login."""
    return [
        Client(DEFAULT_CLIENT_ID, frozenset({"password", "refresh_token", DEVICE_CODE})),
        Client(
            WEB_CLIENT_ID,
            frozenset({"authorization_code", "refresh_token"}),
            web_redirect_uris,
            post_logout_redirect_uris=web_post_logout_redirect_uris,
        ),
    ]


def _with_secret(client: Client, secret: str | None, *, allow_insecure_redirect: bool = False) -> Client:
    """Return the client, authenticated by `secret` if one is given, once its registration is coherent."""
    if secret is not None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ClientError(f"a client secret must be at least {MIN_SECRET_LENGTH} characters")
        client = Client(**{**client.__dict__, "auth_method": "client_secret_basic", "secret_hash": secret_hash(secret)})
    return check_client(client, allow_insecure_redirect=allow_insecure_redirect)


def is_loopback(host: str) -> bool:
    """Return whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or ::1 (RFC 8252 section 7.3)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_redirect(uri: str) -> bool:
    """Return whether a redirect URI is plain http off loopback (RFC 9700 section 2.1: the code would travel in clear)."""
    parts = urlsplit(uri)
    return parts.scheme.lower() == "http" and not is_loopback(parts.hostname or "")


def check_client(client: Client, *, allow_insecure_redirect: bool = False) -> Client:
    """Return the client if its registration is coherent, or raise ClientError saying why.

    A plain http redirect URI must be on loopback (RFC 9700 section 2.1), unless the operator
    allows it (`allow_insecure_redirect`: a test network, say).
    """
    if not client.client_id or not client.client_id.isascii() or not client.client_id.isprintable():
        raise ClientError("a client id must be printable ASCII")
    if len(client.client_id) > 64 or " " in client.client_id:
        raise ClientError("a client id must be at most 64 characters, without spaces")
    if USER_ID.fullmatch(client.client_id.lower()):
        # A client's own token has the client id as `sub` (RFC 9068 section 2.2): never a user's `sub` (section 5).
        # Upper case too: a consumer that folds case must not mix the two either.
        raise ClientError("a client id must not be 32 hexadecimal digits: that is the form of a user's id")
    if not client.grant_types or not client.grant_types <= GRANT_TYPES:
        raise ClientError(f"grant types must be some of: {' '.join(sorted(GRANT_TYPES))}")
    if client.auth_method not in AUTH_METHODS:
        raise ClientError(f"the authentication method must be one of: {', '.join(AUTH_METHODS)}")
    if "authorization_code" in client.grant_types and not client.redirect_uris:
        raise ClientError("a client using authorization_code needs at least one --redirect-uri")
    if client.auth_method == "private_key_jwt" and (client.jwks is None) == (client.jwks_uri is None):
        raise ClientError("a private_key_jwt client has its keys in a JWKS file or at a JWKS URL: one of the two")
    for uri in client.redirect_uris:
        _check_redirect_uri(uri, "a redirect URI")
        if insecure_redirect(uri) and not allow_insecure_redirect:
            raise ClientError(
                f"redirect URI {uri!r} is plain http on a host other than loopback (localhost, 127.0.0.0/8, [::1]): "
                "the authorization code would travel in clear; use https, or --allow-insecure-redirect"
            )
    for uri in client.post_logout_redirect_uris:
        _check_redirect_uri(uri, "a post-logout redirect URI")
    if "client_credentials" in client.grant_types and client.auth_method == "none":
        raise ClientError("client_credentials needs a confidential client: --jwks-file, --jwks-uri or --secret-stdin")
    return client


def _check_redirect_uri(uri: str, what: str) -> None:
    """Raise ClientError unless `uri` is where a browser may safely be sent (RFC 6749 3.1.2, RFC 9700 4.1).

    An absolute http(s) URL with a host: never a `javascript:` or `data:` address, no user
    credentials (they would reach the page's Content-Security-Policy), no fragment.
    """
    if not (0 < len(uri) <= MAX_URI_LENGTH and uri.isascii() and uri.isprintable() and " " not in uri):
        raise ClientError(f"{what} must be 1-{MAX_URI_LENGTH} printable ASCII characters")
    try:
        parts = urlsplit(uri)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        valid = False
    if not valid or "@" in parts.netloc or "#" in uri:
        raise ClientError(f"{what} must be an absolute http(s) URL, without user credentials or a fragment")


class ClientStore:
    """Clients in the issuer's database, read through a cache of `cache_ttl` seconds (issuer.cache)."""

    def __init__(self, database: Database, *, cache_ttl: float = 0.0) -> None:
        self.database = database
        self._cache: TtlCache[str, Client | None] = TtlCache(cache_ttl)

    def get(self, client_id: str) -> Client | None:
        """Return the client, or None."""
        if not client_id or len(client_id) > 64 or "\x00" in client_id:
            return None  # never sent to the database: PostgreSQL refuses NUL in text outright
        return pinned(("client", client_id), lambda: self._cache.get(client_id, self._read))

    def _read(self, client_id: str) -> Client | None:
        with self.database.reading() as conn:
            row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
            if row is None:
                return None
            uris = conn.execute(
                select(client_post_logout_redirect_uris.c.uri)
                .where(client_post_logout_redirect_uris.c.client_id == client_id)
                .order_by(client_post_logout_redirect_uris.c.uri)
            )
            return _client(row, tuple(uris.scalars()))

    def forget_cached(self) -> None:
        """Forget this worker's copies: the next read of each client asks the database (one changed meanwhile)."""
        self._cache.clear()

    def list(self) -> list[Client]:
        """Return every client by id."""
        uris: dict[str, list[str]] = {}
        for row in every(self.database, client_post_logout_redirect_uris.c.uri):
            uris.setdefault(row.client_id, []).append(row.uri)
        return [_client(row, tuple(uris.get(row.client_id, ()))) for row in every(self.database, clients.c.client_id)]

    def add(self, client: Client, *, secret: str | None = None, allow_insecure_redirect: bool = False) -> Client:
        """Register a client; a secret is checked for length and stored only as its SHA-256."""
        client = _with_secret(client, secret, allow_insecure_redirect=allow_insecure_redirect)
        self._cache.clear()
        with self.database.transaction() as conn:
            _refuse_a_users_name(conn, client.client_id)
            if not insert_missing(conn, clients, _values(client)):
                raise ClientError(f"client {client.client_id!r} already exists")
            _put_post_logout_uris(conn, client)
        audit.emit("client.created", client=client.client_id)
        return client

    def replace(
        self, client: Client, *, secret: str | None = None, allow_insecure_redirect: bool = False
    ) -> tuple[Client, bool]:
        """Register a client, or replace every field of its registration; return it and whether it existed.

        The built-in clients follow the issuer's settings and are refused: a replaced `cli` or
        `resource-web` would break the login it serves until the next start put it back.
        """
        client = _with_secret(client, secret, allow_insecure_redirect=allow_insecure_redirect)
        if client.client_id in BUILTIN_CLIENT_IDS:
            raise ClientError(
                f"client {client.client_id!r} is built in (it follows the settings): it cannot be replaced"
            )
        self._cache.clear()
        with self.database.transaction() as conn:
            _refuse_a_users_name(conn, client.client_id)
            was_bound_only = conn.execute(
                select(clients.c.require_dpop).where(clients.c.client_id == client.client_id).with_for_update()
            ).scalar()
            existed = _put(conn, client)
            if existed:  # the access tokens it no longer permits end now, not when they expire
                # All of them when it comes to require DPoP: its bearer tokens must end, and which
                # tokens are bound is not recorded (a bound family refreshed gets a new index).
                every = client.require_dpop and not was_bound_only
                revoke_unpermitted(conn, client.client_id, functools.partial(_permits, client, every=every))
        audit.emit("client.changed" if existed else "client.created", client=client.client_id)
        return client, existed

    def delete(self, client_id: str) -> bool:
        """Delete a client and end its grants: its refresh tokens revoked, its codes (and device codes) spent; return whether it existed.

        One transaction: a client registered again under the same id (another secret, another
        owner) inherits no earlier grant (RFC 6749 section 10.4, RFC 9700 section 4.14). Login
        sessions are the user's, not the client's: they stay.
        """
        self._cache.clear()
        with self.database.transaction():
            deleted = delete_where(self.database, clients.c.client_id, client_id)
            revoked = RefreshTokens.revoke_client(self.database, client_id)
            AuthorizationCodes.spend_client(self.database, client_id)
            DeviceCodes.spend_client(self.database, client_id)
        if deleted:
            audit.emit("client.deleted", client=client_id)
        if revoked:
            audit.emit("token.revoked", client=client_id, tokens=revoked)
        return deleted

    def seed(self, builtins: Iterable[Client]) -> None:
        """Make the built-in clients what settings say (they follow ISSUER_WEB_REDIRECT_URIS).

        Insert, else update: with delete-then-insert, a worker starting beside another on
        PostgreSQL inserted a row the other had just re-inserted (an IntegrityError at start).
        """
        with self.database.transaction() as conn:
            if conn.dialect.name == "postgresql":
                # Replicas and workers seed together at start: take turns, or the second insert
                # of a built-in client fails on the first one's key (SQLite's writers queue anyway).
                conn.exec_driver_sql("LOCK TABLE clients IN SHARE ROW EXCLUSIVE MODE")
            created = [client.client_id for client in builtins if not _put(conn, client)]
        self._cache.clear()
        for client_id in created:  # a built-in follows the settings: only its first seeding is news
            audit.emit("client.created", client=client_id)


# Built once (see issuer.db.find): the assertions that expired before `now`.
_EXPIRED_ASSERTIONS = delete(client_assertions).where(client_assertions.c.expires_at < bindparam("now"))


class ClientAssertions:
    """The `jti` of every accepted client assertion, each accepted once until it expires (and up to SWEEP seconds more).

    The expired ones are deleted by the grants, one grant of a process in SWEEP seconds: not
    a statement in every grant, and never more than a second's worth of them at once. A `jti`
    kept a little past its assertion's expiry refuses nothing the expiry did not (RFC 7523
    section 3: kept "for the length of time for which the JWT would be considered valid").
    """

    SWEEP = 1.0

    def __init__(self, database: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self.database = database
        self.clock = clock
        self._swept_at: float | None = None

    def accept_once(self, client_id: str, jti: str, expires_at: int) -> bool:
        """Remember an assertion's `jti`; return False if this client presented it before."""
        values = {"jti_hash": secret_hash(f"{client_id}\x00{jti}"), "expires_at": expires_at}
        now = self.clock()
        sweep = self._swept_at is None or now - self._swept_at >= self.SWEEP
        if sweep:
            self._swept_at = now  # one thread sweeps; the others go on
        # In the token request's transaction, and spent even when the request then fails.
        with self.database.transaction() as conn:
            if sweep:
                conn.execute(_EXPIRED_ASSERTIONS, {"now": int(time.time())})
            if not insert_missing(conn, client_assertions, values):
                return False
        self.database.redo_on_rollback(lambda conn: insert_missing(conn, client_assertions, values))
        return True


def _permits(client: Client, audience: str, scope: str, *, every: bool = False) -> bool:
    """Return whether a client's registration permits a grant of `scope` for the API `audience` (none with `every`)."""
    held = parse_scope(scope)
    return not every and client.may_ask_for(audience) and client.narrow(held) == held


def _refuse_a_users_name(conn: Connection, client_id: str) -> None:
    """Raise ClientError if a user has `client_id` as a name: a service and a person would read alike."""
    if conn.execute(select(users.c.id).where(users.c.username == client_id)).first() is not None:
        raise ClientError(f"a user is named {client_id!r}: a client may not have a user's name as its id")


def _put(conn: Connection, client: Client) -> bool:
    """Insert the client's row, or give the existing one every field of it; return whether it existed."""
    values = _values(client)
    if insert_missing(conn, clients, values):
        _put_post_logout_uris(conn, client)
        return False
    del values["created_at"]
    revision = values.pop("revision")
    # A new revision only when a field changes (every start stores the built-in clients again);
    # the row is locked either way, so that two replacements take turns.
    changed = or_(*(clients.c[name].is_distinct_from(value) for name, value in values.items()))
    revision = case((changed, revision), else_=clients.c.revision)
    conn.execute(
        update(clients).where(clients.c.client_id == client.client_id).values({**values, "revision": revision})
    )
    _put_post_logout_uris(conn, client)
    return True


def _put_post_logout_uris(conn: Connection, client: Client) -> None:
    """Make the client's post-logout redirect URIs exactly its registration's."""
    table = client_post_logout_redirect_uris
    conn.execute(delete(table).where(table.c.client_id == client.client_id))
    for uri in dict.fromkeys(client.post_logout_redirect_uris):
        conn.execute(table.insert().values(client_id=client.client_id, uri=uri))


def _words(items: frozenset[str] | tuple[str, ...] | None) -> str | None:
    return None if items is None else " ".join(sorted(items) if isinstance(items, frozenset) else items)


def _values(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "grant_types": _words(client.grant_types),
        "redirect_uris": _words(client.redirect_uris),
        "scope": _words(client.scopes),
        "audiences": _words(client.audiences),
        "auth_method": client.auth_method,
        "secret_hash": client.secret_hash,
        "jwks": client.jwks,
        "jwks_uri": client.jwks_uri,
        "created_at": int(time.time()),
        "require_dpop": client.require_dpop,
        "require_dpop_nonce": client.require_dpop_nonce,
        "revision": new_revision(),
    }


def _client(row: Row[Any], post_logout_redirect_uris: tuple[str, ...] = ()) -> Client:
    return Client(
        client_id=row.client_id,
        grant_types=frozenset(row.grant_types.split()),
        redirect_uris=tuple(row.redirect_uris.split()),
        scopes=None if row.scope is None else parse_scope(row.scope),
        audiences=None if row.audiences is None else frozenset(row.audiences.split()),
        auth_method=row.auth_method,
        secret_hash=row.secret_hash,
        jwks=row.jwks,
        jwks_uri=row.jwks_uri,
        post_logout_redirect_uris=post_logout_redirect_uris,
        require_dpop=bool(row.require_dpop),
        require_dpop_nonce=bool(row.require_dpop_nonce),
        revision=row.revision,
    )
