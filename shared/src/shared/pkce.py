"""PKCE (RFC 7636) with the S256 method only: the one place both services compute it."""

from __future__ import annotations

import hashlib
import re
import secrets

from jwt_verifier.jose import b64url_encode

# Section 4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# Section 4.2: the S256 challenge is the unpadded base64url of a SHA-256 digest.
CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def new_verifier() -> str:
    """Return a fresh code verifier of 256 random bits (43 characters)."""
    return secrets.token_urlsafe(32)


def s256(verifier: str) -> str:
    """Return the S256 code challenge of a verifier."""
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())
