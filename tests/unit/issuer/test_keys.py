"""Unit tests for issuer.keys: creating, publishing, rotating and retiring signing keys."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import db
from issuer.keys import KeyStore, KeyStoreError
from shared.jose import public_jwk
from tests.support.fakes import FakeClock

StoreFactory = Callable[..., KeyStore]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An issuer data directory with the schema created."""
    db.initialise(tmp_path / "issuer.sqlite3")
    return tmp_path


@pytest.fixture
def make_store(data_dir: Path, clock: FakeClock) -> StoreFactory:
    """Build key stores on the same data directory and clock (reloading at once unless told).

    Small keys keep the lifecycle tests fast; the key size is the store's parameter, and one
    test checks the 2048-bit default.
    """

    def make(*, reload_interval: float = 0.0, bits: int = 1024, **lifecycle: float) -> KeyStore:
        return KeyStore(
            data_dir / "keys",
            data_dir / "issuer.sqlite3",
            rsa_key_bits=bits,
            reload_interval=reload_interval,
            clock=clock,
            **lifecycle,
        )

    return make


@pytest.fixture
def store(make_store: StoreFactory) -> KeyStore:
    """A key store with its first, active key."""
    keys = make_store()
    keys.ensure_active()
    return keys


def _states(keys: KeyStore) -> dict[str, str]:
    return {record.kid: record.state for record in keys.records()}


def _pem(keys: KeyStore, kid: str) -> Path:
    return keys.key_dir / f"{kid}.pem"


# -- the first key ------------------------------------------------------------------------


def test_ensure_active_creates_one_active_key(store: KeyStore, clock: FakeClock) -> None:
    (record,) = store.records()
    assert record.state == "active"
    assert record.created_at == record.activated_at == int(clock())
    assert (record.retiring_at, record.retired_at) == (None, None)


def test_ensure_active_is_idempotent_across_calls_and_instances(store: KeyStore, make_store: StoreFactory) -> None:
    first = store.signing_key().kid
    store.ensure_active()
    make_store().ensure_active()
    assert list(_states(make_store())) == [first]
    assert len(list(store.key_dir.iterdir())) == 1


def test_key_file_is_mode_0600_and_key_dir_0700(store: KeyStore) -> None:
    kid = store.signing_key().kid
    assert stat.S_IMODE(_pem(store, kid).stat().st_mode) == 0o600
    assert stat.S_IMODE(store.key_dir.stat().st_mode) == 0o700


def test_key_file_is_unencrypted_2048_bit_pkcs8_of_the_published_key(make_store: StoreFactory) -> None:
    store = make_store(bits=2048)
    store.ensure_active()
    kid = store.signing_key().kid
    pem = _pem(store, kid).read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    assert public_jwk(private.public_key()) == store.published()[0]


def test_default_key_size_is_2048_bits(data_dir: Path) -> None:
    assert KeyStore(data_dir / "keys", data_dir / "issuer.sqlite3").rsa_key_bits == 2048


def test_kid_is_the_rfc7638_thumbprint(store: KeyStore) -> None:
    signing = store.signing_key()
    assert signing.kid == public_jwk(signing.private_key.public_key())["kid"]


def test_published_keys_have_no_private_member(store: KeyStore) -> None:
    store.rotate()
    published = store.published()
    assert len(published) == 2
    for jwk in published:
        assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}


def test_signing_key_without_an_active_key_fails(make_store: StoreFactory) -> None:
    with pytest.raises(KeyStoreError, match="no active signing key"):
        make_store().signing_key()


def test_signing_key_with_its_file_missing_fails_clearly(store: KeyStore, make_store: StoreFactory) -> None:
    kid = store.signing_key().kid
    _pem(store, kid).unlink()
    with pytest.raises(KeyStoreError, match=f"private key file for {kid} is missing"):
        make_store().signing_key()


def test_signing_key_is_loaded_once_and_reused(store: KeyStore) -> None:
    first = store.signing_key()
    _pem(store, first.kid).unlink()  # a second load would fail
    assert store.signing_key().private_key is first.private_key


# -- rotation -----------------------------------------------------------------------------


def test_rotate_stages_a_published_key_that_does_not_sign(store: KeyStore) -> None:
    active = store.signing_key().kid
    staged = store.rotate()
    assert staged.state == "next"
    assert staged.activated_at is None
    assert staged.kid in {jwk["kid"] for jwk in store.published()}
    assert store.signing_key().kid == active
    assert _states(store) == {staged.kid: "next", active: "active"}
    assert _pem(store, staged.kid).exists()


def test_second_rotate_without_now_fails_naming_the_staged_key(store: KeyStore) -> None:
    staged = store.rotate()
    with pytest.raises(KeyStoreError, match=rf"key {staged.kid} is already staged as next;.*keys rotate --now"):
        store.rotate()
    assert len(store.records()) == 2


def test_rotate_now_activates_the_staged_key_and_retires_the_old_one(store: KeyStore, clock: FakeClock) -> None:
    old = store.signing_key().kid
    staged = store.rotate()
    clock.advance(3600)
    promoted = store.rotate(now=True)
    assert promoted.kid == staged.kid
    assert promoted.state == "active"
    assert promoted.activated_at == int(clock())
    assert store.signing_key().kid == staged.kid
    assert _states(store) == {staged.kid: "active", old: "retiring"}
    retiring = next(r for r in store.records() if r.kid == old)
    assert retiring.retiring_at == int(clock())
    assert {jwk["kid"] for jwk in store.published()} == {old, staged.kid}


def test_rotate_now_without_a_staged_key_creates_a_new_active_key(store: KeyStore) -> None:
    old = store.signing_key().kid
    fresh = store.rotate(now=True)
    assert fresh.kid != old
    assert fresh.state == "active"
    assert store.signing_key().kid == fresh.kid
    assert _states(store) == {fresh.kid: "active", old: "retiring"}


def test_records_are_newest_first(store: KeyStore, clock: FakeClock) -> None:
    first = store.signing_key().kid
    clock.advance(10)
    second = store.rotate().kid
    assert [r.kid for r in store.records()] == [second, first]


# -- retirement ---------------------------------------------------------------------------


def test_retire_refuses_the_active_key(store: KeyStore) -> None:
    kid = store.signing_key().kid
    with pytest.raises(KeyStoreError, match=f"key {kid} is signing; run 'keys rotate --now' first"):
        store.retire(kid)
    assert _states(store) == {kid: "active"}
    assert _pem(store, kid).exists()


def test_retire_withdraws_the_key_and_deletes_its_file(store: KeyStore, clock: FakeClock) -> None:
    old = store.signing_key().kid
    store.rotate(now=True)
    clock.advance(60)
    record = store.retire(old)
    assert record.state == "retired"
    assert record.retired_at == int(clock())
    assert old not in {jwk["kid"] for jwk in store.published()}
    assert not _pem(store, old).exists()
    assert _states(store)[old] == "retired"


def test_retire_can_withdraw_a_staged_key(store: KeyStore) -> None:
    staged = store.rotate()
    store.retire(staged.kid)
    assert staged.kid not in {jwk["kid"] for jwk in store.published()}
    assert store.rotate().state == "next"  # the slot is free again


def test_retire_refuses_unknown_and_already_retired_keys(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no key has kid 'nope'"):
        store.retire("nope")
    staged = store.rotate()
    store.retire(staged.kid)
    with pytest.raises(KeyStoreError, match="already retired"):
        store.retire(staged.kid)


# -- several processes --------------------------------------------------------------------


def test_second_store_sees_changes_after_reload_interval(
    store: KeyStore, make_store: StoreFactory, clock: FakeClock
) -> None:
    replica = make_store(reload_interval=5.0)
    old = replica.signing_key().kid
    store.rotate(now=True)
    new = store.signing_key().kid

    clock.advance(4.9)
    assert replica.signing_key().kid == old  # the snapshot is still young
    assert new not in {jwk["kid"] for jwk in replica.published()}

    clock.advance(0.1)
    assert replica.signing_key().kid == new
    assert {jwk["kid"] for jwk in replica.published()} == {old, new}


def test_store_reloads_when_the_clock_goes_backwards(
    store: KeyStore, make_store: StoreFactory, clock: FakeClock
) -> None:
    replica = make_store(reload_interval=5.0)
    replica.records()
    staged = store.rotate()
    clock.advance(-60)
    assert staged.kid in _states(replica)


def test_own_changes_are_seen_at_once_despite_reload_interval(make_store: StoreFactory) -> None:
    keys = make_store(reload_interval=3600.0)
    keys.ensure_active()
    staged = keys.rotate()
    assert _states(keys)[staged.kid] == "next"
    keys.rotate(now=True)
    assert keys.signing_key().kid == staged.kid


# -- the lifecycle advancing by itself ------------------------------------------------------


def _only(keys: KeyStore, state: str) -> str:
    kids = [kid for kid, current in _states(keys).items() if current == state]
    assert len(kids) == 1, _states(keys)
    return kids[0]


def test_staged_key_signs_once_published_for_the_activation_delay(make_store: StoreFactory, clock: FakeClock) -> None:
    keys = make_store(activation_delay=600, retire_after=900)
    keys.ensure_active()
    old = keys.signing_key().kid
    staged = keys.rotate().kid

    clock.advance(599)
    assert keys.signing_key().kid == old
    assert _states(keys) == {old: "active", staged: "next"}

    clock.advance(1)
    assert keys.signing_key().kid == staged
    assert _states(keys) == {old: "retiring", staged: "active"}
    assert {jwk["kid"] for jwk in keys.published()} == {old, staged}


def test_retiring_key_is_withdrawn_once_its_tokens_have_expired(make_store: StoreFactory, clock: FakeClock) -> None:
    keys = make_store(activation_delay=600, retire_after=900)
    keys.ensure_active()
    old = keys.signing_key().kid
    new = keys.rotate(now=True).kid

    clock.advance(899)
    assert _states(keys)[old] == "retiring"
    assert _pem(keys, old).exists()

    clock.advance(1)
    assert _states(keys) == {old: "retired", new: "active"}
    assert [jwk["kid"] for jwk in keys.published()] == [new]
    assert not _pem(keys, old).exists()


def test_automatic_rotation_stages_a_key_in_time_to_sign_on_schedule(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    day = 86400.0
    keys = make_store(activation_delay=600, retire_after=900, rotation_interval=30 * day)
    keys.ensure_active()
    first = keys.signing_key().kid

    clock.advance(30 * day - 601)
    assert list(_states(keys).values()) == ["active"]
    clock.advance(1)
    staged = _only(keys, "next")  # staged one activation delay before the month is up
    clock.advance(600)
    assert keys.signing_key().kid == staged
    assert _states(keys)[first] == "retiring"


def test_automatic_rotation_is_off_by_default(make_store: StoreFactory, clock: FakeClock) -> None:
    keys = make_store()
    keys.ensure_active()
    clock.advance(10 * 365 * 86400)
    assert list(_states(keys).values()) == ["active"]


def test_workers_racing_through_a_transition_agree(make_store: StoreFactory, clock: FakeClock) -> None:
    one, two = make_store(activation_delay=600), make_store(activation_delay=600)
    one.ensure_active()
    staged = one.rotate().kid
    clock.advance(600)
    assert one.signing_key().kid == two.signing_key().kid == staged
    assert sorted(_states(one).values()) == ["active", "retiring"]


def test_fresh_read_publishes_a_key_another_worker_just_activated(make_store: StoreFactory) -> None:
    serving = make_store(reload_interval=60)
    serving.ensure_active()
    before = {jwk["kid"] for jwk in serving.published()}
    new = make_store().rotate(now=True).kid  # the CLI, or another worker
    assert {jwk["kid"] for jwk in serving.published()} == before  # the snapshot is a minute old
    assert new in {jwk["kid"] for jwk in serving.published(fresh=True)}
