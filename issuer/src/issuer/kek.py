"""The key-encryption key (KEK) and the sealing of signing keys under it (AES-256-GCM).

The KEK is 32 random bytes written as base64url (43 characters, `secrets.token_urlsafe(32)`).
It comes from `ISSUER_KEY_ENCRYPTION_KEY`, or from the file `ISSUER_KEY_ENCRYPTION_KEY_FILE`
names (a container secret), or else it is generated once into `<data_dir>/key-encryption-key`
(mode 0600) for the embedded default, as ORY Hydra does with its system secret.

Any of these may hold several KEKs, separated by spaces, commas or newlines: the first seals,
and every one opens. That is how the KEK changes with no downtime (docs/operations.md): every
replica is restarted with `NEW OLD`, `python -m issuer keys rewrap` re-seals every key under
NEW, and the replicas are restarted with NEW alone.

A sealed private key is `version (1 byte) | KEK id (8) | nonce (12) | ciphertext and tag`:
the PKCS#8 DER of the key, encrypted with a fresh random nonce and the kid as associated data,
so a ciphertext moved onto another row does not decrypt. The KEK id (an HMAC of a constant
under the KEK) tells a key sealed under another KEK (the operator's configuration is wrong)
from a damaged one (the key must be replaced); it reveals nothing about the KEK.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from issuer.db import private_dir, private_file
from jwt_verifier.jose import b64url_decode, b64url_encode
from shared.settings import SettingsError

KEK_BYTES = 32
KEK_FILE_NAME = "key-encryption-key"
VALUE_VARIABLE = "ISSUER_KEY_ENCRYPTION_KEY"
FILE_VARIABLE = "ISSUER_KEY_ENCRYPTION_KEY_FILE"

_VERSION = b"\x01"
_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER_BYTES = len(_VERSION) + _ID_BYTES + _NONCE_BYTES
_ID_LABEL = b"jwt-split key-encryption-key id"
_TEXT = re.compile(r"[A-Za-z0-9_-]{43}=?")
_SEPARATORS = re.compile(r"[\s,]+")
_HOW = "32 random bytes in base64url, 43 characters (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"


class UnreadableKeyError(Exception):
    """A sealed private key cannot be opened under this KEK."""


class ForeignKeyError(UnreadableKeyError):
    """The key was sealed under another KEK: the configured KEK is the wrong one."""


class CorruptKeyError(UnreadableKeyError):
    """The key was sealed under this KEK but is damaged, or is not an RSA private key."""


# -- loading the KEK ------------------------------------------------------------------------


def load_key_encryption_key(value: str, file: str, data_dir: Path) -> bytes:
    """Return the KEK that seals: the first of `load_key_encryption_keys`."""
    return load_key_encryption_keys(value, file, data_dir)[0]


def load_key_encryption_keys(value: str, file: str, data_dir: Path) -> tuple[bytes, ...]:
    """Return the KEKs from `value`, else the file named `file`, else the one generated in `data_dir`.

    `value` and `file` are the raw `ISSUER_KEY_ENCRYPTION_KEY` and `ISSUER_KEY_ENCRYPTION_KEY_FILE`
    (empty when unset). The first KEK seals; the others only open (during a KEK change).
    Workers starting together on a new data directory all get the same key.
    """
    value, file = value.strip(), file.strip()
    if value and file:
        raise SettingsError(f"set {VALUE_VARIABLE} or {FILE_VARIABLE}, not both")
    if value:
        return parse_key_encryption_keys(value, VALUE_VARIABLE)
    if file:
        try:
            text = Path(file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not ASCII text"
            raise SettingsError(f"{FILE_VARIABLE} names {file}, which cannot be read: {reason}") from None
        return parse_key_encryption_keys(text, f"the file {FILE_VARIABLE} names")
    return _generated(data_dir / KEK_FILE_NAME)


def parse_key_encryption_keys(text: str, source: str) -> tuple[bytes, ...]:
    """Decode one or more KEKs separated by spaces, commas or newlines; the first is the one that seals."""
    keks: list[bytes] = []
    for word in _SEPARATORS.split(text.strip()):
        kek = parse_key_encryption_key(word, source)
        if kek not in keks:
            keks.append(kek)
    return tuple(keks)


def parse_key_encryption_key(text: str, source: str) -> bytes:
    """Decode a KEK written as base64url, naming `source` (a variable or file) if it is malformed."""
    text = text.strip()
    if not _TEXT.fullmatch(text):
        # Never echo the value: it may be a real key pasted into the wrong variable.
        raise SettingsError(f"{source} must be {_HOW}, or several such keys separated by spaces (the first seals)")
    return b64url_decode(text.rstrip("="))


def new_key_encryption_key() -> bytes:
    """Return a new random KEK."""
    return secrets.token_bytes(KEK_BYTES)


def save_key_encryption_key(path: Path, kek: bytes) -> None:
    """Write `kek` to `path` (0600) atomically, replacing any file there (when the key-encryption key changes)."""
    tmp = _write_temp(path, kek)
    try:
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _generated(path: Path) -> tuple[bytes, ...]:
    if not path.exists():
        tmp = _write_temp(path, new_key_encryption_key())
        try:
            # A link, unlike a rename, never replaces: of workers starting together, the first
            # one's key is the key, and the others read it.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
        fsync_dir(path.parent)
    private_file(path)  # tighten a key file someone loosened
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        text = ""
    return parse_key_encryption_keys(text, f"{path} (generated because {VALUE_VARIABLE} is not set)")


def _write_temp(path: Path, kek: bytes) -> Path:
    """Write the KEK to a fsynced private temp file beside `path` and return the temp file."""
    private_dir(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(b64url_encode(kek) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return Path(name)


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (files created, linked, renamed or deleted) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- sealing keys -------------------------------------------------------------------------


def key_encryption_key_id(kek: bytes) -> bytes:
    """Return the short public id that tells which KEK sealed a key."""
    return hmac.new(kek, _ID_LABEL, hashlib.sha256).digest()[:_ID_BYTES]


def seal_private_key(kek: bytes, kid: str, private_key: rsa.RSAPrivateKey) -> bytes:
    """Encrypt a private key for the row of `kid`."""
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _VERSION + key_encryption_key_id(kek) + nonce + AESGCM(kek).encrypt(nonce, der, kid.encode("utf-8"))


def seal_secret(kek: bytes, label: str, secret: bytes) -> bytes:
    """Encrypt a secret other than a signing key (a TOTP seed) for the row `label` names, as keys are sealed."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _VERSION + key_encryption_key_id(kek) + nonce + AESGCM(kek).encrypt(nonce, secret, label.encode("utf-8"))


def open_secret(kek: bytes | Sequence[bytes], label: str, sealed: bytes) -> bytes:
    """Decrypt a secret `seal_secret` sealed for `label` under one of the KEKs.

    Raise ForeignKeyError if none of them sealed it, CorruptKeyError if it is damaged or was
    sealed for another row.
    """
    keks = (kek,) if isinstance(kek, bytes) else tuple(kek)
    if len(sealed) <= _HEADER_BYTES or sealed[:1] != _VERSION:
        raise CorruptKeyError(f"the secret of {label} is not sealed")
    sealer = next((candidate for candidate in keks if sealed_under(candidate, sealed)), None)
    if sealer is None:
        raise ForeignKeyError(f"the secret of {label} is sealed under another key-encryption key")
    try:
        return AESGCM(sealer).decrypt(sealed[1 + _ID_BYTES : _HEADER_BYTES], sealed[_HEADER_BYTES:], label.encode())
    except InvalidTag:
        raise CorruptKeyError(f"the secret of {label} is damaged (its tag does not verify)") from None


def sealed_under(kek: bytes, sealed: bytes) -> bool:
    """Return whether `sealed` says it was sealed under `kek` (by its KEK id; nothing is decrypted)."""
    return len(sealed) > _HEADER_BYTES and hmac.compare_digest(sealed[1 : 1 + _ID_BYTES], key_encryption_key_id(kek))


def open_private_key(kek: bytes | Sequence[bytes], kid: str, sealed: bytes) -> rsa.RSAPrivateKey:
    """Decrypt the private key of `kid` under the KEK (of several) that sealed it.

    Raise ForeignKeyError if none of them did, CorruptKeyError if the key cannot be read.
    """
    keks = (kek,) if isinstance(kek, bytes) else tuple(kek)
    if len(sealed) <= _HEADER_BYTES or sealed[:1] != _VERSION:
        raise CorruptKeyError(f"the private key of {kid} is not a sealed key")
    # The KEK id picks the key: one decryption, whatever the number of KEKs.
    sealer = next((candidate for candidate in keks if sealed_under(candidate, sealed)), None)
    if sealer is None:
        raise ForeignKeyError(f"the private key of {kid} is sealed under another key-encryption key")
    nonce = sealed[1 + _ID_BYTES : _HEADER_BYTES]
    try:
        der = AESGCM(sealer).decrypt(nonce, sealed[_HEADER_BYTES:], kid.encode("utf-8"))
    except InvalidTag:
        raise CorruptKeyError(f"the private key of {kid} is damaged (its tag does not verify)") from None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CorruptKeyError(f"the private key of {kid} does not parse") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CorruptKeyError(f"the private key of {kid} is not an RSA key")
    return key
