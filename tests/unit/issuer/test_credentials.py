"""Unit tests for issuer.credentials: the passkeys store and the ceremonies' single-use challenges."""

from __future__ import annotations

import types

import pytest
from sqlalchemy import insert

from issuer import credentials
from issuer.credentials import CloneSuspected, PasskeyError, Passkeys, check_name, clean_transports
from issuer.db import Database, users
from tests.support.fakes import FakeClock
from tests.support.sql import rows


@pytest.fixture
def store(database: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Passkeys:
    """Passkeys on a fresh database with two users, time read from the test's clock."""
    monkeypatch.setattr(credentials, "time", types.SimpleNamespace(time=clock))
    with database.transaction() as conn:
        for user_id, name in (("u1", "alice"), ("u2", "bob")):
            conn.execute(insert(users).values(id=user_id, username=name, password_hash="-", scope="", created_at=0))
    return Passkeys(database)


def _add(store: Passkeys, user_id: str = "u1", credential_id: str = "Y3JlZA", **kwargs: object) -> credentials.Passkey:
    fields: dict[str, object] = {
        "credential_id": credential_id,
        "public_key": b"\xa5cose",
        "sign_count": 0,
        "transports": ("internal",),
        "backup_eligible": False,
        "backup_state": False,
        "name": "Laptop",
        **kwargs,
    }
    return store.add(user_id, **fields)  # type: ignore[arg-type]


def test_a_passkey_is_kept_with_everything_a_login_needs(store: Passkeys) -> None:
    added = _add(store, sign_count=5, transports=("internal", "hybrid"))
    (found,) = store.of_user("u1")
    assert found == added
    assert store.by_credential_id("Y3JlZA") == added
    assert found.public_key == b"\xa5cose"
    assert found.sign_count == 5
    assert found.transports == ("internal", "hybrid")
    assert found.last_used_at is None
    assert store.of_user("u2") == []


def test_the_amr_says_whether_the_key_is_bound_to_one_device(store: Passkeys) -> None:
    assert _add(store).amr == ("hwk", "user", "mfa")
    assert _add(store, credential_id="c3luYw", backup_eligible=True).amr == ("swk", "user", "mfa")


def test_a_credential_is_registered_once(store: Passkeys) -> None:
    _add(store)
    with pytest.raises(PasskeyError):
        _add(store, user_id="u2")


def test_the_counter_must_move_forward(store: Passkeys, clock: FakeClock) -> None:
    passkey = _add(store, sign_count=3)
    store.use(passkey, 4, backup_state=False)
    (used,) = store.of_user("u1")
    assert used.sign_count == 4
    assert used.last_used_at == int(clock())
    for count in (4, 2, 0):
        with pytest.raises(CloneSuspected):
            store.use(passkey, count, backup_state=False)
    assert store.of_user("u1")[0].sign_count == 4  # nothing stored by a refusal


def test_an_authenticator_that_keeps_no_count_always_sends_zero(store: Passkeys) -> None:
    passkey = _add(store, sign_count=0)
    store.use(passkey, 0, backup_state=True)
    store.use(passkey, 0, backup_state=True)
    assert store.of_user("u1")[0].backup_state is True
    store.use(passkey, 1, backup_state=True)  # it may start counting
    with pytest.raises(CloneSuspected):
        store.use(passkey, 0, backup_state=True)  # but never stop


def test_the_counter_holds_32_bits(store: Passkeys) -> None:
    passkey = _add(store, sign_count=2**32 - 2)
    store.use(passkey, 2**32 - 1, backup_state=False)
    assert store.of_user("u1")[0].sign_count == 2**32 - 1


def test_rename_and_remove_reach_only_the_owners_passkeys(store: Passkeys) -> None:
    passkey = _add(store)
    assert not store.rename("u2", passkey.id, "Mine")
    assert not store.remove("u2", passkey.id)
    assert store.rename("u1", passkey.id, "  Work laptop ")
    assert store.of_user("u1")[0].name == "Work laptop"
    assert store.remove("u1", passkey.id)
    assert store.of_user("u1") == []
    assert store.by_credential_id("Y3JlZA") is None


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "new\nline"])
def test_names_are_one_to_64_printable_characters(name: str) -> None:
    with pytest.raises(PasskeyError):
        check_name(name)


def test_only_webauthn_transports_are_kept() -> None:
    assert clean_transports(["usb", "internal", "usb", "carrier-pigeon", 7, None]) == ("usb", "internal")


def test_deleting_a_user_removes_their_passkeys(store: Passkeys, database: Database) -> None:
    _add(store)
    with database.transaction() as conn:
        conn.execute(users.delete().where(users.c.id == "u1"))
    assert rows(database, "SELECT * FROM passkeys") == []


def test_a_challenge_is_used_once_by_its_own_ceremony_before_it_expires(store: Passkeys, clock: FakeClock) -> None:
    store.remember_challenge("first", "login")
    assert not store.consume_challenge("first", "register")  # another ceremony's
    assert store.consume_challenge("first", "login")
    assert not store.consume_challenge("first", "login")  # used up
    store.remember_challenge("second", "register", ttl=60)
    clock.advance(61)
    assert not store.consume_challenge("second", "register")
    assert not store.consume_challenge("never-issued", "login")


def test_challenges_are_stored_as_hashes_and_pruned_once_expired(
    store: Passkeys, database: Database, clock: FakeClock
) -> None:
    store.remember_challenge("secret-challenge", "login", ttl=60)
    (row,) = rows(database, "SELECT * FROM passkey_challenges")
    assert "secret-challenge" not in repr(row)
    assert Passkeys.prune(database, int(clock()) + 59, batch=10) == 0
    assert Passkeys.prune(database, int(clock()) + 61, batch=10) == 1


def test_an_unknown_ceremony_is_a_bug(store: Passkeys) -> None:
    with pytest.raises(ValueError, match="unknown ceremony"):
        store.remember_challenge("c", "elevate")


def test_any_of_tells_whether_a_user_has_a_passkey_without_listing_them(store: Passkeys) -> None:
    assert store.any_of("u1") is False
    _add(store)
    assert store.any_of("u1") is True
    assert store.any_of("u2") is False
