"""Build test tokens: `make_claims(**overrides)` and `sign(...)` with keys the tests generate."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from jwt_verifier.jose import b64url_encode, public_jwk

ISSUER = "http://localhost:8000"
AUDIENCE = "jwt-split-api"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ID_NONCE = "nonce-of-the-login"


def overridden(members: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return `members` (claims, a header, a JWK) with `overrides` applied; an override of `None` removes that member."""
    for name, value in overrides.items():
        if value is None:
            members.pop(name, None)
        else:
            members[name] = value
    return members


def make_claims(*, issuer: str = ISSUER, audience: str = AUDIENCE, **overrides: Any) -> dict[str, Any]:
    """Return valid RFC 9068 claims; an override of `None` removes that claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": "alice",
        "aud": audience,
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "client_id": "cli",
        "scope": "profile",
    }
    return overridden(claims, overrides)


def at_hash(access_token: str) -> str:
    """Return the `at_hash` of an access token for RS256 (OpenID Connect Core 1.0 section 3.1.3.6)."""
    return b64url_encode(hashlib.sha256(access_token.encode()).digest()[:16])


def make_id_claims(access_token: str, **overrides: Any) -> dict[str, Any]:
    """Return valid claims of an ID token of the code flow for `resource-web`; an override of `None` removes that claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "resource-web",
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 5,
        "nonce": ID_NONCE,
        "at_hash": at_hash(access_token),
        "azp": "resource-web",
        "sid": "session-1",
        "name": "Alice",
        "email": "alice@example.com",
    }
    return overridden(claims, overrides)


def sign_id(claims: dict[str, Any], key: rsa.RSAPrivateKey, **options: Any) -> str:
    """Sign ID token claims the way the issuer does (`typ` JWT unless told otherwise)."""
    options.setdefault("typ", "JWT")
    return sign(claims, key, **options)


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """Generate an RSA private key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def rsa_key_with_exponent(exponent: int, bits: int = 2048) -> rsa.RSAPrivateKey:
    """Return an RSA private key whose public exponent is the first usable odd number from `exponent` up.

    cryptography only generates keys with e = 3 or 65537; a hostile key needs its own arithmetic.
    """
    base = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
    p, q = base.p, base.q
    phi = (p - 1) * (q - 1)
    e = exponent | 1
    while math.gcd(e, phi) != 1:
        e += 2
    d = pow(e, -1, phi)
    public = rsa.RSAPublicNumbers(e, p * q)
    crt = (rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q))
    return rsa.RSAPrivateNumbers(p, q, d, *crt, public).private_key()


def kid_of(key: rsa.RSAPrivateKey) -> str:
    """Return the RFC 7638 thumbprint kid of a key."""
    return public_jwk(key.public_key())["kid"]


def sign(
    claims: dict[str, Any],
    key: rsa.RSAPrivateKey,
    *,
    kid: str | None = None,
    typ: str | None = "at+jwt",
    **headers: Any,
) -> str:
    """Sign claims with RS256 the way the issuer does; `kid` defaults to the key's thumbprint."""
    # PyJWT drops a `typ` of None instead of writing its default "JWT".
    header: dict[str, Any] = {"kid": kid if kid is not None else kid_of(key), "typ": typ, **headers}
    return jwt.encode(claims, key, algorithm="RS256", headers=header)


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """Assemble a JWS compact serialization by hand, for tokens no library would make."""
    return f"{_encode_json(header)}.{_encode_json(claims)}.{b64url_encode(signature)}"


def _encode_json(part: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(part, separators=(",", ":")).encode())


def forge_hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """Sign with HS256 using `secret` as the HMAC key: the classic algorithm-confusion forgery."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url_encode(signature)}"


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    """Return the SPKI PEM of a key's public half, as a forger would download it."""
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwks_json(*keys: rsa.RSAPrivateKey) -> str:
    """Return the JWKS text of these keys' public halves, as a client registers it."""
    return json.dumps({"keys": [public_jwk(key.public_key()) for key in keys]})


def assertion_claims(
    client_id: str, audience: str | list[str], *, now: float | None = None, **overrides: Any
) -> dict[str, Any]:
    """Return valid RFC 7523 client assertion claims (a minute long); an override of `None` removes that claim."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": issued + 60,
        "iat": issued,
        "jti": uuid.uuid4().hex,
    }
    return overridden(claims, overrides)


def sign_raw(header: bytes, payload: bytes, key: rsa.RSAPrivateKey) -> str:
    """Sign hand-written header and payload JSON with RS256, for JSON no library would write."""
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload)}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url_encode(signature)}"


def client_credentials_form(client_id: str, key: rsa.RSAPrivateKey, issuer: str, **form: str) -> dict[str, str]:
    """Return a client-credentials request signed in with a fresh private_key_jwt assertion (`aud` the issuer)."""
    assertion = sign(assertion_claims(client_id, issuer), key, kid=kid_of(key), typ=None)
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **form,
    }
