"""The DPoP key of a browser session (RFC 9449): the key the browser login's tokens are bound to.

Each login makes a fresh EC P-256 key (ES256). Its private half travels with the tokens it
binds, in an HttpOnly, SameSite=Lax cookie of its own (Secure over HTTPS): the resource still
holds no secret, the key belongs to the session like its tokens. The resource sends
`dpop_jkt` at `/authorize`, a proof at the code exchange, at each refresh (a public client's
refresh tokens are bound to the key) and with each call it makes with the access token
(`/userinfo`). So an access token copied from a log, a proxy or an API it was sent to is
useless alone; whoever takes the whole cookie jar has the key too.

The cookie holds the private scalar as 43 characters of base64url. What the browser sends is
hostile input: anything that is not such a scalar of P-256 is no key. Deriving the key from its
scalar is a scalar multiplication (the public point): the last `KEY_CACHE_SIZE` cookie values
decoded are remembered (least recently used dropped first), so a session's requests pay it once.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from jwt_verifier.dpop_scheme import bound_jkt
from jwt_verifier.errors import DPoPInvalidToken, Reason
from jwt_verifier.jose import b64url_decode, b64url_encode
from shared.dpop_client import DPoPKey, ServerNonces

KEY_COOKIE = "rs_dpop"
KEY_CACHE_SIZE = 256  # cookie values whose derived key is remembered (per process)
_ENCODED = re.compile(r"[A-Za-z0-9_-]{43}")


def new_key(nonces: ServerNonces) -> DPoPKey:
    """Return a fresh session key, sharing the nonces the issuer gave to the other sessions' keys."""
    return DPoPKey(ec.generate_private_key(ec.SECP256R1()), nonces)


def encode(key: DPoPKey) -> str:
    """Return the cookie value of a session key: its private scalar, base64url."""
    return b64url_encode(key.key.private_numbers().private_value.to_bytes(32, "big"))


def decode(value: str | None, nonces: ServerNonces) -> DPoPKey | None:
    """Return the session key a cookie value holds, or None when it holds none."""
    if not value or not _ENCODED.fullmatch(value):
        return None
    key = _derive(value)
    return None if key is None else DPoPKey(key, nonces)


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _derive(value: str) -> ec.EllipticCurvePrivateKey | None:
    """Return the P-256 private key whose scalar `value` encodes, or None (remembered either way)."""
    try:
        return ec.derive_private_key(int.from_bytes(b64url_decode(value), "big"), ec.SECP256R1())
    except (ValueError, binascii.Error):
        return None  # zero, or not below the group order


def check_binding(claims: Mapping[str, Any], key: DPoPKey | None) -> None:
    """Refuse a DPoP-bound token whose key is not this session's (a token from elsewhere, or no key).

    A token without `cnf.jkt` (a login from before the resource used DPoP) passes: it is a
    bearer token, as it always was.
    """
    jkt = bound_jkt(claims)
    if jkt is not None and (key is None or key.jkt != jkt):
        raise DPoPInvalidToken(
            "this token is DPoP-bound to a key this browser session does not hold", reason=Reason.DPOP_BINDING
        )
