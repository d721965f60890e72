"""What the key store deals in: key records, the lifecycle policy, and its errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from issuer.kek import KEK_BYTES
from jwt_verifier.jose import RsaPublicJwk

PUBLISHED_STATES = ("next", "active", "retiring")
# Keys that sign or will sign: their private half must be readable. A retiring key never signs again.
SIGNING_STATES = ("next", "active")

KeyGenerator = Callable[[int], rsa.RSAPrivateKey]


class KeyStoreError(Exception):
    """A key operation cannot be done; the message says why."""


class WrongKeyEncryptionKey(KeyStoreError):
    """The configured key-encryption key is not the one the stored keys are sealed under."""


@dataclass(frozen=True)
class KeyRecord:
    """One key's public half and lifecycle dates (Unix seconds)."""

    kid: str
    state: str
    jwk: RsaPublicJwk
    created_at: int
    activated_at: int | None
    retiring_at: int | None
    retired_at: int | None


@dataclass(frozen=True)
class NewKey:
    """A key generated and sealed outside any transaction, ready to insert."""

    jwk: RsaPublicJwk
    sealed: bytes


def generate_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """Generate an RSA private key of `bits` bits (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True)
class KeyPolicy:
    """The key size and lifecycle timings (seconds) a key store follows; settings make one."""

    rsa_key_bits: int
    reload_interval: float
    activation_delay: float
    retire_after: float
    rotation_interval: float


def checked_keks(kek: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    """Return the KEKs as a tuple, the one new keys are sealed under first; refuse a wrong size."""
    keks = (kek,) if isinstance(kek, bytes) else tuple(kek)
    if not keks or any(len(k) != KEK_BYTES for k in keks):
        raise ValueError(f"the key-encryption key must be {KEK_BYTES} bytes")
    return keks


def wrong_kek(kids: list[str]) -> WrongKeyEncryptionKey:
    """Return the error that stops a store whose KEKs opened none of `kids`."""
    return WrongKeyEncryptionKey(
        f"the key-encryption key is not the one the signing keys {', '.join(kids)} are sealed under; "
        "start with that key in ISSUER_KEY_ENCRYPTION_KEY or ISSUER_KEY_ENCRYPTION_KEY_FILE "
        "(during a key-encryption key change, the new key first and the old one after it)"
    )
