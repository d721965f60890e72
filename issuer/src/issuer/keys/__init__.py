"""The key store: RSA signing keys in the `signing_keys` table, private halves sealed under the KEK.

Each row holds a key's public JWK, its state and dates, and its private half encrypted under
the key-encryption key (see `issuer.kek`), so replicas share keys through the database alone
and a key commits in the same row as its state (nothing to orphan if a process dies).

A key moves `next` (published, not signing) -> `active` (signing) -> `retiring` (published
so that tokens it signed still verify) -> `retired` (withdrawn; its private half erased).

The lifecycle advances by itself, checked whenever a worker re-reads the states (every
`reload_interval` seconds, so CLI changes and other replicas are seen without a restart):

- a `next` key becomes `active` once it has been published for `activation_delay` seconds
  (at least the JWKS cache lifetime, so every verifier knows it before it signs); the key it
  replaces becomes `retiring`;
- a `retiring` key is retired `retire_after` seconds later (the access token lifetime plus a
  grace), when every token it signed has expired;
- with `rotation_interval` set, a new `next` key is staged that long after the active key
  began signing, less the activation delay (automatic rotation; off by default).

Each transition runs in a write transaction that re-checks it, so workers racing to make it
agree on the result. RSA keys are generated and sealed before that transaction begins: an
8192-bit key takes seconds, and nobody else may wait for it.

The store may hold several KEKs (during a KEK change): it seals under the first and opens
with whichever sealed a key. `rewrap` re-seals every key under the first.

At start (`start`): key files of releases before this one are imported and deleted; a key
sealed under none of the KEKs stops start-up with `WrongKeyEncryptionKey`; a key that cannot be read
(damaged, or its file was torn) is logged and replaced, as it is if that is found later while
signing: a request never fails on it.

The modules, one responsibility each (this package re-exports the public names):

| module    | holds                                                                   |
| --------- | ----------------------------------------------------------------------- |
| `store`   | `KeyStore`: the lifecycle (create, rotate, retire, publish the JWKS)    |
| `signing` | `SigningKey` and the signing-key cache (the active key, opened once)    |
| `legacy`  | the import of earlier releases' PEM key files                           |
| `rewrap`  | re-sealing every key under a new KEK                                    |
| `repair`  | the KEK check, and replacing keys that cannot be read                   |
| `table`   | the `signing_keys` statements the others share                          |
| `model`   | records, the policy, errors                                             |
"""

from __future__ import annotations

from issuer.keys.model import (
    PUBLISHED_STATES,
    SIGNING_STATES,
    KeyGenerator,
    KeyPolicy,
    KeyRecord,
    KeyStoreError,
    WrongKeyEncryptionKey,
    generate_rsa_key,
)
from issuer.keys.signing import SigningKey
from issuer.keys.store import KeyStore

__all__ = [
    "PUBLISHED_STATES",
    "SIGNING_STATES",
    "KeyGenerator",
    "KeyPolicy",
    "KeyRecord",
    "KeyStore",
    "KeyStoreError",
    "SigningKey",
    "WrongKeyEncryptionKey",
    "generate_rsa_key",
]
