"""Unit tests for issuer.cli through click's CliRunner, with ISSUER_DATA_DIR pointing at tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pty
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import migrations
from issuer.apis import ApiStore
from issuer.cli import main
from issuer.clients import ClientStore
from issuer.db import Database
from issuer.keys import KeyStore
from issuer.settings import IssuerSettings
from issuer.tokens import Grant, RefreshError, RefreshTokens
from issuer.users import UserStore
from jwt_verifier.jose import public_jwk
from tests.support.threads import together
from tests.support.tokens import rsa_key_with_exponent

KID = r"[A-Za-z0-9_-]{43}"


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return issuer_settings


@pytest.fixture
def runner(settings: IssuerSettings) -> CliRunner:
    """A runner whose environment points the CLI at the test's data directory, cheap argon2."""
    return CliRunner(
        env={
            "ISSUER_DATA_DIR": str(settings.data_dir),
            "ISSUER_ARGON2_TIME_COST": str(settings.argon2_time_cost),
            "ISSUER_ARGON2_MEMORY_KIB": str(settings.argon2_memory_kib),
        }
    )


@pytest.fixture
def database(settings: IssuerSettings) -> Iterator[Database]:
    """The database the CLI works on."""
    opened = settings.database()
    yield opened
    opened.dispose()


@pytest.fixture
def user_store(settings: IssuerSettings, database: Database) -> UserStore:
    return UserStore(database, settings.password_hasher())


def _keys(settings: IssuerSettings) -> KeyStore:
    return dataclasses.replace(settings, key_reload_interval=0.0).key_store(settings.database(), settings.load_kek())


def _states(settings: IssuerSettings) -> dict[str, str]:
    return {record.kid: record.state for record in _keys(settings).records()}


def _add(runner: CliRunner, name: str = "carol", password: str = "correct horse", *args: str) -> Result:
    return runner.invoke(main, ["users", "add", name, *args], input=password + "\n")


# -- users --------------------------------------------------------------------------------


def test_users_add_reads_the_password_from_stdin(runner: CliRunner, user_store: UserStore) -> None:
    result = _add(runner, "carol", "correct horse", "--scope", "profile admin")
    assert result.exit_code == 0, result.output
    assert result.output == "added carol with scope 'admin profile'\n"
    assert "correct horse" not in result.output
    user = user_store.authenticate("carol", "correct horse")
    assert user is not None
    assert user.scopes == frozenset({"profile", "admin"})


def test_users_add_defaults_to_the_profile_scope(runner: CliRunner, user_store: UserStore) -> None:
    assert _add(runner).exit_code == 0
    user = user_store.get("carol")
    assert user is not None
    assert user.scope == "profile"


def test_users_add_keeps_spaces_inside_the_password(runner: CliRunner, user_store: UserStore) -> None:
    assert _add(runner, "carol", "  spaced out  ").exit_code == 0
    assert user_store.authenticate("carol", "  spaced out  ") is not None


def test_users_add_refuses_a_password_on_the_command_line(runner: CliRunner, user_store: UserStore) -> None:
    positional = runner.invoke(main, ["users", "add", "carol", "correct horse"], input="")
    option = runner.invoke(main, ["users", "add", "carol", "--password", "correct horse"], input="")
    assert positional.exit_code == 2
    assert option.exit_code == 2
    assert user_store.get("carol") is None


def test_users_add_refuses_a_weak_password(runner: CliRunner, user_store: UserStore) -> None:
    result = _add(runner, "carol", "short")
    assert result.exit_code == 1
    assert "Error: password must be at least 8 characters" in result.output
    assert user_store.get("carol") is None


def test_users_add_refuses_a_malformed_name(runner: CliRunner) -> None:
    result = _add(runner, "Carol")
    assert result.exit_code == 1
    assert "Error: username must be" in result.output


def test_users_add_refuses_an_existing_user(runner: CliRunner) -> None:
    assert _add(runner).exit_code == 0
    result = _add(runner, "carol", "another password")
    assert result.exit_code == 1
    assert "Error: user 'carol' already exists" in result.output


def test_users_list_shows_names_ids_and_scopes(runner: CliRunner, user_store: UserStore) -> None:
    _add(runner, "dave", "correct horse", "--scope", "profile")
    _add(runner, "carol", "correct horse", "--scope", "profile admin")
    result = runner.invoke(main, ["users", "list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 2
    carol, dave = user_store.get("carol"), user_store.get("dave")
    assert carol is not None
    assert dave is not None
    assert re.fullmatch(
        rf"carol  id {carol.id}  admin profile  created \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ  name -  email -", lines[0]
    )
    assert lines[1].startswith(f"dave  id {dave.id}  profile  created ")


def test_users_add_refuses_the_id_of_a_client_and_clients_add_the_name_of_a_user(runner: CliRunner) -> None:
    assert runner.invoke(main, ["clients", "add", "batch", "--grant", "password"]).exit_code == 0
    refused = _add(runner, "batch")
    assert (refused.exit_code, refused.output.splitlines()[-1]) == (
        1,
        "Error: a client is registered as 'batch': a user may not have a client's id as a name",
    )
    assert _add(runner, "carol").exit_code == 0
    result = runner.invoke(main, ["clients", "add", "carol", "--grant", "password"])
    assert (result.exit_code, result.output.splitlines()[-1]) == (
        1,
        "Error: a user is named 'carol': a client may not have a user's name as its id",
    )


def test_users_add_records_the_name_and_email(runner: CliRunner, user_store: UserStore) -> None:
    result = _add(runner, "carol", "correct horse", "--name", "Carol Cat", "--email", "carol@example.com")
    assert result.exit_code == 0, result.output
    user = user_store.get("carol")
    assert user is not None
    assert (user.name, user.email, user.email_verified) == ("Carol Cat", "carol@example.com", False)
    assert user.updated_at == user.created_at
    listed = runner.invoke(main, ["users", "list"]).output
    assert listed.endswith("  name Carol Cat  email carol@example.com\n")


def test_users_add_refuses_a_malformed_email(runner: CliRunner, user_store: UserStore) -> None:
    result = _add(runner, "carol", "correct horse", "--email", "not an address")
    assert result.exit_code == 1
    assert "Error: email must look like name@example.com" in result.output
    assert user_store.get("carol") is None


def test_users_update_changes_only_what_it_is_given(runner: CliRunner, user_store: UserStore) -> None:
    _add(runner, "carol", "correct horse", "--name", "Carol", "--email", "carol@example.com", "--email-verified")
    result = runner.invoke(main, ["users", "update", "carol", "--scope", "profile admin"])
    assert result.exit_code == 0, result.output
    assert result.output == "updated carol: scope 'admin profile'  name Carol  email carol@example.com (verified)\n"
    result = runner.invoke(main, ["users", "update", "carol", "--email", "c@example.org", "--name", "Carol C"])
    assert result.exit_code == 0, result.output
    user = user_store.get("carol")
    assert user is not None
    # A new address is not verified just because the old one was.
    assert (user.name, user.email, user.email_verified, user.scope) == (
        "Carol C",
        "c@example.org",
        False,
        "admin profile",
    )
    assert user_store.authenticate("carol", "correct horse") is not None


def test_users_update_refuses_an_unknown_user_or_nothing_to_do(runner: CliRunner) -> None:
    unknown = runner.invoke(main, ["users", "update", "nobody", "--name", "No One"])
    assert unknown.exit_code == 1
    assert "Error: no user named 'nobody'" in unknown.output
    _add(runner)
    nothing = runner.invoke(main, ["users", "update", "carol"])
    assert nothing.exit_code == 1
    assert "Error: nothing to change" in nothing.output


def test_users_delete_removes_the_user_and_revokes_tokens(
    runner: CliRunner, user_store: UserStore, database: Database
) -> None:
    _add(runner)
    carol = user_store.get("carol")
    assert carol is not None
    tokens = RefreshTokens(database, ttl=3600, family_ttl=7200, reuse_grace=30, successor_key=b"k" * 32)
    token = tokens.issue(Grant(carol.id, "carol", "cli", "profile"))
    result = runner.invoke(main, ["users", "delete", "carol"])
    assert (result.exit_code, result.output) == (0, "deleted carol\n")
    assert user_store.get("carol") is None
    with pytest.raises(RefreshError, match="not known"):
        tokens.rotate(token, "cli")


def test_users_delete_of_unknown_user_fails(runner: CliRunner) -> None:
    result = runner.invoke(main, ["users", "delete", "nobody"])
    assert result.exit_code == 1
    assert "Error: no user named 'nobody'" in result.output


def test_bad_setting_stops_the_cli_naming_the_variable(runner: CliRunner) -> None:
    result = runner.invoke(main, ["users", "list"], env={"ISSUER_ARGON2_TIME_COST": "lots"})
    assert result.exit_code == 1
    assert "Error: ISSUER_ARGON2_TIME_COST must be a whole number" in result.output


# -- keys ---------------------------------------------------------------------------------


def test_keys_list_shows_the_full_kid_state_and_dates(runner: CliRunner, settings: IssuerSettings) -> None:
    (kid,) = _states(settings)
    result = runner.invoke(main, ["keys", "list"])
    assert result.exit_code == 0
    date = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(
        rf"{re.escape(kid)}  active    created {date}  activated {date}  retiring -  retired -\n", result.output
    )


def test_keys_rotate_stages_a_next_key(runner: CliRunner, settings: IssuerSettings) -> None:
    (active,) = _states(settings)
    result = runner.invoke(main, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    match = re.match(rf"({KID})  next ", result.output)
    assert match is not None
    assert _states(settings) == {active: "active", match.group(1): "next"}
    assert _keys(settings).signing_key().kid == active


def test_second_keys_rotate_fails_with_a_clear_message(runner: CliRunner, settings: IssuerSettings) -> None:
    runner.invoke(main, ["keys", "rotate"])
    before = _states(settings)
    result = runner.invoke(main, ["keys", "rotate"])
    assert result.exit_code == 1
    assert "is already staged as next" in result.output
    assert "keys rotate --now" in result.output
    assert _states(settings) == before


def test_keys_rotate_now_activates_the_staged_key(runner: CliRunner, settings: IssuerSettings) -> None:
    (old,) = _states(settings)
    staged = _keys(settings).rotate().kid
    result = runner.invoke(main, ["keys", "rotate", "--now"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{staged}  active ")
    assert _states(settings) == {old: "retiring", staged: "active"}
    listing = runner.invoke(main, ["keys", "list"]).output
    assert f"{old}  retiring" in listing


def test_keys_rotate_now_without_staged_key_makes_a_new_active_key(runner: CliRunner, settings: IssuerSettings) -> None:
    (old,) = _states(settings)
    result = runner.invoke(main, ["keys", "rotate", "--now"])
    assert result.exit_code == 0
    states = _states(settings)
    assert states.pop(old) == "retiring"
    assert list(states.values()) == ["active"]


def test_keys_retire_refuses_the_active_key(runner: CliRunner, settings: IssuerSettings) -> None:
    (active,) = _states(settings)
    result = runner.invoke(main, ["keys", "retire", active])
    assert result.exit_code == 1
    assert f"Error: key {active} is signing; run 'keys rotate --now' first" in result.output
    assert _states(settings) == {active: "active"}


def test_keys_retire_withdraws_a_retiring_key(runner: CliRunner, settings: IssuerSettings) -> None:
    (old,) = _states(settings)
    runner.invoke(main, ["keys", "rotate", "--now"])
    result = runner.invoke(main, ["keys", "retire", old])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{old}  retired ")
    assert old not in {jwk["kid"] for jwk in _keys(settings).published()}


def test_keys_retire_of_unknown_kid_fails(runner: CliRunner) -> None:
    result = runner.invoke(main, ["keys", "retire", "no-such-kid"])
    assert result.exit_code == 1
    assert "Error: no key has kid 'no-such-kid'" in result.output


def test_db_upgrade_reports_the_revision(runner: CliRunner) -> None:
    result = runner.invoke(main, ["db", "upgrade"])
    assert (result.exit_code, result.output) == (0, f"database at revision {migrations.head()}\n")


def test_help_lists_the_command_groups(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "users" in result.output
    assert "keys" in result.output


def test_an_unreachable_database_is_a_message_not_a_traceback(runner: CliRunner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "ISSUER_DATABASE_URL": f"postgresql://issuer:pw-secret@127.0.0.1:{port}/x",
        "ISSUER_KEY_ENCRYPTION_KEY": "A" * 43,
        "ISSUER_SESSION_SECRET": "S" * 48,
    }
    result = runner.invoke(main, ["users", "list"], env=env)
    assert result.exit_code == 1
    assert f"Error: cannot use the database at postgresql+psycopg://issuer:***@127.0.0.1:{port}/x" in result.output
    assert "pw-secret" not in result.output
    assert "Traceback" not in result.output


# -- clients and APIs -----------------------------------------------------------------------


def _jwks_file(tmp_path: Path, *keys: rsa.RSAPrivateKey) -> str:
    path = tmp_path / "client.jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(key.public_key()) for key in keys]}))
    return str(path)


def test_clients_add_with_a_jwks_file_registers_a_private_key_jwt_client(
    runner: CliRunner, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert runner.invoke(main, ["apis", "add", "orders-api", "--scope", "orders:read"]).exit_code == 0
    result = runner.invoke(
        main,
        [
            "clients",
            "add",
            "reports",
            "--grant",
            "client_credentials",
            "--scope",
            "orders:read",
            "--audience",
            "orders-api",
            "--jwks-file",
            _jwks_file(tmp_path, rsa_key),
        ],
    )
    assert (result.exit_code, result.output) == (
        0,
        "added client reports (private_key_jwt; grants: client_credentials; APIs: orders-api)\n",
    )
    listing = runner.invoke(main, ["clients", "list"]).output.splitlines()
    assert (
        "reports  private_key_jwt  grants: client_credentials  scope: orders:read  audiences: orders-api"
        "  redirect: (none)  post-logout redirect: (none)  dpop_bound_access_tokens: false  dpop_nonce: false"
        in listing
    )


def test_clients_add_with_a_secret_reads_it_from_stdin(runner: CliRunner, database: Database) -> None:
    result = runner.invoke(
        main,
        ["clients", "add", "batch", "--grant", "client_credentials", "--scope", "x", "--secret-stdin"],
        input="s" * 40 + "\n",
    )
    assert result.exit_code == 0, result.output
    client = ClientStore(database).get("batch")
    assert client is not None
    assert client.auth_method == "client_secret_basic"
    assert "s" * 40 not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grant", "client_credentials"], "needs a confidential client"),
        (["--grant", "authorization_code"], "needs at least one --redirect-uri"),
        (
            ["--grant", "authorization_code", "--redirect-uri", "not a url"],
            "--redirect-uri must be an absolute http(s) URL",
        ),
        (
            ["--grant", "client_credentials", "--jwks-uri", "ftp://keys.example/jwks"],
            "--jwks-uri must be an absolute http(s) URL",
        ),
        (["--grant", "client_credentials", "--jwks-uri", "https://k.example/j", "--secret-stdin"], "give one of"),
        (["--grant", "password", "--scope", "caf\u00e9"], "scope must be"),
        (
            [
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "https://a.example/cb",
                "--post-logout-redirect-uri",
                "/bye",
            ],
            "--post-logout-redirect-uri must be an absolute http(s) URL",
        ),
        (
            [
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "https://a.example/cb",
                "--post-logout-redirect-uri",
                "https://a.example/bye#top",
            ],
            "--post-logout-redirect-uri must not have a query or fragment",
        ),
        (["--grant", "client_credentials", "--jwks-file", "/nonexistent.json"], "is not a JWKS of RS256 public keys"),
    ],
)
def test_clients_add_refuses_incoherent_registrations(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(main, ["clients", "add", "x", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("exponent", "bits", "message"),
    [
        (2**1000 + 1, 2048, "exponent must be 65537"),
        (3, 2048, "exponent must be 65537"),
        (65537, 4160, "modulus must have 2048 to 4096 bits"),
    ],
    ids=["exponent-1000-bits", "exponent-3", "modulus-4160-bits"],
)
def test_clients_add_refuses_a_key_costlier_than_the_bounds(
    runner: CliRunner, tmp_path: Path, exponent: int, bits: int, message: str
) -> None:
    jwks = _jwks_file(tmp_path, rsa_key_with_exponent(exponent, bits))
    result = runner.invoke(main, ["clients", "add", "x", "--grant", "client_credentials", "--jwks-file", jwks])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_clients_add_refuses_a_jwks_holding_a_private_key(
    runner: CliRunner, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    private = tmp_path / "private.json"
    jwk = {**public_jwk(rsa_key.public_key()), "d": "AQAB", "p": "AQAB"}
    private.write_text(json.dumps({"keys": [jwk]}))
    result = runner.invoke(main, ["clients", "add", "x", "--grant", "client_credentials", "--jwks-file", str(private)])
    assert result.exit_code == 1
    assert "private key" in result.output


def test_clients_add_registers_post_logout_redirect_uris_and_replace_keeps_them(
    runner: CliRunner, database: Database
) -> None:
    base = ["clients", "add", "shop", "--grant", "authorization_code", "--redirect-uri", "https://shop.example/cb"]
    bye, again = "https://shop.example/bye", "https://shop.example/again"
    added = runner.invoke(main, [*base, "--post-logout-redirect-uri", bye, "--post-logout-redirect-uri", again])
    assert added.exit_code == 0, added.output
    shop = ClientStore(database).get("shop")
    assert shop is not None
    assert sorted(shop.post_logout_redirect_uris) == [again, bye]
    listing = runner.invoke(main, ["clients", "list"]).output
    assert f"post-logout redirect: {again} {bye}" in listing or f"post-logout redirect: {bye} {again}" in listing
    replaced = runner.invoke(main, [*base, "--post-logout-redirect-uri", bye, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    shop = ClientStore(database).get("shop")
    assert shop is not None
    assert shop.post_logout_redirect_uris == (bye,)


def test_clients_delete_removes_a_client(runner: CliRunner, database: Database) -> None:
    runner.invoke(main, ["clients", "add", "mobile", "--grant", "password"])
    assert runner.invoke(main, ["clients", "delete", "mobile"]).output == "deleted client mobile\n"
    assert ClientStore(database).get("mobile") is None
    assert runner.invoke(main, ["clients", "delete", "mobile"]).exit_code == 1


def test_apis_add_list_and_delete(runner: CliRunner) -> None:
    assert runner.invoke(main, ["apis", "add", "orders-api", "--scope", "orders:read orders:write"]).exit_code == 0
    listing = runner.invoke(main, ["apis", "list"]).output.splitlines()
    assert (
        "orders-api  orders:read orders:write  resource URIs: (none)  dpop_bound_access_tokens_required: false"
        in listing
    )
    assert runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x"]).exit_code == 1
    assert runner.invoke(main, ["apis", "delete", "orders-api"]).output == "deleted API orders-api\n"
    assert "orders-api" not in runner.invoke(main, ["apis", "list"]).output


ORDERS = ["apis", "add", "orders-api", "--scope", "orders:read"]


def test_apis_add_with_resource_uris_lists_them(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [*ORDERS, "--resource-uri", "http://localhost:8002", "--resource-uri", "https://orders.example/api"],
    )
    assert (result.exit_code, result.output) == (
        0,
        "added API orders-api with scope 'orders:read'"
        " and resource URIs http://localhost:8002 https://orders.example/api\n",
    )
    listing = runner.invoke(main, ["apis", "list"]).output.splitlines()
    assert (
        "orders-api  orders:read  resource URIs: http://localhost:8002 https://orders.example/api"
        "  dpop_bound_access_tokens_required: false"
    ) in listing


@pytest.mark.parametrize("uri", ["localhost:8002", "ftp://orders.example", "https://orders.example/#top"])
def test_apis_add_refuses_a_resource_uri_that_is_no_http_url(runner: CliRunner, uri: str) -> None:
    result = runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x", "--resource-uri", uri])
    assert result.exit_code == 1
    assert "a resource URI must be an absolute http(s) URL without query or fragment" in result.output
    assert "Traceback" not in result.output


def test_apis_add_refuses_a_resource_uri_of_another_api(runner: CliRunner) -> None:
    runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x", "--resource-uri", "http://localhost:8002"])
    for args in (["apis", "add", "billing-api"], ["apis", "add", "orders-api", "--replace"]):
        result = runner.invoke(main, [*args, "--scope", "x", "--resource-uri", "http://localhost:8002"])
        if args[-1] == "--replace":
            assert result.exit_code == 0, result.output  # its own URI, kept
            continue
        assert result.exit_code == 1
        assert "Error: resource URI 'http://localhost:8002' already names API 'orders-api'" in result.output


def test_apis_add_replace_replaces_scopes_and_uris_and_says_so(runner: CliRunner) -> None:
    runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x", "--resource-uri", "http://localhost:8002"])
    result = runner.invoke(main, ["apis", "add", "orders-api", "--scope", "y z", "--replace"])
    assert (result.exit_code, result.output) == (0, "replaced API orders-api with scope 'y z'\n")
    listing = runner.invoke(main, ["apis", "list"]).output.splitlines()
    assert "orders-api  y z  resource URIs: (none)  dpop_bound_access_tokens_required: false" in listing
    assert runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x"]).exit_code == 1  # still refused


def test_clients_add_replace_replaces_every_field_and_says_so(runner: CliRunner, database: Database) -> None:
    runner.invoke(main, ["clients", "add", "batch", "--grant", "client_credentials", "--secret-stdin"], input="a" * 40)
    again = runner.invoke(
        main, ["clients", "add", "batch", "--grant", "client_credentials", "--secret-stdin"], input="b" * 40
    )
    assert again.exit_code == 1
    assert "already exists" in again.output
    result = runner.invoke(
        main,
        ["clients", "add", "batch", "--grant", "client_credentials", "--scope", "x", "--secret-stdin", "--replace"],
        input="b" * 40,
    )
    assert (result.exit_code, result.output) == (
        0,
        "replaced client batch (client_secret_basic; grants: client_credentials)\n",
    )
    client = ClientStore(database).get("batch")
    assert client is not None
    assert (client.scopes, client.secret_hash) == (frozenset({"x"}), hashlib.sha256(b"b" * 40).hexdigest())
    added = runner.invoke(main, ["clients", "add", "mobile", "--grant", "password", "--replace"])
    assert added.output == "added client mobile (none; grants: password)\n"


def test_clients_add_replace_refuses_a_built_in_client(runner: CliRunner) -> None:
    result = runner.invoke(main, ["clients", "add", "resource-web", "--grant", "password", "--replace"])
    assert result.exit_code == 1
    assert "Error: client 'resource-web' is built in" in result.output


def _replace_from_a_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "issuer", *ORDERS, "--resource-uri", "http://localhost:8002", "--replace"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_apis_add_replace_run_twice_at_once_succeeds_both_times(
    runner: CliRunner, request: pytest.FixtureRequest, backend: str
) -> None:
    env = {name: value for name, value in runner.env.items() if value is not None}
    if backend == "postgresql":
        env |= {
            "ISSUER_DATABASE_URL": request.getfixturevalue("postgres_url"),
            "ISSUER_KEY_ENCRYPTION_KEY": "A" * 43,
            "ISSUER_SESSION_SECRET": "S" * 48,
        }
    results = together(2, lambda: _replace_from_a_process(env))
    for result in results:
        assert not isinstance(result, BaseException)
        assert result.returncode == 0, result.stderr
        assert result.stdout in {
            "added API orders-api with scope 'orders:read' and resource URIs http://localhost:8002\n",
            "replaced API orders-api with scope 'orders:read' and resource URIs http://localhost:8002\n",
        }


# -- a registration that cannot work is refused ------------------------------------------------


def _client_for(runner: CliRunner, *audiences: str) -> Result:
    args = [arg for audience in audiences for arg in ("--audience", audience)]
    return runner.invoke(main, ["clients", "add", "batch", "--grant", "password", *args])


def test_clients_add_refuses_an_audience_no_api_has_naming_the_registered_ones(
    runner: CliRunner, database: Database
) -> None:
    runner.invoke(main, ["apis", "add", "orders-api", "--scope", "orders:read"])
    result = _client_for(runner, "no-such-api")
    assert result.exit_code == 1
    assert "no API is registered as 'no-such-api'" in result.output
    assert "jwt-split-api, orders-api" in result.output  # the built-in API counts, seeded at start or not
    assert ClientStore(database).get("batch") is None


def test_clients_add_takes_a_resource_uri_as_its_api(runner: CliRunner, database: Database) -> None:
    runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x", "--resource-uri", "http://localhost:8002"])
    result = _client_for(runner, "http://localhost:8002", "jwt-split-api")
    assert result.exit_code == 0, result.output
    assert "APIs: jwt-split-api orders-api" in result.output
    client = ClientStore(database).get("batch")
    assert client is not None
    assert client.audiences == frozenset({"orders-api", "jwt-split-api"})  # stored by audience, never the URI


def test_clients_add_refuses_an_unregistered_resource_uri_with_a_hint(runner: CliRunner) -> None:
    result = _client_for(runner, "http://localhost:8002")
    assert result.exit_code == 1
    assert "--resource-uri" in result.output  # how to make the URI name an API


def test_apis_delete_refuses_while_a_client_is_limited_to_the_api(runner: CliRunner, database: Database) -> None:
    runner.invoke(main, ["apis", "add", "orders-api", "--scope", "x"])
    assert _client_for(runner, "orders-api").exit_code == 0
    refused = runner.invoke(main, ["apis", "delete", "orders-api"])
    assert refused.exit_code == 1
    assert "batch" in refused.output
    assert ApiStore(database).get("orders-api") is not None
    runner.invoke(main, ["clients", "delete", "batch"])
    assert runner.invoke(main, ["apis", "delete", "orders-api"]).output == "deleted API orders-api\n"


def test_clients_add_refuses_a_plain_http_redirect_uri_off_loopback_unless_allowed(
    runner: CliRunner, database: Database
) -> None:
    args = ["clients", "add", "shop", "--grant", "authorization_code", "--redirect-uri", "http://shop.example/cb"]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1
    assert "--allow-insecure-redirect" in refused.output
    assert ClientStore(database).get("shop") is None
    assert runner.invoke(main, [*args, "--allow-insecure-redirect"]).exit_code == 0


def _on_a_terminal(settings: IssuerSettings, *args: str) -> str:
    """Run `python -m issuer ARGS` with stdout and stderr on a pseudo-terminal, as an operator would; return what it showed."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "ISSUER_DATA_DIR": str(settings.data_dir), "ISSUER_ARGON2_MEMORY_KIB": "8192"}
    process = subprocess.Popen(
        [sys.executable, "-m", "issuer", *args], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0, shown
    return shown.decode()


def test_the_cli_shows_people_no_audit_json_on_a_terminal_and_the_trail_still_gets_it(settings: IssuerSettings) -> None:
    shown = _on_a_terminal(settings, "apis", "add", "orders-api", "--scope", "orders:read")
    assert shown.strip() == "added API orders-api with scope 'orders:read'"
    [line] = (settings.data_dir / "audit.log").read_text().splitlines()
    assert {"event": "api.created", "source": "cli", "api": "orders-api"}.items() <= json.loads(line).items()
    assert stat.S_IMODE((settings.data_dir / "audit.log").stat().st_mode) == 0o600


def test_apis_add_require_dpop_is_listed_and_replace_without_it_drops_it(runner: CliRunner) -> None:
    result = runner.invoke(main, [*ORDERS, "--require-dpop"])
    assert (result.exit_code, result.output) == (
        0,
        "added API orders-api with scope 'orders:read' (DPoP-bound tokens only)\n",
    )
    listing = runner.invoke(main, ["apis", "list"]).output.splitlines()
    assert "orders-api  orders:read  resource URIs: (none)  dpop_bound_access_tokens_required: true" in listing
    assert runner.invoke(main, [*ORDERS, "--replace"]).exit_code == 0
    assert "dpop_bound_access_tokens_required: false" in runner.invoke(main, ["apis", "list"]).output
