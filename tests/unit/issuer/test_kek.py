"""Unit tests for issuer.kek: loading the key-encryption key and sealing private keys under it."""

from __future__ import annotations

import secrets
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer.kek import (
    KEK_FILE_NAME,
    CorruptKeyError,
    ForeignKeyError,
    load_key_encryption_key,
    load_key_encryption_keys,
    new_key_encryption_key,
    open_private_key,
    save_key_encryption_key,
    seal_private_key,
)
from jwt_verifier.jose import b64url_encode
from shared.settings import SettingsError
from tests.support.tokens import new_rsa_key

KID = "a-kid"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    """A small key to seal."""
    return new_rsa_key(1024)


# -- from the environment -------------------------------------------------------------------


def test_key_from_the_variable_is_decoded(tmp_path: Path) -> None:
    kek = new_key_encryption_key()
    assert load_key_encryption_key(b64url_encode(kek), "", tmp_path) == kek
    assert not (tmp_path / KEK_FILE_NAME).exists()


def test_key_from_the_variable_may_carry_padding_and_whitespace(tmp_path: Path) -> None:
    kek = new_key_encryption_key()
    assert load_key_encryption_key(f" {b64url_encode(kek)}=\n", "", tmp_path) == kek


def test_token_urlsafe_makes_a_valid_key(tmp_path: Path) -> None:
    assert len(load_key_encryption_key(secrets.token_urlsafe(32), "", tmp_path)) == 32


@pytest.mark.parametrize(
    "value",
    [
        secrets.token_urlsafe(16),  # too short
        secrets.token_urlsafe(48),  # too long
        "+/" + secrets.token_urlsafe(32)[2:],  # standard base64, not base64url
        "k" * 42 + "é",
    ],
    ids=["short", "long", "standard-base64", "non-ascii"],
)
def test_malformed_key_names_the_variable_and_never_echoes_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"^ISSUER_KEY_ENCRYPTION_KEY must be 32 random bytes") as caught:
        load_key_encryption_key(value, "", tmp_path)
    assert value.strip() not in str(caught.value)


def test_variable_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ISSUER_KEY_ENCRYPTION_KEY or ISSUER_KEY_ENCRYPTION_KEY_FILE, not both"):
        load_key_encryption_key(secrets.token_urlsafe(32), str(tmp_path / "kek"), tmp_path)


def test_key_from_a_file(tmp_path: Path) -> None:
    kek = new_key_encryption_key()
    path = tmp_path / "secret"
    path.write_text(b64url_encode(kek) + "\n")
    assert load_key_encryption_key("", str(path), tmp_path / "data") == kek
    assert not (tmp_path / "data" / KEK_FILE_NAME).exists()


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^ISSUER_KEY_ENCRYPTION_KEY_FILE names .*/nope, which cannot be read"):
        load_key_encryption_key("", str(tmp_path / "nope"), tmp_path)


def test_malformed_file_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(secrets.token_bytes(32))  # raw bytes, not base64url
    with pytest.raises(SettingsError, match="ISSUER_KEY_ENCRYPTION_KEY_FILE"):
        load_key_encryption_key("", str(path), tmp_path)


# -- several KEKs, while the KEK changes -----------------------------------------------------------


@pytest.mark.parametrize("separator", [" ", ",", ", ", "\n", " \n\t"])
def test_several_keys_are_read_in_order_the_first_sealing(tmp_path: Path, separator: str) -> None:
    new, old = new_key_encryption_key(), new_key_encryption_key()
    text = f"{b64url_encode(new)}{separator}{b64url_encode(old)}"
    assert load_key_encryption_keys(text, "", tmp_path) == (new, old)
    assert load_key_encryption_key(text, "", tmp_path) == new


def test_several_keys_from_a_file_one_per_line(tmp_path: Path) -> None:
    new, old = new_key_encryption_key(), new_key_encryption_key()
    path = tmp_path / "secret"
    path.write_text(f"{b64url_encode(new)}\n{b64url_encode(old)}\n")
    assert load_key_encryption_keys("", str(path), tmp_path / "data") == (new, old)


def test_a_key_listed_twice_counts_once(tmp_path: Path) -> None:
    kek = new_key_encryption_key()
    assert load_key_encryption_keys(f"{b64url_encode(kek)} {b64url_encode(kek)}", "", tmp_path) == (kek,)


def test_one_malformed_key_among_several_names_the_variable_and_echoes_nothing(tmp_path: Path) -> None:
    good = b64url_encode(new_key_encryption_key())
    with pytest.raises(SettingsError, match=r"^ISSUER_KEY_ENCRYPTION_KEY must be") as caught:
        load_key_encryption_keys(f"{good} not-a-key", "", tmp_path)
    assert good not in str(caught.value)
    assert "not-a-key" not in str(caught.value)


def test_a_key_opens_under_whichever_of_several_keks_sealed_it(private_key: rsa.RSAPrivateKey) -> None:
    new, old = new_key_encryption_key(), new_key_encryption_key()
    sealed = seal_private_key(old, KID, private_key)
    assert open_private_key((new, old), KID, sealed).private_numbers() == private_key.private_numbers()
    with pytest.raises(ForeignKeyError):
        open_private_key((new, new_key_encryption_key()), KID, sealed)


# -- generated into the data directory ---------------------------------------------------------


def test_key_is_generated_once_into_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_key_encryption_key("", "", data_dir)
    path = data_dir / KEK_FILE_NAME
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert path.read_text().strip() == b64url_encode(first)
    assert load_key_encryption_key("", "", data_dir) == first
    assert sorted(p.name for p in data_dir.iterdir()) == [KEK_FILE_NAME]  # no temp file left


def test_workers_starting_together_agree_on_the_generated_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def load() -> bytes:
        barrier.wait()
        return load_key_encryption_key("", "", tmp_path)

    with ThreadPoolExecutor(8) as pool:
        keys = [future.result() for future in [pool.submit(load) for _ in range(8)]]
    assert len(set(keys)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEK_FILE_NAME]


def test_generated_key_file_is_tightened_when_loosened(tmp_path: Path) -> None:
    kek = load_key_encryption_key("", "", tmp_path)
    (tmp_path / KEK_FILE_NAME).chmod(0o644)
    assert load_key_encryption_key("", "", tmp_path) == kek
    assert stat.S_IMODE((tmp_path / KEK_FILE_NAME).stat().st_mode) == 0o600


def test_damaged_generated_key_file_stops_start_up_naming_it(tmp_path: Path) -> None:
    (tmp_path / KEK_FILE_NAME).write_text("not a key\n")
    with pytest.raises(SettingsError, match=rf"^{tmp_path / KEK_FILE_NAME} \(generated because"):
        load_key_encryption_key("", "", tmp_path)


def test_saved_key_replaces_the_generated_one(tmp_path: Path) -> None:
    load_key_encryption_key("", "", tmp_path)
    new = new_key_encryption_key()
    save_key_encryption_key(tmp_path / KEK_FILE_NAME, new)
    assert load_key_encryption_key("", "", tmp_path) == new
    assert stat.S_IMODE((tmp_path / KEK_FILE_NAME).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEK_FILE_NAME]


# -- sealing -------------------------------------------------------------------------------


def test_sealed_key_opens_under_its_kek_and_kid(private_key: rsa.RSAPrivateKey) -> None:
    kek = new_key_encryption_key()
    opened = open_private_key(kek, KID, seal_private_key(kek, KID, private_key))
    assert opened.private_numbers() == private_key.private_numbers()


def test_each_seal_uses_a_fresh_nonce(private_key: rsa.RSAPrivateKey) -> None:
    kek = new_key_encryption_key()
    assert seal_private_key(kek, KID, private_key) != seal_private_key(kek, KID, private_key)


def test_key_sealed_under_another_kek_is_foreign(private_key: rsa.RSAPrivateKey) -> None:
    sealed = seal_private_key(new_key_encryption_key(), KID, private_key)
    with pytest.raises(ForeignKeyError, match="another key-encryption key"):
        open_private_key(new_key_encryption_key(), KID, sealed)


def test_key_sealed_for_another_kid_does_not_open(private_key: rsa.RSAPrivateKey) -> None:
    kek = new_key_encryption_key()
    with pytest.raises(CorruptKeyError, match="damaged"):
        open_private_key(kek, "other-kid", seal_private_key(kek, KID, private_key))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "version"])
def test_damaged_sealed_key_is_corrupt_not_foreign(private_key: rsa.RSAPrivateKey, damage: str) -> None:
    kek = new_key_encryption_key()
    sealed = seal_private_key(kek, KID, private_key)
    damaged = {
        "flip": sealed[:40] + bytes([sealed[40] ^ 0x80]) + sealed[41:],
        "truncate": sealed[:30],
        "empty": b"",
        "version": b"\x02" + sealed[1:],
    }[damage]
    with pytest.raises(CorruptKeyError):
        open_private_key(kek, KID, damaged)
