"""A client of the issuer's token endpoint, and a service's own tokens (client credentials).

`post_token` is the one place an answer of the token endpoint is read: a network failure, a
429, a 5xx or a body that is not JSON is `IssuerUnavailable` (503: try again); a refusal is
`IssuerError` (502), or `InvalidGrant` when the grant itself is gone. `ServiceTokens` gets a
service its own access tokens (RFC 6749 section 4.4), signing in with `private_key_jwt`
(RFC 7523): the private key never leaves the service, the issuer holds only its public half.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.errors import ApiError
from jwt_verifier.jose import RsaPublicJwk, public_jwk
from shared.jsonread import read_json

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60


class IssuerError(ApiError):
    """The issuer refused a grant; the message is safe to show (a 502: our upstream said no)."""

    status = 502
    error = "bad_gateway"


class InvalidGrant(IssuerError):
    """The issuer answered `invalid_grant`: the code or refresh token is gone for good."""


class IssuerUnavailable(IssuerError):
    """The issuer could not give an answer now (unreachable, rate limited, failing, garbled): a 503."""

    status = 503
    error = "temporarily_unavailable"


def post_token(session: requests.Session, url: str, form: dict[str, str], timeout: float) -> dict[str, Any]:
    """POST to the token endpoint and return its tokens; only a 4xx naming `invalid_grant` means the grant is gone."""
    try:
        response = session.post(url, data=form, timeout=timeout)
    except requests.RequestException as exc:
        raise IssuerUnavailable("the issuer could not be reached; try again shortly") from exc
    try:
        body = read_json(response.content)
    except ValueError as exc:
        raise IssuerUnavailable(f"the issuer answered HTTP {response.status_code} without JSON") from exc
    if response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
        return body
    if response.status_code == 429 or response.status_code >= 500:
        raise IssuerUnavailable(f"the issuer is busy or failing (HTTP {response.status_code}); try again shortly")
    description = body.get("error_description", "") if isinstance(body, dict) else ""
    message = f"the issuer refused: {str(description)[:200] or response.status_code}"
    if isinstance(body, dict) and body.get("error") == "invalid_grant":
        raise InvalidGrant(message)
    raise IssuerError(message)


def client_assertion(client_id: str, key: rsa.RSAPrivateKey, audience: str, now: float | None = None) -> str:
    """Return a `private_key_jwt` client assertion (RFC 7523 section 3): good for a minute, accepted once."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": public_jwk(key.public_key())["kid"]})


def new_key_pem() -> bytes:
    """Return a new RSA-2048 private key as unencrypted PKCS#8 PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """Return the service's private key from `path` (0600), creating it on first use.

    Several workers may start at once: the key is written to a private temporary file and
    linked into place, so a reader never sees half a key and only one key ever wins.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(new_key_pem())
            with contextlib.suppress(FileExistsError):  # another worker's key won
                os.link(temporary, path)
        finally:
            temporary.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{path} does not hold an RSA private key")
    return key


class ServiceTokens:
    """A service's own access tokens for one API, fetched with client credentials and kept until near expiry.

    One fetch at a time: the other threads wait for it and share its token. A token is
    renewed once less than a third of its life (at most `renew_before` seconds) remains; if the
    issuer cannot be reached then, the token in hand is used until it expires.
    """

    def __init__(
        self,
        *,
        client_id: str,
        key: rsa.RSAPrivateKey,
        token_url: str,
        issuer: str,
        resource: str,
        scope: str,
        timeout: float = 5.0,
        renew_before: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.key = key
        self.token_url = token_url
        self.issuer = issuer  # the assertion's `aud`: the issuer identifier, whatever URL reaches it
        self.resource = resource
        self.scope = scope
        self.timeout = timeout
        self.renew_before = renew_before
        self.clock = clock
        self.session = requests.Session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0

    @property
    def jwks(self) -> dict[str, list[RsaPublicJwk]]:
        """Return the public half of the service's key as a JWKS (what the issuer registers)."""
        return {"keys": [public_jwk(self.key.public_key())]}

    def token(self) -> str:
        """Return an access token for the API, fetching a new one when needed."""
        with self._lock:
            now = self.clock()
            if self._token is not None and now < self._renew_at:
                return self._token
            try:
                self._fetch(now)
            except IssuerUnavailable:
                if self._token is not None and now < self._expires_at:
                    return self._token
                raise
            assert self._token is not None
            return self._token

    def forget(self) -> None:
        """Drop the token in hand (the API refused it): the next call fetches a new one."""
        with self._lock:
            self._token = None

    def _fetch(self, now: float) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self.client_id, self.key, self.issuer, now),
            "resource": self.resource,
            "scope": self.scope,
        }
        body = post_token(self.session, self.token_url, form, self.timeout)
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise IssuerUnavailable("the issuer's token answer has no valid expires_in")
        self._token = body["access_token"]
        self._expires_at = now + lifetime
        self._renew_at = now + lifetime - min(self.renew_before, lifetime / 3)
