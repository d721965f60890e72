"""Unit tests for issuer.clients: registered clients, the built-in ones, and assertion replay."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time

import pytest
from sqlalchemy.exc import SQLAlchemyError

from issuer.clients import Client, ClientAssertions, ClientError, ClientStore, builtin_clients
from issuer.codes import AuthorizationCodes, CodeReused
from issuer.db import Database
from issuer.opaque import secret_hash
from issuer.tokens import Grant, RefreshError, RefreshTokens
from issuer.users import User, UserStore
from shared.pkce import s256
from tests.support.sql import rows
from tests.support.threads import together

SERVICE = Client(
    "reports",
    frozenset({"client_credentials"}),
    scopes=frozenset({"orders:read"}),
    auth_method="private_key_jwt",
    jwks='{"keys": []}',
)


@pytest.fixture
def clients(database: Database) -> ClientStore:
    return ClientStore(database)


def test_a_registered_client_reads_back_as_it_was_registered(clients: ClientStore) -> None:
    clients.add(SERVICE)
    assert clients.get("reports") == SERVICE


def test_a_secret_is_stored_only_as_its_sha256(clients: ClientStore, database: Database) -> None:
    secret = "s" * 40
    added = clients.add(Client("batch", frozenset({"client_credentials"}), scopes=frozenset()), secret=secret)
    assert added.auth_method == "client_secret_basic"
    (row,) = rows(database, "SELECT * FROM clients WHERE client_id = 'batch'")
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in [str(value) for value in row.values()]


def test_a_short_secret_is_refused(clients: ClientStore) -> None:
    with pytest.raises(ClientError, match="at least 32 characters"):
        clients.add(Client("batch", frozenset({"client_credentials"})), secret="short")


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (Client("", frozenset({"password"})), "printable ASCII"),
        (Client("two words", frozenset({"password"})), "without spaces"),
        (Client("x", frozenset({"implicit"})), "grant types must be"),
        (Client("x", frozenset()), "grant types must be"),
        (Client("x", frozenset({"authorization_code"})), "needs at least one --redirect-uri"),
        (Client("x", frozenset({"client_credentials"})), "needs a confidential client"),
    ],
)
def test_an_incoherent_registration_is_refused(clients: ClientStore, client: Client, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        clients.add(client)
    assert clients.get(client.client_id) is None


def test_a_client_is_registered_once(clients: ClientStore) -> None:
    clients.add(SERVICE)
    with pytest.raises(ClientError, match="already exists"):
        clients.add(SERVICE)


def test_the_built_in_clients_follow_the_settings_at_every_seed(clients: ClientStore) -> None:
    clients.seed(builtin_clients(("http://localhost:8001/callback",)))
    clients.seed(builtin_clients(("http://127.0.0.1:9001/callback",)))
    web = clients.get("resource-web")
    assert web is not None
    assert web.redirect_uris == ("http://127.0.0.1:9001/callback",)
    assert [client.client_id for client in clients.list()] == ["cli", "resource-web"]


def test_replicas_seeding_the_built_in_clients_together_take_turns(clients: ClientStore, database: Database) -> None:
    """Replicas (and workers) start together on one database: each seeds, none fails."""
    builtins = builtin_clients(("http://localhost:8001/callback",))
    failures: list[SQLAlchemyError] = []

    def seed_meanwhile() -> None:
        try:
            clients.seed(builtins)
        except SQLAlchemyError as exc:  # reported by the assertion below, in the test's thread
            failures.append(exc)

    racer = threading.Thread(target=seed_meanwhile)
    with database.transaction():
        clients.seed(builtins)  # another replica, in the middle of its own seed
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive(), "the second seed did not wait for the first"
    racer.join(timeout=10)
    assert failures == []
    assert [client.client_id for client in clients.list()] == ["cli", "resource-web"]


def test_a_client_without_its_own_limits_passes_everything_through() -> None:
    (cli, _) = builtin_clients(())
    assert cli.narrow(frozenset({"admin"})) == frozenset({"admin"})
    assert cli.may_ask_for("any-api")
    assert SERVICE.narrow(frozenset({"admin", "orders:read"})) == frozenset({"orders:read"})


@pytest.mark.parametrize("client_id", ["nul\x00", "a" * 65, ""])
def test_an_id_no_client_could_have_is_nobody(clients: ClientStore, client_id: str) -> None:
    assert clients.get(client_id) is None


def test_an_assertion_jti_is_accepted_once_per_client(database: Database) -> None:
    assertions = ClientAssertions(database)
    later = int(time.time()) + 60
    assert assertions.accept_once("reports", "jti-1", later) is True
    assert assertions.accept_once("reports", "jti-1", later) is False
    assert assertions.accept_once("batch", "jti-1", later) is True


def test_expired_assertion_records_are_purged_by_a_grant_a_second(database: Database) -> None:
    clock = [100.0]
    assertions = ClientAssertions(database, clock=lambda: clock[0])
    assertions.accept_once("reports", "old", int(time.time()) - 10)
    assertions.accept_once("reports", "new", int(time.time()) + 60)
    assert len(rows(database, "SELECT * FROM client_assertions")) == 2  # swept a moment ago: kept that long
    clock[0] += ClientAssertions.SWEEP
    assertions.accept_once("reports", "newer", int(time.time()) + 60)
    assert {row["jti_hash"] for row in rows(database, "SELECT * FROM client_assertions")} == {
        secret_hash(f"reports\x00{jti}") for jti in ("new", "newer")
    }


# -- replacing a registration (`clients add --replace`) ----------------------------------------


def test_replace_gives_an_existing_client_exactly_the_new_registration(clients: ClientStore) -> None:
    clients.add(SERVICE)
    new = Client(
        "reports", frozenset({"client_credentials"}), scopes=frozenset({"orders:write"}), audiences=frozenset({"x"})
    )
    replaced, existed = clients.replace(new, secret="n" * 40)
    assert existed is True
    assert clients.get("reports") == replaced
    assert (replaced.auth_method, replaced.jwks, replaced.scopes) == (
        "client_secret_basic",
        None,
        frozenset({"orders:write"}),
    )
    assert replaced.secret_hash == hashlib.sha256(b"n" * 40).hexdigest()


def test_replace_registers_a_new_client(clients: ClientStore) -> None:
    assert clients.replace(SERVICE) == (SERVICE, False)
    assert clients.get("reports") == SERVICE


def test_replace_checks_the_registration_and_changes_nothing_when_it_is_incoherent(clients: ClientStore) -> None:
    clients.add(SERVICE)
    with pytest.raises(ClientError, match="needs a confidential client"):
        clients.replace(Client("reports", frozenset({"client_credentials"})))
    assert clients.get("reports") == SERVICE


@pytest.mark.parametrize("client_id", ["cli", "resource-web"])
def test_the_built_in_clients_cannot_be_replaced(clients: ClientStore, client_id: str) -> None:
    clients.seed(builtin_clients(("http://localhost:8001/callback",)))
    before = clients.get(client_id)
    with pytest.raises(ClientError, match="built in"):
        clients.replace(Client(client_id, frozenset({"password"})))
    assert clients.get(client_id) == before


def test_replacing_one_client_from_several_processes_at_once_succeeds(clients: ClientStore) -> None:
    results = together(6, lambda: clients.replace(SERVICE)[1])
    assert sorted(map(repr, results)) == ["False"] + ["True"] * 5  # one added it, the others replaced it
    assert clients.list() == [SERVICE]


def test_seeding_the_built_in_clients_from_workers_starting_at_once_succeeds(database: Database) -> None:
    builtins = builtin_clients(("http://localhost:8001/callback",))
    results = together(6, lambda: ClientStore(database).seed(builtins))
    assert results == [None] * 6
    assert ClientStore(database).list() == builtins


# -- post-logout redirect URIs (RP-Initiated Logout) ---------------------------------------

SHOP = Client(
    "shop",
    frozenset({"authorization_code"}),
    ("https://shop.example/cb",),
    post_logout_redirect_uris=("https://shop.example/bye", "https://shop.example/again"),
)


def test_post_logout_redirect_uris_read_back_as_registered(clients: ClientStore) -> None:
    clients.add(SHOP)
    shop = clients.get("shop")
    assert shop is not None
    assert sorted(shop.post_logout_redirect_uris) == sorted(SHOP.post_logout_redirect_uris)
    (listed,) = clients.list()
    assert sorted(listed.post_logout_redirect_uris) == sorted(SHOP.post_logout_redirect_uris)


def test_replace_gives_exactly_the_new_post_logout_redirect_uris(clients: ClientStore) -> None:
    clients.add(SHOP)
    clients.replace(dataclasses.replace(SHOP, post_logout_redirect_uris=("https://shop.example/bye",)))
    shop = clients.get("shop")
    assert shop is not None
    assert shop.post_logout_redirect_uris == ("https://shop.example/bye",)


def test_a_client_added_twice_keeps_its_first_post_logout_redirect_uris(clients: ClientStore) -> None:
    clients.add(SHOP)
    with pytest.raises(ClientError, match="already exists"):
        clients.add(dataclasses.replace(SHOP, post_logout_redirect_uris=("https://evil.example/",)))
    shop = clients.get("shop")
    assert shop is not None
    assert "https://evil.example/" not in shop.post_logout_redirect_uris


def test_the_web_client_follows_the_post_logout_setting_at_every_seed(clients: ClientStore) -> None:
    clients.seed(builtin_clients(("http://localhost:8001/callback",), ("http://localhost:8001/logged-out",)))
    clients.seed(builtin_clients(("http://127.0.0.1:9001/callback",), ("http://127.0.0.1:9001/logged-out",)))
    web = clients.get("resource-web")
    assert web is not None
    assert web.post_logout_redirect_uris == ("http://127.0.0.1:9001/logged-out",)


@pytest.mark.parametrize("uri", ["", "https://shop.example/" + "a" * 2048, "https://shop.example/a b", "caf\u00e9"])
def test_an_unusable_post_logout_redirect_uri_is_refused(clients: ClientStore, uri: str) -> None:
    with pytest.raises(ClientError, match="post-logout redirect URI"):
        clients.add(dataclasses.replace(SHOP, post_logout_redirect_uris=(uri,)))
    assert clients.get("shop") is None


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "data:text/html,hi",
        "callback",
        "//evil.example/cb",
        "https://user:pass@app.example/cb",
        "https://app.example/cb#fragment",
        "ftp://app.example/cb",
    ],
)
@pytest.mark.parametrize("field", ["redirect_uris", "post_logout_redirect_uris"])
def test_a_redirect_uri_must_be_an_absolute_http_url_without_credentials_or_fragment(
    clients: ClientStore, field: str, uri: str
) -> None:
    web = Client("web-app", frozenset({"authorization_code"}), ("https://app.example/cb",))
    with pytest.raises(ClientError, match="absolute http"):
        clients.add(
            dataclasses.replace(web, redirect_uris=(uri,))
            if field == "redirect_uris"
            else dataclasses.replace(web, post_logout_redirect_uris=(uri,))
        )
    assert clients.get("web-app") is None


def test_redirect_uris_may_be_https_or_loopback_http_with_a_query(clients: ClientStore) -> None:
    web = Client(
        "web-app",
        frozenset({"authorization_code"}),
        ("https://app.example/cb?tenant=1", "http://127.0.0.1:8080/cb"),
        post_logout_redirect_uris=("https://app.example/bye",),
    )
    assert clients.add(web) == web


# -- plain http redirect URIs only on loopback (RFC 9700 section 2.1) -----------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/cb",
        "http://10.0.0.5:8080/cb",
        "http://localhost.evil.example/cb",
        "http://128.0.0.1/cb",
        "http://[::2]/cb",
        "HTTP://APP.EXAMPLE/cb",
    ],
)
def test_a_plain_http_redirect_uri_off_loopback_is_refused(clients: ClientStore, uri: str) -> None:
    web = Client("web-app", frozenset({"authorization_code"}), (uri,))
    with pytest.raises(ClientError, match="loopback"):
        clients.add(web)
    with pytest.raises(ClientError, match="loopback"):
        clients.replace(web)
    assert clients.get("web-app") is None


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:8080/cb",
        "http://LOCALHOST/cb",
        "http://127.0.0.1/cb",
        "http://127.9.9.9/cb",
        "http://[::1]:9/cb",
    ],
)
def test_a_plain_http_redirect_uri_on_loopback_is_accepted(clients: ClientStore, uri: str) -> None:
    assert clients.add(Client("web-app", frozenset({"authorization_code"}), (uri,))).redirect_uris == (uri,)


def test_the_operator_may_allow_a_plain_http_redirect_uri(clients: ClientStore) -> None:
    web = Client("web-app", frozenset({"authorization_code"}), ("http://app.example/cb",))
    assert clients.add(web, allow_insecure_redirect=True) == web
    assert clients.replace(web, allow_insecure_redirect=True) == (web, True)


# -- one subject namespace: a client is never a user (RFC 9068 section 5) ----------------------


@pytest.mark.parametrize(
    "client_id",
    ["0123456789abcdef0123456789abcdef", "ffffffffffffffffffffffffffffffff", "0123456789ABCDEF0123456789abcdef"],
)
def test_a_client_id_shaped_like_a_users_id_is_refused(clients: ClientStore, client_id: str) -> None:
    # A user's `sub` is 32 lower-case hex digits: a client with such an id could share a user's `sub`.
    service = dataclasses.replace(SERVICE, client_id=client_id)
    for register in (clients.add, lambda c: clients.replace(c)):
        with pytest.raises(ClientError, match="32 hexadecimal digits"):
            register(service)
    assert clients.get(client_id) is None


def test_a_client_id_that_is_a_users_name_is_refused(clients: ClientStore, users: UserStore) -> None:
    users.add("reports", "wonderland", "profile")
    for register in (clients.add, lambda c: clients.replace(c)):
        with pytest.raises(ClientError, match="a user is named 'reports'"):
            register(SERVICE)
    assert clients.get("reports") is None


def test_a_client_id_of_other_length_is_a_client_id(clients: ClientStore) -> None:
    for client_id in ("0123456789ABCDEF0123456789ABCDE", "0123456789abcdef0123456789abcdef0"):
        clients.add(dataclasses.replace(SERVICE, client_id=client_id))
        assert clients.get(client_id) is not None


# -- deleting a client ends its grants (RFC 6749 section 10.4, RFC 9700 section 4.14) ----------


def test_deleting_a_client_revokes_its_refresh_tokens_and_spends_its_codes(
    clients: ClientStore, database: Database, alice: User
) -> None:
    # A client registered again under the same id (another secret, another owner) inherits nothing.
    public = Client("app", frozenset({"authorization_code", "refresh_token"}), redirect_uris=("http://127.0.0.1/cb",))
    clients.add(public)
    refresh = RefreshTokens(database, ttl=3600, family_ttl=86400, reuse_grace=30, successor_key=b"k" * 32)
    codes = AuthorizationCodes(database)
    token = refresh.issue(Grant(alice.id, "alice", "app", "profile"))
    other = refresh.issue(Grant(alice.id, "alice", "cli", "profile"))
    verifier = "v" * 43
    code = codes.issue(
        Grant(alice.id, "alice", "app", "profile"),
        redirect_uri="http://127.0.0.1/cb",
        challenge=s256(verifier),
        session_hash=None,
    )

    assert clients.delete("app")
    clients.add(public)

    with pytest.raises(RefreshError, match="revoked"):
        refresh.rotate(token, "app")
    with pytest.raises(CodeReused):
        codes.redeem(code, client_id="app", redirect_uri="http://127.0.0.1/cb", verifier=verifier)
    refresh.rotate(other, "cli")  # another client's grants stay


def test_deleting_a_client_is_one_transaction(clients: ClientStore, database: Database, alice: User) -> None:
    # The client row goes only with its tokens: a failure on the way leaves both as they were.
    clients.add(SERVICE)
    refresh = RefreshTokens(database, ttl=3600, family_ttl=86400, reuse_grace=30, successor_key=b"k" * 32)
    token = refresh.issue(Grant(alice.id, "alice", "reports", "profile"))

    def failing(database: Database, client_id: str) -> int:
        raise SQLAlchemyError("the database went away")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AuthorizationCodes, "spend_client", staticmethod(failing))
        with pytest.raises(SQLAlchemyError):
            clients.delete("reports")
    assert clients.get("reports") is not None
    refresh.rotate(token, "reports")
