"""Unit tests for issuer.users: argon2id hashes, password policy, names, scopes and deletion."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from issuer.clients import Client, ClientStore
from issuer.db import Database
from issuer.tokens import Grant, RefreshError, RefreshTokens
from issuer.users import USER_ID, User, UserError, UserStore, parse_demo_users, parse_scope
from tests.support.sql import rows


def _hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=8192, parallelism=1)


def _stored_hash(database: Database, username: str) -> str:
    (row,) = rows(database, "SELECT password_hash FROM users WHERE username = :name", name=username)
    value: str = row["password_hash"]
    return value


# -- adding and authenticating ------------------------------------------------------------


def test_add_then_authenticate_returns_the_user(users: UserStore) -> None:
    added = users.add("alice", "wonderland", "profile admin")
    assert added.scopes == frozenset({"profile", "admin"})
    user = users.authenticate("alice", "wonderland")
    assert user == User(
        "alice", frozenset({"admin", "profile"}), added.created_at, added.id, updated_at=added.created_at
    )
    assert user.scope == "admin profile"


def test_password_is_stored_as_an_argon2id_hash(users: UserStore, database: Database) -> None:
    users.add("alice", "wonderland", "profile")
    stored = _stored_hash(database, "alice")
    assert stored.startswith("$argon2id$")
    assert "wonderland" not in stored


def test_wrong_password_gives_none(users: UserStore) -> None:
    users.add("alice", "wonderland", "profile")
    assert users.authenticate("alice", "Wonderland") is None
    assert users.authenticate("alice", "") is None


def test_unknown_user_gives_none(users: UserStore) -> None:
    assert users.authenticate("nobody", "wonderland") is None


def test_overlong_name_gives_none_without_lookup(users: UserStore) -> None:
    assert users.authenticate("a" * 10_000, "wonderland") is None


def test_unknown_user_with_the_dummy_password_gives_none(users: UserStore) -> None:
    assert users.authenticate("nobody", "not a password of anyone") is None


def test_get_and_list(users: UserStore) -> None:
    users.add("bob", "builder1", "profile")
    users.add("alice", "wonderland", "admin")
    assert [u.username for u in users.list()] == ["alice", "bob"]
    bob = users.get("bob")
    assert bob is not None
    assert bob.scopes == frozenset({"profile"})
    assert users.get("carol") is None


def test_adding_an_existing_user_fails(users: UserStore) -> None:
    users.add("alice", "wonderland", "profile")
    with pytest.raises(UserError, match="user 'alice' already exists"):
        users.add("alice", "another-pass", "admin")
    assert users.authenticate("alice", "wonderland") is not None


def test_hash_is_upgraded_on_login_when_parameters_change(database: Database) -> None:
    UserStore(database, _hasher(time_cost=1)).add("alice", "wonderland", "profile")
    old = _stored_hash(database, "alice")
    stronger = UserStore(database, _hasher(time_cost=2))
    assert stronger.authenticate("alice", "wonderland") is not None
    new = _stored_hash(database, "alice")
    assert new != old
    assert ",t=2," in new
    assert not stronger.hasher.check_needs_rehash(new)
    assert stronger.authenticate("alice", "wonderland") is not None


def test_hash_is_not_rewritten_when_parameters_are_current(users: UserStore, database: Database) -> None:
    users.add("alice", "wonderland", "profile")
    before = _stored_hash(database, "alice")
    users.authenticate("alice", "wonderland")
    assert _stored_hash(database, "alice") == before


def test_failed_login_does_not_upgrade_the_hash(database: Database) -> None:
    UserStore(database, _hasher(time_cost=1)).add("alice", "wonderland", "profile")
    before = _stored_hash(database, "alice")
    assert UserStore(database, _hasher(time_cost=2)).authenticate("alice", "wrong-password") is None
    assert _stored_hash(database, "alice") == before


# -- policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("1234567", "at least 8 characters"),
        ("x" * 1025, "at most 1024 characters"),
        ("Alice.Smith", "must not be the username"),
    ],
)
def test_password_policy_refuses_weak_passwords(users: UserStore, password: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        users.add("alice.smith", password, "profile")
    assert users.get("alice.smith") is None


def test_password_policy_accepts_boundary_lengths(users: UserStore) -> None:
    users.add("alice", "x" * 8, "profile")
    users.add("bob", "y" * 1024, "profile")
    assert users.authenticate("bob", "y" * 1024) is not None


def test_policy_can_be_waived_for_seeded_demo_users(users: UserStore) -> None:
    users.add("bob", "bob", "profile", enforce_policy=False)
    assert users.authenticate("bob", "bob") is not None


@pytest.mark.parametrize("name", ["Alice", "", ".alice", "-x", "al ice", "a" * 65, "alice!", "ällice", "a/b"])
def test_malformed_usernames_are_refused(users: UserStore, name: str) -> None:
    with pytest.raises(UserError, match="username must be"):
        users.add(name, "wonderland", "profile")


@pytest.mark.parametrize("name", ["a", "alice", "a.b_c-d", "0day", "a" * 64])
def test_well_formed_usernames_are_accepted(users: UserStore, name: str) -> None:
    assert users.add(name, "wonderland-pass", "profile").username == name


@pytest.mark.parametrize("scope", ['say"hi"', "back\\slash", "caf\u00e9", "tab\there", "two  spaces", " lead"])
def test_malformed_scopes_are_refused(users: UserStore, scope: str) -> None:
    with pytest.raises(UserError, match="scope must be"):
        users.add("alice", "wonderland", scope)


def test_parse_scope_splits_words_and_allows_empty() -> None:
    assert parse_scope("profile admin read:orders") == frozenset({"profile", "admin", "read:orders"})
    assert parse_scope("") == frozenset()


def test_user_with_no_scope_has_an_empty_scope_string(users: UserStore) -> None:
    assert users.add("alice", "wonderland", "").scope == ""


# -- deletion -----------------------------------------------------------------------------


def test_delete_removes_the_user(users: UserStore) -> None:
    users.add("alice", "wonderland", "profile")
    assert users.delete("alice") is True
    assert users.get("alice") is None
    assert users.authenticate("alice", "wonderland") is None


def test_delete_of_unknown_user_returns_false(users: UserStore) -> None:
    assert users.delete("nobody") is False


def test_delete_revokes_the_users_refresh_tokens(users: UserStore, database: Database) -> None:
    alice = users.add("alice", "wonderland", "profile")
    bob = users.add("bob", "builder1", "profile")
    tokens = RefreshTokens(database, ttl=3600, family_ttl=7200, reuse_grace=30, successor_key=b"k" * 32)
    alices = tokens.issue(Grant(alice.id, "alice", "cli", "profile"))
    bobs = tokens.issue(Grant(bob.id, "bob", "cli", "profile"))
    users.delete("alice")
    with pytest.raises(RefreshError, match="not known"):
        tokens.rotate(alices, "cli")
    grant, _ = tokens.rotate(bobs, "cli")
    assert grant.username == "bob"


def test_a_new_user_with_a_deleted_users_name_is_someone_else(users: UserStore) -> None:
    old = users.add("alice", "wonderland", "profile admin")
    users.delete("alice")
    new = users.add("alice", "new-password", "profile")
    assert new.id != old.id
    assert users.get_by_id(old.id) is None
    assert users.get_by_id(new.id) == new


def test_a_username_that_is_a_clients_id_is_refused(users: UserStore, database: Database) -> None:
    # A person and a service sharing one name would read alike in `preferred_username` and `client_id`.
    ClientStore(database).add(Client("reports", frozenset({"password"})))
    with pytest.raises(UserError, match="a client is registered as 'reports'"):
        users.add("reports", "wonderland", "profile")
    assert users.get("reports") is None


def test_the_user_id_is_the_form_no_client_id_may_take(users: UserStore) -> None:
    assert USER_ID.fullmatch(users.add("alice", "wonderland", "profile").id)


# -- demo users ---------------------------------------------------------------------------


def test_parse_demo_users_reads_name_password_scope_triples() -> None:
    spec = " alice:wonderland:profile admin ; bob:builder:profile;; carol:pass:word: "
    assert parse_demo_users(spec) == [
        ("alice", "wonderland", "profile admin"),
        ("bob", "builder", "profile"),
        ("carol", "pass", "word:"),
    ]
    assert parse_demo_users("") == []


@pytest.mark.parametrize("spec", ["alice", "alice:wonderland", ":pw:profile", "alice::profile"])
def test_parse_demo_users_refuses_malformed_entries(spec: str) -> None:
    with pytest.raises(UserError, match="ISSUER_DEMO_USERS entries must look like"):
        parse_demo_users(spec)


@pytest.mark.parametrize("name", ["al\x00ice", "ALICE", "a" * 65, "alice\n", ""])
def test_a_name_no_user_could_have_is_nobody_on_every_engine(users: UserStore, name: str) -> None:
    """PostgreSQL refuses NUL in text outright: such names must never reach the database."""
    users.add("alice", "wonderland", "profile")
    assert users.get(name) is None
    assert users.authenticate(name, "wonderland") is None


# -- profile claims (OpenID Connect) -------------------------------------------------------


def test_a_user_added_with_a_name_and_email_keeps_them(users: UserStore) -> None:
    added = users.add("carol", "correct horse", "profile", name="Carol Cat", email="carol@example.com")
    assert users.get("carol") == added
    assert (added.name, added.email, added.email_verified) == ("Carol Cat", "carol@example.com", False)


def test_an_address_cannot_be_verified_without_an_address(users: UserStore) -> None:
    assert users.add("carol", "correct horse", "profile", email_verified=True).email_verified is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "name must be"),
        ("name", "   ", "name must be"),
        ("name", "x" * 201, "name must be"),
        ("name", "new\nline", "name must be"),
        ("email", "carol", "email must look like"),
        ("email", "carol@@example.com", "email must look like"),
        ("email", "car ol@example.com", "email must look like"),
    ],
)
def test_malformed_names_and_emails_are_refused(users: UserStore, field: str, value: str, message: str) -> None:
    given: dict[str, str | None] = {"name": None, "email": None, field: value}
    with pytest.raises(UserError, match=message):
        users.add("carol", "correct horse", "profile", name=given["name"], email=given["email"])
    assert users.get("carol") is None
    users.add("carol", "correct horse", "profile")
    with pytest.raises(UserError, match=message):
        users.update("carol", name=given["name"], email=given["email"])


def test_update_changes_what_it_is_given_and_stamps_updated_at(users: UserStore, database: Database) -> None:
    users.add("carol", "correct horse", "profile", name="Carol", email="carol@example.com", email_verified=True)
    with database.transaction() as conn:
        conn.exec_driver_sql("UPDATE users SET updated_at = 1")
    changed = users.update("carol", scope="admin profile")
    assert (changed.name, changed.email, changed.email_verified, changed.scope) == (
        "Carol",
        "carol@example.com",
        True,
        "admin profile",
    )
    assert changed.updated_at is not None
    assert changed.updated_at > 1
    moved = users.update("carol", email="carol@example.org")
    assert (moved.email, moved.email_verified) == ("carol@example.org", False)
    assert users.update("carol", email_verified=True).email_verified is True
