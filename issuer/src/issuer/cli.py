"""Operator commands: `python -m issuer users ...` and `python -m issuer keys ...`."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy import delete
from sqlalchemy.exc import InterfaceError, OperationalError

from issuer import migrations, prune
from issuer.apis import ApiStore, InvalidApi, new_api
from issuer.client_keys import check_client_key
from issuer.clients import Client, ClientError, ClientStore
from issuer.db import Database
from issuer.db import passkeys as passkeys_table
from issuer.keys import KeyRecord, KeyStore, KeyStoreError
from issuer.sessions import LoginSessions
from issuer.settings import IssuerSettings
from issuer.totp import TotpFactors, user_id_of
from issuer.users import User, UserError, UserStore, parse_scope
from jwt_verifier.jose import load_verification_key
from shared import audit
from shared.settings import SettingsError, env_url


def _settings() -> IssuerSettings:
    try:
        return IssuerSettings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def _database(settings: IssuerSettings) -> Iterator[Database]:
    database = settings.database()
    try:
        database.upgrade()
        yield database
    except (OperationalError, InterfaceError) as exc:
        where = database.url.render_as_string(hide_password=True)
        raise click.ClickException(f"cannot use the database at {where}: {type(exc.orig).__name__}") from exc
    finally:
        database.dispose()


@contextmanager
def _users() -> Iterator[UserStore]:
    settings = _settings()
    with _database(settings) as database:
        yield UserStore(database, settings.password_hasher())


@contextmanager
def _keys() -> Iterator[KeyStore]:
    settings = _settings()
    with _database(settings) as database:
        try:
            store = settings.key_store(database, settings.load_kek())
            store.start(settings.legacy_key_dir)
            yield store
        except (KeyStoreError, SettingsError) as exc:
            raise click.ClickException(str(exc)) from exc


def _read_password() -> str:
    if sys.stdin.isatty():
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _deleted(deleted: bool, missing: str, done: str) -> None:
    """Say what a delete command did, or fail saying what was not there."""
    if not deleted:
        raise click.ClickException(missing)
    click.echo(done)


def _date(stamp: int | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _describe(record: KeyRecord) -> str:
    return (
        f"{record.kid}  {record.state:<8}  created {_date(record.created_at)}"
        f"  activated {_date(record.activated_at)}  retiring {_date(record.retiring_at)}"
        f"  retired {_date(record.retired_at)}"
    )


@click.group()
def main() -> None:
    """Manage the issuer's users, clients, APIs, signing keys and database (settings: ISSUER_* variables)."""


@main.group("db")
def database_group() -> None:
    """Manage the issuer's database: its schema, and pruning what expired."""


@database_group.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the current schema (the issuer also does it at start)."""
    settings = _settings()
    with _database(settings) as database:
        click.echo(f"database at revision {migrations.current(database)}")


@database_group.command("prune")
def db_prune() -> None:
    """Delete expired codes, refresh tokens of ended families and old login sessions (the issuer does it hourly)."""
    settings = _settings()
    with _database(settings) as database:
        pruned = prune.prune(database)
    click.echo(json.dumps(pruned.as_dict()))


@main.group()
def users() -> None:
    """Add, list and delete users."""


@users.command("add")
@click.argument("name")
@click.option("--scope", default="profile", show_default=True, help="Space-separated scopes the user may be granted.")
@click.option("--name", "full_name", help="The user's display name (OpenID Connect `name`).")
@click.option("--email", help="The user's e-mail address (OpenID Connect `email`).")
@click.option("--email-verified", is_flag=True, help="The address is known to be the user's.")
def users_add(name: str, scope: str, full_name: str | None, email: str | None, email_verified: bool) -> None:
    """Add a user; the password is read from stdin or a prompt, never from the command line."""
    password = _read_password()
    with _users() as store:
        try:
            user = store.add(name, password, scope, name=full_name, email=email, email_verified=email_verified)
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"added {user.username} with scope {user.scope!r}")


@users.command("update")
@click.argument("name")
@click.option("--scope", help="Space-separated scopes the user may be granted (replaces them).")
@click.option("--name", "full_name", help="The user's display name (OpenID Connect `name`).")
@click.option("--email", help="The user's e-mail address; a new one is unverified unless --email-verified.")
@click.option("--email-verified/--email-unverified", default=None, help="Whether the address is known to be theirs.")
def users_update(
    name: str, scope: str | None, full_name: str | None, email: str | None, email_verified: bool | None
) -> None:
    """Change a user's name, e-mail address or scopes (narrower scopes end the access tokens holding more)."""
    with _users() as store:
        try:
            user = store.update(name, name=full_name, email=email, email_verified=email_verified, scope=scope)
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"updated {user.username}: scope {user.scope!r}  {_profile(user)}")


@users.command("list")
def users_list() -> None:
    """List users, their scopes and profile."""
    with _users() as store:
        for user in store.list():
            click.echo(
                f"{user.username}  id {user.id}  {user.scope}  created {_date(user.created_at)}  {_profile(user)}"
            )


def _profile(user: User) -> str:
    verified = " (verified)" if user.email_verified else ""
    return f"name {user.name or '-'}  email {user.email or '-'}{verified}"


@users.command("delete")
@click.argument("name")
def users_delete(name: str) -> None:
    """Delete a user, ending their login sessions and revoking their refresh tokens."""
    with _users() as store:
        _deleted(store.delete(name), f"no user named {name!r}", f"deleted {name}")


@users.command("reset-factors")
@click.argument("name")
def users_reset_factors(name: str) -> None:
    """Remove a user's second factors (one-time codes, recovery codes, passkeys): they log in with the password alone.

    For a user who lost their phone and their recovery codes. Check who is asking first: this
    undoes what the factors protect. Every login session of the user ends too, with their
    refresh tokens and access tokens (whoever held a multi-factor session keeps nothing).
    """
    settings = _settings()
    with _database(settings) as database:
        user_id = user_id_of(database, name)
        if user_id is None:
            raise click.ClickException(f"no user named {name!r}")
        with database.transaction() as conn:
            had_totp = TotpFactors.remove_in(conn, user_id)
            passkeys = conn.execute(delete(passkeys_table).where(passkeys_table.c.user_id == user_id)).rowcount
            sessions, tokens = LoginSessions.end_all_of_user(conn, user_id)
        audit.emit("factor.removed", subject=name, subject_id=user_id)
        if sessions:
            audit.emit("session.ended", subject=name, subject_id=user_id)
        if tokens:
            audit.emit("token.revoked", subject=name, subject_id=user_id, tokens=tokens)
    removed = [
        *(["one-time codes and recovery codes"] if had_totp else []),
        *([f"{passkeys} passkey(s)"] if passkeys else []),
    ]
    click.echo(f"reset {name}: removed {', '.join(removed) if removed else 'nothing (no second factor)'}")
    click.echo(f"ended {sessions} login session(s), revoked {tokens} refresh token(s) and the user's access tokens")


@main.group()
def keys() -> None:
    """List, rotate and retire signing keys."""


@keys.command("list")
def keys_list() -> None:
    """Show every key: its full kid, its state and its dates."""
    with _keys() as store:
        for record in store.records():
            click.echo(_describe(record))


@keys.command("rotate")
@click.option("--now", is_flag=True, help="Emergency: the staged (or a new) key signs at once.")
def keys_rotate(now: bool) -> None:
    """Stage a new key as `next` (published, not yet signing)."""
    with _keys() as store:
        record = store.rotate(now=now)
    click.echo(_describe(record))


# A kid is base64url and may begin with '-' (one key in 64): such an argument is a kid, not an option.
@keys.command("retire", context_settings={"ignore_unknown_options": True})
@click.argument("kid")
def keys_retire(kid: str) -> None:
    """Withdraw a key that does not sign from the JWKS at once (for a compromised key).

    KID may begin with '-': `keys retire -AbC...` works, and so does `keys retire -- -AbC...`.
    """
    with _keys() as store:
        record = store.retire(kid)
    click.echo(_describe(record))


@keys.command("rewrap")
def keys_rewrap() -> None:
    """Re-encrypt every signing key under the first key-encryption key.

    For a KEK change with no downtime: restart every replica with ISSUER_KEY_ENCRYPTION_KEY
    set to "NEW OLD" (NEW seals, both open), run this once with the same setting, then
    restart the replicas with NEW alone (docs/operations.md). Running it again is harmless.
    """
    with _keys() as store:
        kids = store.rewrap()
        # Users' TOTP seeds are sealed under the KEK too (issuer.totp): they move with the keys.
        seeds = TotpFactors(store.database, store.keks, issuer_name="-").reseal(store.keks[0])
    for kid in kids:
        click.echo(f"re-encrypted {kid}")
    click.echo(
        f"{len(kids)} key(s) re-encrypted: every signing key is sealed under the key-encryption key {store.kek_id} "
        "(the first of the setting); once every replica runs with it first, the others may be dropped"
    )
    click.echo(f"{seeds} one-time code secret(s) re-encrypted too")


@contextmanager
def _store(kind: type[ClientStore] | type[ApiStore]) -> Iterator[Any]:
    settings = _settings()
    with _database(settings) as database:
        try:
            yield kind(database)
        except (ClientError, InvalidApi) as exc:
            raise click.ClickException(str(exc)) from exc


def _read_jwks(path: str) -> str:
    """Return a registered JWKS file ('-': stdin) as JSON text, once it holds only usable RS256 public keys."""
    try:
        document = json.loads(sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8"))
        keys = document["keys"]
        if not isinstance(keys, list) or not keys:
            raise click.ClickException(f"{path} holds no keys")
        for jwk in keys:
            check_client_key(load_verification_key(jwk)[1])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{path} is not a JWKS of RS256 public keys: {exc}") from None
    return json.dumps({"keys": keys}, separators=(",", ":"))


def _done(existed: bool) -> str:
    return "replaced" if existed else "added"


def _words(items: frozenset[str] | tuple[str, ...] | None) -> str:
    return "-" if items is None else " ".join(sorted(items)) or "(none)"


@main.group()
def clients() -> None:
    """Register, list and delete OAuth clients."""


@clients.command("add")
@click.argument("client_id")
@click.option("--grant", "grants", multiple=True, required=True, help="A grant type the client may use (repeat).")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="An exact redirect URI (authorization_code).")
@click.option(
    "--post-logout-redirect-uri",
    "post_logout_redirect_uris",
    multiple=True,
    help="An exact URI the browser may return to after an RP-initiated logout (repeat).",
)
@click.option("--scope", default=None, help="Space-separated scopes the client may be granted (default: no limit).")
@click.option("--audience", "audiences", multiple=True, help="An API the client may get tokens for (default: any).")
@click.option(
    "--jwks-file", default=None, help="private_key_jwt: the client's public keys, as a JWKS file ('-': stdin)."
)
@click.option("--jwks-uri", default=None, help="private_key_jwt: the URL of the client's JWKS (fetched when needed).")
@click.option("--secret-stdin", is_flag=True, help="client_secret_basic: read the secret from stdin (32+ characters).")
@click.option("--replace", is_flag=True, help="Replace the client's whole registration if it exists (not a built-in).")
@click.option(
    "--allow-insecure-redirect",
    is_flag=True,
    help="Accept plain http redirect URIs on hosts other than loopback (a test network; RFC 9700 2.1).",
)
@click.option(
    "--require-dpop", is_flag=True, help="Issue the client DPoP-bound tokens only (RFC 9449): no proof, no token."
)
@click.option(
    "--require-dpop-nonce", is_flag=True, help="The client's DPoP proofs must carry the issuer's nonce (RFC 9449 8)."
)
def clients_add(
    client_id: str,
    grants: tuple[str, ...],
    redirect_uris: tuple[str, ...],
    post_logout_redirect_uris: tuple[str, ...],
    scope: str | None,
    audiences: tuple[str, ...],
    jwks_file: str | None,
    jwks_uri: str | None,
    secret_stdin: bool,
    replace: bool,
    allow_insecure_redirect: bool,
    require_dpop: bool,
    require_dpop_nonce: bool,
) -> None:
    """Register a client; without --jwks-file, --jwks-uri or --secret-stdin it is public (no credential).

    With --replace, running it again is harmless: an existing client gets exactly this registration.
    """
    if sum(map(bool, (jwks_file, jwks_uri, secret_stdin))) > 1:
        raise click.ClickException("give one of --jwks-file, --jwks-uri and --secret-stdin")
    try:
        for option, uri in [
            *(("--redirect-uri", uri) for uri in redirect_uris),
            *(("--post-logout-redirect-uri", uri) for uri in post_logout_redirect_uris),
            ("--jwks-uri", jwks_uri or ""),
        ]:
            if uri:
                env_url({option: uri}, option)
        scopes = None if scope is None else parse_scope(scope)
    except (SettingsError, UserError) as exc:
        raise click.ClickException(str(exc)) from exc
    client = Client(
        client_id,
        frozenset(grants),
        redirect_uris,
        scopes,
        frozenset(audiences) if audiences else None,
        auth_method="private_key_jwt" if jwks_file or jwks_uri else "none",
        jwks=_read_jwks(jwks_file) if jwks_file else None,
        jwks_uri=jwks_uri,
        post_logout_redirect_uris=post_logout_redirect_uris,
        require_dpop=require_dpop,
        require_dpop_nonce=require_dpop_nonce,
    )
    secret = _read_password() if secret_stdin else None
    settings = _settings()
    with _database(settings) as database:
        try:
            client = dataclasses.replace(client, audiences=_registered_apis(database, settings, audiences))
            store = ClientStore(database)
            insecure = allow_insecure_redirect
            added, existed = (
                store.replace(client, secret=secret, allow_insecure_redirect=insecure)
                if replace
                else (store.add(client, secret=secret, allow_insecure_redirect=insecure), False)
            )
        except ClientError as exc:
            raise click.ClickException(str(exc)) from exc
    apis = f"; APIs: {_words(added.audiences)}" if added.audiences is not None else ""
    dpop = "; DPoP-bound tokens only" if added.require_dpop else ""
    dpop += "; DPoP nonces required" if added.require_dpop_nonce else ""
    click.echo(
        f"{_done(existed)} client {added.client_id} "
        f"({added.auth_method}; grants: {_words(added.grant_types)}{apis}{dpop})"
    )


def _registered_apis(database: Database, settings: IssuerSettings, names: tuple[str, ...]) -> frozenset[str] | None:
    """Return the audiences of the APIs `names` name, by audience or resource URI; None for no names (any API).

    A name no API has is refused: the client would get `invalid_target` forever. The default
    API counts as registered even before the issuer's first start seeds it.
    """
    if not names:
        return None
    apis = ApiStore(database)
    default = {settings.audience, *settings.audience_resource_uris}
    audiences = set()
    for name in names:
        api = apis.resolve(name)
        if api is None and name not in default:
            registered = ", ".join(sorted({api.audience for api in apis.list()} | {settings.audience}))
            hint = (
                " (a URL names an API once registered with `apis add AUDIENCE --resource-uri URL`)"
                if "://" in name
                else ""
            )
            raise ClientError(f"no API is registered as {name!r}; registered APIs: {registered}{hint}")
        audiences.add(settings.audience if api is None else api.audience)
    return frozenset(audiences)


@clients.command("list")
def clients_list() -> None:
    """List clients: id, authentication, grants, scopes, APIs and redirect URIs."""
    with _store(ClientStore) as store:
        for client in store.list():
            click.echo(
                f"{client.client_id}  {client.auth_method}  grants: {_words(client.grant_types)}"
                f"  scope: {_words(client.scopes)}  audiences: {_words(client.audiences)}"
                f"  redirect: {_words(client.redirect_uris)}"
                f"  post-logout redirect: {_words(client.post_logout_redirect_uris)}"
                f"  dpop_bound_access_tokens: {str(client.require_dpop).lower()}"
                f"  dpop_nonce: {str(client.require_dpop_nonce).lower()}"
            )


@clients.command("delete")
@click.argument("client_id")
def clients_delete(client_id: str) -> None:
    """Delete a client, revoking its refresh tokens and spending its codes (the built-in ones come back at the next start)."""
    with _store(ClientStore) as store:
        _deleted(store.delete(client_id), f"no client has id {client_id!r}", f"deleted client {client_id}")


@main.group()
def apis() -> None:
    """Register, list and delete APIs (the audiences tokens may be asked for)."""


@apis.command("add")
@click.argument("audience")
@click.option("--scope", required=True, help="Space-separated scopes the API understands.")
@click.option(
    "--resource-uri",
    "resource_uris",
    multiple=True,
    help="Another name clients may ask for the API by, such as its RFC 9728 `resource` URL (repeat).",
)
@click.option("--replace", is_flag=True, help="Replace the API's registration (scopes, URIs, DPoP) if it exists.")
@click.option(
    "--require-dpop",
    is_flag=True,
    help="Issue only DPoP-bound tokens for it (RFC 9449): a token request without a proof is refused.",
)
def apis_add(audience: str, scope: str, resource_uris: tuple[str, ...], replace: bool, require_dpop: bool) -> None:
    """Register an API: tokens for it carry `aud` AUDIENCE and only these scopes.

    A client asking for `resource` AUDIENCE or one of its resource URIs gets such a token.
    """
    try:
        new_api(audience, scope, resource_uris)  # refuse bad input before opening the database
    except (InvalidApi, UserError) as exc:
        raise click.ClickException(str(exc)) from exc
    with _store(ApiStore) as store:
        api, existed = (
            store.replace(audience, scope, resource_uris, require_dpop=require_dpop)
            if replace
            else (store.add(audience, scope, resource_uris, require_dpop=require_dpop), False)
        )
    uris = f" and resource URIs {_words(api.resource_uris)}" if api.resource_uris else ""
    dpop = " (DPoP-bound tokens only)" if api.require_dpop else ""
    click.echo(f"{_done(existed)} API {api.audience} with scope {api.scope!r}{uris}{dpop}")


@apis.command("list")
def apis_list() -> None:
    """List APIs: audience, scopes, resource URIs and whether they take DPoP-bound tokens only."""
    with _store(ApiStore) as store:
        for api in store.list():
            click.echo(
                f"{api.audience}  {api.scope}  resource URIs: {_words(api.resource_uris)}"
                f"  dpop_bound_access_tokens_required: {str(api.require_dpop).lower()}"
            )


@apis.command("delete")
@click.argument("audience")
def apis_delete(audience: str) -> None:
    """Delete an API, unless a client is limited to it (the default one comes back at the next start).

    The tokens issued for it end: its refresh tokens are revoked and its access tokens' status
    set, so that an API registered again under its name opens to none of them; asking for it
    is `invalid_target`.
    """
    settings = _settings()
    with _database(settings) as database:
        limited = sorted(
            client.client_id
            for client in ClientStore(database).list()
            if client.audiences is not None and audience in client.audiences
        )
        if limited:
            raise click.ClickException(
                f"clients limited to API {audience!r}: {', '.join(limited)}; register them again without it "
                "(`clients add ID ... --replace`) or delete them first"
            )
        deleted = ApiStore(database).delete(audience)
    _deleted(deleted, f"no API has audience {audience!r}", f"deleted API {audience}")
