"""Operator commands: `python -m issuer users ...` and `python -m issuer keys ...`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy.exc import InterfaceError, OperationalError

from issuer import migrations
from issuer.db import Database
from issuer.keys import KeyRecord, KeyStore, KeyStoreError
from issuer.settings import IssuerSettings
from issuer.users import UserError, UserStore
from shared.settings import SettingsError


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
    """Manage the issuer's users, signing keys and database (settings come from ISSUER_* variables)."""


@main.group("db")
def database_group() -> None:
    """Manage the issuer's database schema."""


@database_group.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the current schema (the issuer also does it at start)."""
    settings = _settings()
    with _database(settings) as database:
        click.echo(f"database at revision {migrations.current(database)}")


@main.group()
def users() -> None:
    """Add, list and delete users."""


@users.command("add")
@click.argument("name")
@click.option("--scope", default="profile", show_default=True, help="Space-separated scopes the user may be granted.")
def users_add(name: str, scope: str) -> None:
    """Add a user; the password is read from stdin or a prompt, never from the command line."""
    password = _read_password()
    with _users() as store:
        try:
            user = store.add(name, password, scope)
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"added {user.username} with scope {user.scope!r}")


@users.command("list")
def users_list() -> None:
    """List users and their scopes."""
    with _users() as store:
        for user in store.list():
            click.echo(f"{user.username}  {user.scope}  created {_date(user.created_at)}")


@users.command("delete")
@click.argument("name")
def users_delete(name: str) -> None:
    """Delete a user, ending their login sessions and revoking their refresh tokens."""
    with _users() as store:
        if not store.delete(name):
            raise click.ClickException(f"no user named {name!r}")
    click.echo(f"deleted {name}")


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
