"""A service's side of private_key_jwt (RFC 7523): make a key pair, then sign client assertions.

    python scripts/service_token.py keygen NAME              # NAME.key.pem (0600) and NAME.jwks.json
    python scripts/service_token.py assertion CLIENT_ID KEY ISSUER

Register NAME.jwks.json with `python -m issuer clients add ... --jwks-file NAME.jwks.json`: the
issuer keeps only the public key. An assertion lives a minute and is accepted once; its `aud`
is ISSUER, the issuer identifier (its `ISSUER_URL`, e.g. http://localhost:8000), never the
token endpoint URL.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.jose import public_jwk
from shared.oauth_client import client_assertion, new_key_pem


def keygen(name: str) -> None:
    """Write a new RSA-2048 private key (0600) and its public JWKS."""
    pem = new_key_pem()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    fd = os.open(f"{name}.key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    Path(f"{name}.jwks.json").write_text(json.dumps({"keys": [public_jwk(key.public_key())]}, indent=2) + "\n")
    print(f"wrote {name}.key.pem (keep it) and {name}.jwks.json (register it)")


def assertion(client_id: str, key_path: str, issuer: str) -> None:
    """Print a client assertion for the issuer, signed with the service's private key."""
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        sys.exit(f"{key_path} does not hold an RSA private key")
    print(client_assertion(client_id, key, issuer))


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["keygen", name]:
            keygen(name)
        case ["assertion", client_id, key_path, issuer]:
            assertion(client_id, key_path, issuer)
        case _:
            sys.exit(__doc__)
