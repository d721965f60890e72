"""Opaque secrets the issuer hands out (refresh tokens, codes, session ids) and their stored form.

Each is 256 random bits; the database keeps only its SHA-256, so a copy of the database
lets nobody use them. A fast hash is right here: the inputs are random, not passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from jwt_verifier.jose import b64url_encode


def new_secret() -> str:
    """Return a new 256-bit secret, base64url encoded (43 characters)."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """Return the stored form of a secret: its SHA-256, hex encoded."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def derived_secret(key: bytes, purpose: str, secret: str) -> str:
    """Return a secret derived from another under a server key (HMAC-SHA-256), base64url encoded.

    Computing it takes both the secret itself and the server key: the stored hash is not
    enough, and neither is the secret alone.
    """
    message = f"{purpose}\x00{secret}".encode("utf-8", "surrogatepass")
    return b64url_encode(hmac.new(key, message, hashlib.sha256).digest())
