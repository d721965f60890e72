"""A service's DPoP key and the proofs it sends (RFC 9449), as a client of the issuer and of an API.

A `DPoPKey` is an EC P-256 key (ES256), kept 0600 in the service's data directory beside its
client key (`load_or_create_dpop_key`). `proof` signs one proof (section 4.2) of a request: its
method, its `htu` (the public URL the server checks, whatever URL the request really goes
to), a fresh `jti` and `iat`, the `ath` of the access token sent with it, and the server's nonce
when it asked for one. `nonce_asked` reads a `use_dpop_nonce` answer (section 8 at the token
endpoint, section 9 at an API): the nonce to retry with, once.

Only `cryptography` signs; `jwt_verifier.dpop` computes thumbprints and `ath` as the checks do.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from jwt_verifier.dpop import access_token_hash, jwk_thumbprint
from jwt_verifier.jose import b64url_encode
from shared.oauth_client import load_or_create_pem_key

ALGORITHM = "ES256"
# What a nonce may look like (RFC 9449 section 8.1: NQCHAR, 1*%x21 / %x23-5B / %x5D-7E), bounded.
MAX_NONCE_CHARS = 512


def new_dpop_key_pem() -> bytes:
    """Return a new EC P-256 private key as unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_or_create_dpop_key(path: Path) -> DPoPKey:
    """Return the service's DPoP key from `path` (0600), creating it on first use; KeyFileError if it is unusable."""
    key = load_or_create_pem_key(path, new_dpop_key_pem, _is_p256, "an unencrypted PEM EC P-256 private key")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return DPoPKey(key)


def _is_p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)


def _b64_json(part: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(part, separators=(",", ":")).encode())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _valid_nonce(nonce: str) -> bool:
    return 0 < len(nonce) <= MAX_NONCE_CHARS and all(0x21 <= ord(char) <= 0x7E and char not in '"\\' for char in nonce)


class ServerNonces:
    """The last nonce each server (origin) gave: one key's, or shared by short-lived keys (a browser session's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_origin: dict[str, str] = {}


class DPoPKey:
    """A DPoP key pair: signs proofs, and remembers the last nonce each server (origin) gave.

    `nonces` may be shared: a server's nonce is not tied to a key, so the keys a service makes
    per browser session learn it once, not at each request.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, nonces: ServerNonces | None = None) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise TypeError("a DPoP key must be an EC P-256 key")
        self.key = key
        numbers = key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }
        self.jkt = jwk_thumbprint(self.jwk)  # the `cnf.jkt` of the tokens bound to this key
        self._known = nonces if nonces is not None else ServerNonces()

    def proof(self, method: str, url: str, access_token: str | None = None, *, now: float | None = None) -> str:
        """Return a proof of `method url`, for `access_token` if given, with the nonce `url`'s server last gave."""
        claims: dict[str, Any] = {
            "jti": uuid.uuid4().hex,
            "htm": method.upper(),
            "htu": url,
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        with self._known.lock:
            nonce = self._known.by_origin.get(_origin(url))
        if nonce is not None:
            claims["nonce"] = nonce
        head = {"typ": "dpop+jwt", "alg": ALGORITHM, "jwk": self.jwk}
        signing_input = f"{_b64_json(head)}.{_b64_json(claims)}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def remember_nonce(self, url: str, headers: Mapping[str, str]) -> bool:
        """Keep the `DPoP-Nonce` of an answer from `url`'s server for its next proofs; return whether one came.

        A nonce that is not a valid one (section 8.1) is ignored.
        """
        nonce = headers.get("DPoP-Nonce", "").strip()
        if not _valid_nonce(nonce):
            return False
        with self._known.lock:
            self._known.by_origin[_origin(url)] = nonce
        return True

    def nonce_asked(self, url: str, status: int, headers: Mapping[str, str], body: Any) -> bool:
        """Return whether an answer from `url`'s server asks for a proof with its nonce, keeping that nonce.

        The token endpoint asks with a 400 `{"error": "use_dpop_nonce"}` (section 8), an API with
        a 401 whose `WWW-Authenticate` names `error="use_dpop_nonce"` (section 9); either sends
        the nonce in `DPoP-Nonce`.
        """
        if status == 400:
            asked = isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
        elif status == 401:
            asked = 'error="use_dpop_nonce"' in headers.get("WWW-Authenticate", "")
        else:
            asked = False
        return asked and self.remember_nonce(url, headers)
