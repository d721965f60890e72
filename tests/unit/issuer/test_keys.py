"""Unit tests for issuer.keys: creating, publishing, rotating, retiring and importing signing keys."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update

from issuer import migrations
from issuer.db import Database, signing_keys
from issuer.kek import new_key_encryption_key, open_private_key, seal_private_key
from issuer.keys import KeyPolicy, KeyStore, KeyStoreError, WrongKeyEncryptionKey, generate_rsa_key
from jwt_verifier.jose import public_jwk
from tests.support.fakes import FakeClock

StoreFactory = Callable[..., KeyStore]

# Small keys keep the lifecycle tests fast; one test makes a 2048-bit key.
BITS = 1024


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """The issuer database of a fresh data directory, at the newest schema."""
    database = Database.for_data_dir("", tmp_path)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def kek() -> bytes:
    """The key-encryption key the stores of a test share."""
    return new_key_encryption_key()


@pytest.fixture
def make_store(database: Database, kek: bytes, clock: FakeClock) -> StoreFactory:
    """Build key stores on the same database and clock (reloading at once unless told)."""

    def make(
        *,
        reload_interval: float = 0.0,
        bits: int = BITS,
        kek: bytes = kek,
        activation_delay: float = 600,
        retire_after: float = 3660,
        rotation_interval: float = 0,
    ) -> KeyStore:
        policy = KeyPolicy(bits, reload_interval, activation_delay, retire_after, rotation_interval)
        return KeyStore(database, kek, policy, clock=clock)

    return make


@pytest.fixture
def store(make_store: StoreFactory) -> KeyStore:
    """A key store with its first, active key."""
    keys = make_store()
    keys.ensure_active()
    return keys


def _states(keys: KeyStore) -> dict[str, str]:
    return {record.kid: record.state for record in keys.records()}


def _sealed(database: Database, kid: str) -> bytes | None:
    with database.reading() as conn:
        blob: bytes | None = conn.execute(
            select(signing_keys.c.private_key).where(signing_keys.c.kid == kid)
        ).scalar_one()
    return blob


def _set_sealed(database: Database, kid: str, blob: bytes | None) -> None:
    with database.transaction() as conn:
        conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(private_key=blob))


def _damage(database: Database, kid: str) -> None:
    """Flip one bit of a key's ciphertext, as a bad disk or a torn write would."""
    blob = _sealed(database, kid)
    assert blob is not None
    _set_sealed(database, kid, blob[:-1] + bytes([blob[-1] ^ 1]))


def _rows(database: Database) -> list[tuple[str, str, bytes | None]]:
    with database.reading() as conn:
        rows = conn.execute(
            select(signing_keys.c.kid, signing_keys.c.state, signing_keys.c.private_key).order_by(signing_keys.c.kid)
        ).all()
    return [(row.kid, row.state, row.private_key) for row in rows]


def _logged_kids(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the kids of the errors logged (the `fields` each log line carries)."""
    return [r.__dict__["fields"]["kid"] for r in caplog.records if r.levelno >= logging.ERROR]


def _together(stores: list[KeyStore], start: Callable[[KeyStore], None]) -> None:
    """Start every store at the same moment, as freshly forked workers do; re-raise any error."""
    barrier = threading.Barrier(len(stores))

    def run(keys: KeyStore) -> None:
        barrier.wait()
        start(keys)

    with ThreadPoolExecutor(len(stores)) as pool:
        for future in [pool.submit(run, keys) for keys in stores]:
            future.result()


class SlowGenerator:
    """A key generator that waits for the test's word, so a generation is caught in progress."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, bits: int) -> rsa.RSAPrivateKey:
        self.started.set()
        assert self.release.wait(30), "the test never released the key generation"
        return generate_rsa_key(bits)


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


def test_workers_starting_together_create_one_active_key(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(4)]
    _together(stores, KeyStore.ensure_active)
    assert list(_states(stores[0]).values()) == ["active"]
    assert len({keys.signing_key().kid for keys in stores}) == 1


def test_private_key_is_stored_sealed_as_the_published_2048_bit_key(
    make_store: StoreFactory, database: Database, kek: bytes, tmp_path: Path
) -> None:
    store = make_store(bits=2048)
    store.ensure_active()
    kid = store.signing_key().kid
    sealed = _sealed(database, kid)
    assert sealed is not None
    der = store.signing_key().private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der not in sealed
    private = open_private_key(kek, kid, sealed)
    assert private.key_size == 2048
    assert public_jwk(private.public_key()) == store.published()[0]
    assert not list(tmp_path.rglob("*.pem"))  # no key files any more


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


def test_signing_key_is_opened_once_and_reused(store: KeyStore, database: Database) -> None:
    first = store.signing_key()
    _set_sealed(database, first.kid, b"\x01 not a key")  # opening it again would fail
    assert store.signing_key().private_key is first.private_key


def test_store_refuses_a_key_encryption_key_of_the_wrong_size(make_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        make_store(kek=b"short")


# -- rotation -----------------------------------------------------------------------------


def test_rotate_stages_a_published_key_that_does_not_sign(store: KeyStore, database: Database) -> None:
    active = store.signing_key().kid
    staged = store.rotate()
    assert staged.state == "next"
    assert staged.activated_at is None
    assert staged.kid in {jwk["kid"] for jwk in store.published()}
    assert store.signing_key().kid == active
    assert _states(store) == {staged.kid: "next", active: "active"}
    assert _sealed(database, staged.kid) is not None


def test_second_rotate_without_now_fails_naming_the_staged_key(store: KeyStore) -> None:
    staged = store.rotate()
    slow = SlowGenerator()
    store.generate_key = slow
    with pytest.raises(KeyStoreError, match=rf"key {staged.kid} is already staged as next;.*keys rotate --now"):
        store.rotate()
    assert len(store.records()) == 2
    assert not slow.started.is_set()  # refused before spending a key generation


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


# -- key generation stays outside the write lock (defect 12) ---------------------------------


def _write_completes(database: Database) -> bool:
    """Run a write transaction in another thread; return whether it committed within 5 s."""
    done = threading.Event()

    def write() -> None:
        with database.transaction() as conn:
            conn.execute(update(signing_keys).values(created_at=signing_keys.c.created_at))
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return done.wait(5)


@pytest.mark.parametrize("now", [False, True], ids=["rotate", "rotate-now"])
def test_other_writes_complete_while_a_rotation_generates_its_key(
    store: KeyStore, database: Database, now: bool
) -> None:
    slow = SlowGenerator()
    store.generate_key = slow
    result: list[str] = []
    rotation = threading.Thread(target=lambda: result.append(store.rotate(now=now).state))
    rotation.start()
    try:
        assert slow.started.wait(10)
        assert _write_completes(database), "a write waited for the key generation"
    finally:
        slow.release.set()
        rotation.join()
    assert result == ["active" if now else "next"]


def test_automatic_rotation_generates_while_the_worker_keeps_signing(
    make_store: StoreFactory, database: Database, clock: FakeClock
) -> None:
    keys = make_store(activation_delay=600, retire_after=900, rotation_interval=86400)
    keys.ensure_active()
    signing = keys.signing_key().kid
    slow = SlowGenerator()
    keys.generate_key = slow
    clock.advance(86400 - 600)
    reload = threading.Thread(target=keys.records)
    reload.start()
    try:
        assert slow.started.wait(10)
        assert _write_completes(database), "a write waited for the key generation"
        assert keys.signing_key().kid == signing  # another request of this worker is not held up
    finally:
        slow.release.set()
        reload.join()
    assert sorted(_states(keys).values()) == ["active", "next"]


# -- retirement ---------------------------------------------------------------------------


def test_retire_refuses_the_active_key(store: KeyStore, database: Database) -> None:
    kid = store.signing_key().kid
    with pytest.raises(KeyStoreError, match=f"key {kid} is signing; run 'keys rotate --now' first"):
        store.retire(kid)
    assert _states(store) == {kid: "active"}
    assert _sealed(database, kid) is not None


def test_retire_withdraws_the_key_and_erases_its_private_half(
    store: KeyStore, database: Database, clock: FakeClock
) -> None:
    old = store.signing_key().kid
    store.rotate(now=True)
    clock.advance(60)
    record = store.retire(old)
    assert record.state == "retired"
    assert record.retired_at == int(clock())
    assert old not in {jwk["kid"] for jwk in store.published()}
    assert _sealed(database, old) is None
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


def test_retiring_key_is_withdrawn_once_its_tokens_have_expired(
    make_store: StoreFactory, database: Database, clock: FakeClock
) -> None:
    keys = make_store(activation_delay=600, retire_after=900)
    keys.ensure_active()
    old = keys.signing_key().kid
    new = keys.rotate(now=True).kid

    clock.advance(899)
    assert _states(keys)[old] == "retiring"
    assert _sealed(database, old) is not None

    clock.advance(1)
    assert _states(keys) == {old: "retired", new: "active"}
    assert [jwk["kid"] for jwk in keys.published()] == [new]
    assert _sealed(database, old) is None


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


def test_automatic_rotation_is_off_with_a_zero_interval(make_store: StoreFactory, clock: FakeClock) -> None:
    keys = make_store(rotation_interval=0)
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


# -- a wrong key-encryption key, unreadable keys ----------------------------------------------


def test_wrong_key_encryption_key_stops_start_up_and_changes_nothing(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    active = store.signing_key().kid
    staged = store.rotate().kid
    before = _rows(database)
    other = make_store(kek=new_key_encryption_key())
    with pytest.raises(WrongKeyEncryptionKey, match="key-encryption key is not the one") as caught:
        other.ensure_active()
    assert active in str(caught.value)
    assert staged in str(caught.value)
    with pytest.raises(WrongKeyEncryptionKey):
        other.signing_key()  # nor is a good key "replaced" later by a process with the wrong KEK
    assert _rows(database) == before


def test_key_sealed_under_another_kek_stops_start_up_even_when_others_open(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    # Two replicas with different KEKs must not replace each other's keys back and forth.
    staged = store.rotate().kid
    _set_sealed(database, staged, seal_private_key(new_key_encryption_key(), staged, generate_rsa_key(BITS)))
    before = _rows(database)
    with pytest.raises(WrongKeyEncryptionKey, match=staged):
        make_store().ensure_active()
    assert _rows(database) == before


def test_damaged_staged_key_is_reported_and_retired_at_start(
    store: KeyStore, make_store: StoreFactory, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    active = store.signing_key().kid
    staged = store.rotate().kid
    _damage(database, staged)
    with caplog.at_level(logging.ERROR, logger="issuer.keys"):
        make_store().ensure_active()
    assert _states(store) == {active: "active", staged: "retired"}
    assert _sealed(database, staged) is None
    assert _logged_kids(caplog) == [staged]


def test_damaged_active_key_is_replaced_at_start_and_still_verifies(
    store: KeyStore, make_store: StoreFactory, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = store.signing_key().kid
    _damage(database, damaged)
    restarted = make_store()
    with caplog.at_level(logging.ERROR, logger="issuer.keys"):
        restarted.ensure_active()
    new = restarted.signing_key().kid
    assert new != damaged
    # It cannot sign, but tokens it signed still verify until they expire.
    assert _states(restarted) == {new: "active", damaged: "retiring"}
    assert _sealed(database, damaged) is None
    assert damaged in _logged_kids(caplog)


def test_damaged_active_key_found_while_signing_is_replaced(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    serving = make_store()
    serving.ensure_active()  # started while the key was sound
    damaged = store.signing_key().kid
    _damage(database, damaged)
    signing = serving.signing_key()  # no error: a request is never failed by a damaged key
    assert signing.kid != damaged
    assert _states(store) == {signing.kid: "active", damaged: "retiring"}
    assert store.signing_key().kid == signing.kid


def test_active_key_without_its_private_half_is_reported_and_replaced(
    store: KeyStore, make_store: StoreFactory, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    missing = store.signing_key().kid
    _set_sealed(database, missing, None)
    restarted = make_store()
    with caplog.at_level(logging.ERROR, logger="issuer.keys"):
        restarted.ensure_active()
    assert restarted.signing_key().kid != missing
    assert _states(restarted)[missing] == "retiring"
    assert _logged_kids(caplog) == [missing]


def test_a_sealed_key_moved_onto_another_row_does_not_open(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    active = store.signing_key().kid
    staged = store.rotate().kid
    _set_sealed(database, staged, _sealed(database, active))  # the active key's private half
    make_store().ensure_active()
    assert _states(store) == {active: "active", staged: "retired"}


# -- key files of the previous release (defect 11) ----------------------------------------------


@pytest.fixture
def old_data_dir(tmp_path: Path) -> Path:
    """A data directory as the previous release left it: schema 0001, keys as PEM files."""
    data_dir = tmp_path / "old"
    database = Database.for_data_dir("", data_dir)
    with database.engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0001")
    database.dispose()
    return data_dir


def _old_key(data_dir: Path, state: str, *, created_at: int = 1_600_000_000, pem: bytes | None = None) -> str:
    """Add a key as the previous release did: its row, then its PKCS#8 PEM file (0600)."""
    private_key = generate_rsa_key(BITS)
    jwk = public_jwk(private_key.public_key())
    conn = sqlite3.connect(data_dir / "issuer.sqlite3")
    try:
        conn.execute(
            "INSERT INTO signing_keys (kid, state, public_jwk, created_at, activated_at, retiring_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            # A retiring key began retiring just now (the fake clock's start): it stays published.
            (
                jwk["kid"],
                state,
                json.dumps(jwk),
                created_at,
                created_at,
                FakeClock().now if state == "retiring" else None,
            ),
        )
        conn.commit()
    finally:
        conn.close()
    _old_file(data_dir, jwk["kid"], pem if pem is not None else _pem(private_key))
    return jwk["kid"]


def _pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _old_file(data_dir: Path, kid: str, pem: bytes) -> Path:
    key_dir = data_dir / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    path = key_dir / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


@pytest.fixture
def make_old_store(old_data_dir: Path, kek: bytes, clock: FakeClock) -> Iterator[Callable[[], KeyStore]]:
    """Upgrade the old data directory as a start does, and build key stores on it."""
    opened: list[Database] = []

    def make() -> KeyStore:
        database = Database.for_data_dir("", old_data_dir)
        database.upgrade()
        opened.append(database)
        return KeyStore(database, kek, KeyPolicy(BITS, 0, 600, 3660, 0), clock=clock)

    yield make
    for database in opened:
        database.dispose()


def test_start_imports_the_previous_release_key_files_and_deletes_them(
    old_data_dir: Path, make_old_store: Callable[[], KeyStore], kek: bytes
) -> None:
    active = _old_key(old_data_dir, "active")
    retiring = _old_key(old_data_dir, "retiring", created_at=1_500_000_000)
    retired = _old_key(old_data_dir, "retired", created_at=1_400_000_000)
    orphan = public_jwk(generate_rsa_key(BITS).public_key())["kid"]  # its row never committed
    _old_file(old_data_dir, orphan, b"-----BEGIN PRIVATE KEY-----\n")
    key_dir = old_data_dir / "keys"
    signed_before = serialization.load_pem_private_key((key_dir / f"{active}.pem").read_bytes(), password=None)
    assert isinstance(signed_before, rsa.RSAPrivateKey)

    store = make_old_store()
    store.start(key_dir)

    assert store.signing_key().kid == active  # the same key goes on signing
    assert store.signing_key().private_key.private_numbers() == signed_before.private_numbers()
    assert _states(store) == {active: "active", retiring: "retiring", retired: "retired"}
    sealed = _sealed(store.database, retiring)
    assert sealed is not None
    open_private_key(kek, retiring, sealed)
    assert _sealed(store.database, retired) is None
    assert not key_dir.exists()  # every file imported, retired or orphaned is gone

    again = make_old_store()
    again.start(key_dir)  # a second start has nothing to import
    assert again.signing_key().kid == active


def test_start_imports_once_when_workers_start_together(
    old_data_dir: Path, make_old_store: Callable[[], KeyStore]
) -> None:
    active = _old_key(old_data_dir, "active")
    stores = [make_old_store() for _ in range(4)]
    _together(stores, lambda keys: keys.start(old_data_dir / "keys"))
    assert {keys.signing_key().kid for keys in stores} == {active}
    assert _states(stores[0]) == {active: "active"}


def test_torn_key_file_is_reported_and_its_key_replaced_at_start(
    old_data_dir: Path, make_old_store: Callable[[], KeyStore], caplog: pytest.LogCaptureFixture
) -> None:
    whole = _pem(generate_rsa_key(BITS))
    torn = _old_key(old_data_dir, "active", pem=whole[: len(whole) // 2])
    store = make_old_store()
    with caplog.at_level(logging.ERROR, logger="issuer.keys"):
        store.start(old_data_dir / "keys")
    new = store.signing_key().kid
    assert new != torn
    assert _states(store) == {new: "active", torn: "retiring"}
    assert torn in _logged_kids(caplog)
    # Never delete a key file that could not be imported; it goes once its key is retired.
    assert (old_data_dir / "keys" / f"{torn}.pem").exists()


def test_key_file_holding_another_key_is_not_imported(
    old_data_dir: Path, make_old_store: Callable[[], KeyStore]
) -> None:
    swapped = _old_key(old_data_dir, "active", pem=_pem(generate_rsa_key(BITS)))
    store = make_old_store()
    store.start(old_data_dir / "keys")
    assert store.signing_key().kid != swapped
    assert _states(store)[swapped] == "retiring"


# -- re-encrypting under a new key-encryption key -------------------------------------------


def test_rewrap_reseals_every_key_under_the_new_key_encryption_key(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    first = store.signing_key().kid
    second = store.rotate(now=True).kid
    third = store.rotate().kid
    store.rotate(now=True)  # third signs, second is retiring
    store.retire(first)
    fourth = store.rotate().kid
    before = {kid: blob for kid, _, blob in _rows(database)}
    new_kek = new_key_encryption_key()

    assert store.rewrap(new_kek) == sorted([second, third, fourth])

    after = {kid: blob for kid, _, blob in _rows(database)}
    assert after[first] is None
    assert all(after[kid] != before[kid] for kid in (second, third, fourth))
    with pytest.raises(WrongKeyEncryptionKey):
        make_store().ensure_active()  # the old KEK opens nothing now
    rewrapped = make_store(kek=new_kek)
    rewrapped.ensure_active()
    assert rewrapped.signing_key().kid == third
    store.retire(fourth)
    store.rotate()  # the store itself seals under the new KEK from now on
    make_store(kek=new_kek).ensure_active()


def test_rewrap_with_the_wrong_key_encryption_key_changes_nothing(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    store.rotate()
    before = _rows(database)
    with pytest.raises(WrongKeyEncryptionKey):
        make_store(kek=new_key_encryption_key()).rewrap(new_key_encryption_key())
    assert _rows(database) == before


def test_rewrap_refuses_a_new_key_of_the_wrong_size(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.rewrap(b"\x00" * 16)


def test_a_store_with_the_new_kek_first_opens_old_keys_and_seals_new_ones_under_the_new_kek(
    store: KeyStore, make_store: StoreFactory, database: Database, kek: bytes
) -> None:
    old_key = store.signing_key().kid
    new_kek = new_key_encryption_key()
    both = make_store(kek=(new_kek, kek))
    both.ensure_active()
    assert both.signing_key().kid == old_key
    staged = both.rotate().kid
    sealed = _sealed(database, staged)
    assert sealed is not None
    open_private_key(new_kek, staged, sealed)
    with pytest.raises(WrongKeyEncryptionKey):
        store.check_key_encryption_key()  # a replica with the old KEK alone cannot open it


def test_rewrap_with_no_argument_reseals_under_the_first_kek_and_is_harmless_to_repeat(
    store: KeyStore, make_store: StoreFactory, database: Database, kek: bytes
) -> None:
    active = store.signing_key().kid
    new_kek = new_key_encryption_key()
    both = make_store(kek=(new_kek, kek))
    assert both.rewrap() == [active]
    assert both.rewrap() == []
    make_store(kek=new_kek).check_key_encryption_key()
    with pytest.raises(WrongKeyEncryptionKey):
        make_store().check_key_encryption_key()


def test_checking_the_kek_reads_only_and_leaves_damaged_keys_to_the_start(
    store: KeyStore, make_store: StoreFactory, database: Database
) -> None:
    staged = store.rotate().kid
    _damage(database, staged)  # damaged, not foreign
    before = _rows(database)
    make_store().check_key_encryption_key()
    assert _rows(database) == before


def test_start_takes_a_snapshot_for_last_published_and_advances_nothing(
    make_store: StoreFactory, database: Database, clock: FakeClock
) -> None:
    first = make_store()
    first.start()
    active = first.signing_key().kid
    staged = first.rotate()
    clock.advance(601)  # the staged key is due to sign: only a reload may make it
    second = make_store()
    assert second.last_published() == []
    second.start()
    assert {jwk["kid"] for jwk in second.last_published()} == {active, staged.kid}
    with database.reading() as conn:
        state = conn.execute(select(signing_keys.c.state).where(signing_keys.c.kid == staged.kid)).scalar_one()
    assert state == "next"
