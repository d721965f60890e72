"""A client of the issuer's token endpoint, and a service's own tokens (client credentials).

`post_token` is the one place an answer of the token endpoint is read: a network failure, a
429, a 5xx or a body that is not JSON is `IssuerUnavailable` (503: try again); a refusal is
`IssuerError` (502), or `InvalidGrant` when the grant itself is gone. `ServiceTokens` gets a
service its own access tokens (RFC 6749 section 4.4), signing in with `private_key_jwt`
(RFC 7523): the private key never leaves the service, the issuer holds only its public half.
`read_answer` reads a peer's JSON answer within a size and a time budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from jwt_verifier.jose import RsaPublicJwk, public_jwk
from shared import tracing
from shared.errors import ApiError
from shared.httpread import read_within
from shared.jsonread import read_json

if TYPE_CHECKING:
    from shared.dpop_client import DPoPKey

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60
MAX_ANSWER_BYTES = 64 * 1024
MAX_LIFETIME = 86_400  # an issuer promising more is believed for a day
# What fits an `Authorization: Bearer` header: printable ASCII, no spaces, no line breaks.
TOKEN_SYNTAX = re.compile(r"[\x21-\x7e]{1,8192}")


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


class DPoPNonceAsked(IssuerError):
    """The issuer wants its nonce in the DPoP proof (`use_dpop_nonce`): the proof key now holds it, try again."""


class KeyFileError(Exception):
    """The service's key file cannot be used; the message names the file and says why."""


def read_answer(session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: Any) -> tuple[int, Any]:
    """Send a request and return the status and the JSON answer (None if it is not JSON or too large).

    Redirects are not followed. The whole answer, headers and body, must arrive within
    `timeout` seconds, however slowly the peer sends it (`shared.httpread`; requests.Timeout
    or another requests.RequestException otherwise).
    """
    status, _, body = read_answer_headers(session, method, url, timeout=timeout, **kwargs)
    return status, body


def read_answer_headers(
    session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: Any
) -> tuple[int, Mapping[str, str], Any]:
    """Do what `read_answer` does, and return the answer's headers too (between its status and its JSON)."""
    answer = read_within(session, method, url, timeout=timeout, max_bytes=MAX_ANSWER_BYTES, **kwargs)
    if answer.body is None:
        return answer.status, answer.headers, None
    try:
        return answer.status, answer.headers, read_json(answer.body)
    except ValueError:
        return answer.status, answer.headers, None


def post_token(
    session: requests.Session,
    url: str,
    form: dict[str, str],
    timeout: float,
    *,
    dpop: DPoPKey | None = None,
    proof_url: str | None = None,
) -> dict[str, Any]:
    """POST to the token endpoint and return its tokens; only a 4xx naming `invalid_grant` means the grant is gone.

    With `dpop`, the request carries a proof of `POST proof_url` (the token endpoint's public
    URL, which the issuer checks; `url` by default). When the issuer asks for its nonce
    (RFC 9449 section 8) `dpop` keeps it and `DPoPNonceAsked` is raised: send the request
    again, with a new client assertion (the issuer has spent this one).
    """
    try:
        if dpop is None:
            status, body = read_answer(session, "POST", url, timeout=timeout, data=form)
        else:
            proof_url = proof_url or url
            status, headers, body = read_answer_headers(
                session, "POST", url, timeout=timeout, data=form, headers={"DPoP": dpop.proof("POST", proof_url)}
            )
            if dpop.nonce_asked(proof_url, status, headers, body):
                raise DPoPNonceAsked("the issuer asked for a DPoP proof with its nonce")
            dpop.remember_nonce(proof_url, headers)
    except requests.RequestException as exc:
        raise IssuerUnavailable("the issuer could not be reached; try again shortly") from exc
    if body is None:
        raise IssuerUnavailable(f"the issuer answered HTTP {status} without JSON")
    if status == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
        return body
    if status == 429 or status >= 500:
        raise IssuerUnavailable(f"the issuer is busy or failing (HTTP {status}); try again shortly")
    description = body.get("error_description", "") if isinstance(body, dict) else ""
    message = f"the issuer refused: {str(description)[:200] or status}"
    if isinstance(body, dict) and body.get("error") == "invalid_grant":
        raise InvalidGrant(message)
    raise IssuerError(message)


def client_assertion(client_id: str, key: rsa.RSAPrivateKey, issuer: str, now: float | None = None) -> str:
    """Return a `private_key_jwt` client assertion (RFC 7523 section 3): good for a minute, accepted once.

    Its `aud` is `issuer`, the issuer identifier, as a single string: not the token endpoint
    URL, which the issuer refuses (draft-ietf-oauth-rfc7523bis; CVE-2025-27371).
    """
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": issuer,
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
    """Return the service's private key from `path` (0600), creating it on first use; KeyFileError if it is unusable."""
    key = load_or_create_pem_key(
        path, new_key_pem, lambda key: isinstance(key, rsa.RSAPrivateKey), "an unencrypted PEM RSA private key"
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_or_create_pem_key(
    path: Path, new_pem: Callable[[], bytes], fits: Callable[[object], bool], what: str
) -> PrivateKeyTypes:
    """Return the private key in `path` (0600), created with `new_pem` on first use; KeyFileError unless it `fits`.

    Several workers may start at once: the key is written to a private temporary file and
    linked into place, so a reader never sees half a key and only one key ever wins.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            _create_key_file(path, new_pem())
        pem = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read or created: {exc.strerror or exc}") from None
    if mode & 0o077:
        log.warning("the key file is open to other users; make it 0600", extra={"fields": {"path": str(path)}})
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None  # garbage, or an encrypted key: the message below says what is needed
    if key is None or not fits(key):
        raise KeyFileError(f"{path} does not hold {what}; fix or remove it") from None
    return key


def _create_key_file(path: Path, pem: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        with contextlib.suppress(FileExistsError):  # another worker's key won
            os.link(temporary, path)
    finally:
        temporary.unlink()


class _Fetch:
    """One fetch of a token, whose outcome every caller waiting for it shares."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.token: str | None = None
        self.failure: IssuerError | None = None


class ServiceTokens:
    """A service's own access tokens for one API, fetched with client credentials and kept until near expiry.

    A token is renewed once less than a third of its life (at most `renew_before` seconds)
    remains. One fetch at a time, outside the lock: while it runs, callers use the token in
    hand if it is still valid, and the others wait for the fetch (at most three times
    `timeout`) and share its outcome. When a fetch fails the token in hand is used until it
    expires, and the issuer is left alone for `retry_interval` seconds. `clock` schedules all
    this (monotonic by default); assertions carry wall-clock times, which the issuer checks.

    With a `dpop` key each request carries a DPoP proof whose `htu` is `{issuer}/token` (the
    public token endpoint the issuer checks, whichever `token_url` reaches it), and only a
    `token_type` DPoP answer is accepted: the tokens are bound to the key, and useless without it.
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
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        dpop: DPoPKey | None = None,
    ) -> None:
        self.client_id = client_id
        self.key = key
        self.token_url = token_url
        self.issuer = issuer  # the assertion's `aud`: the issuer identifier, whatever URL reaches it
        self.resource = resource
        self.scope = scope
        self.timeout = timeout
        self.renew_before = renew_before
        self.retry_interval = retry_interval
        self.clock = clock
        self.dpop = dpop  # with a key, tokens are DPoP-bound to it (RFC 9449), else bearer tokens
        self.session = tracing.session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._retry_at = 0.0
        self._forget_at = float("-inf")
        self._last_failure: IssuerError | None = None
        self._pending: _Fetch | None = None

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
            held = self._token if now < self._expires_at else None
            fetch = self._pending
            mine = fetch is None and now >= self._retry_at
            if mine:
                fetch = self._pending = _Fetch()
            elif held is not None:
                return held  # a renewal is under way, or failed moments ago: this one is still good
            elif fetch is None:
                raise _again(self._last_failure)  # the last fetch failed moments ago
        assert fetch is not None
        if mine:
            self._run(fetch, now)
        elif not fetch.done.wait(timeout=3 * self.timeout):
            # The fetch ends within its timeout (read_answer); this bound is a second line, so that
            # no waiter waits much longer than a fetch should take whatever happens to it.
            raise IssuerUnavailable("the issuer is too slow to answer; try again shortly")
        if fetch.token is not None:
            return fetch.token
        if held is not None:
            return held
        raise fetch.failure if mine and fetch.failure is not None else _again(fetch.failure)

    def forget(self, token: str) -> None:
        """Drop `token` if it is still the one in hand (the API refused it): the next call fetches a new one.

        At most once per `retry_interval`: an API that refuses every token would otherwise make
        each of its callers cost the issuer one more token request.
        """
        with self._lock:
            now = self.clock()
            if self._token == token and now >= self._forget_at:
                self._token = None
                self._forget_at = now + self.retry_interval

    def keep_fresh(self, sleep: Callable[[float], object] = time.sleep) -> threading.Thread:
        """Fetch a token now and renew it before it expires, in a daemon thread of this process.

        Each worker process holds its own token: fetched at its first call only, a worker that
        has served no call yet would have none when the issuer goes down. The thread survives
        anything; it waits `retry_interval` after a failure and costs the issuer one request
        per two thirds of a token's life.
        """

        def run() -> None:
            while True:
                try:
                    self.token()
                except IssuerError:
                    pass  # logged where it happened; the token in hand (if any) is still used
                except Exception:  # the outermost guard of a background loop: log, carry on
                    log.exception("service token keeper failed; retrying")
                with self._lock:
                    wait = self._renew_at - self.clock() if self._token is not None else self.retry_interval
                sleep(max(wait, 1.0))

        thread = threading.Thread(target=run, name="service-token-keeper", daemon=True)
        thread.start()
        return thread

    def _run(self, fetch: _Fetch, now: float) -> None:
        # A span of its own, or the keeper thread's lines would carry no trace id.
        with tracing.span("service token"):
            self._run_traced(fetch, now)

    def _run_traced(self, fetch: _Fetch, now: float) -> None:
        lifetime = 0
        try:
            fetch.token, lifetime = self._fetch()
            log.info("service token fetched", extra={"fields": {"client_id": self.client_id, "expires_in": lifetime}})
        except IssuerError as exc:
            fields = {"client_id": self.client_id, "reason": exc.description}
            log.warning("could not get a service token from the issuer", extra={"fields": fields})
            fetch.failure = exc
        finally:
            with self._lock:
                self._pending = None
                if fetch.token is None:
                    self._last_failure = fetch.failure
                    self._retry_at = self.clock() + self.retry_interval
                else:
                    self._token = fetch.token
                    self._expires_at = now + lifetime
                    self._renew_at = now + lifetime - min(self.renew_before, lifetime / 3)
            fetch.done.set()

    def _fetch(self) -> tuple[str, int]:
        for attempt in (1, 2):
            # A new assertion each time: the issuer spends one even on a request it refuses.
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(self.client_id, self.key, self.issuer),
                "resource": self.resource,
                "scope": self.scope,
            }
            proof_url = f"{self.issuer}/token"
            try:
                body = post_token(self.session, self.token_url, form, self.timeout, dpop=self.dpop, proof_url=proof_url)
                break
            except DPoPNonceAsked:
                if attempt == 2:
                    raise
        token, lifetime = body["access_token"], body.get("expires_in")
        if self.dpop is not None and str(body.get("token_type", "")).lower() != "dpop":
            raise IssuerUnavailable(
                "the issuer did not bind the service token to our DPoP key (token_type is not DPoP)"
            )
        if not TOKEN_SYNTAX.fullmatch(token):
            raise IssuerUnavailable("the issuer's access token is not a header-safe string of at most 8192 characters")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise IssuerUnavailable("the issuer's token answer has no valid expires_in")
        return token, min(lifetime, MAX_LIFETIME)


def _again(failure: IssuerError | None) -> IssuerError:
    """Return a fresh error like `failure` for another caller to raise (one exception object, one thread)."""
    if failure is None:  # the fetch died of a bug, which its own thread reports
        return IssuerUnavailable("the issuer could not be reached; try again shortly")
    return type(failure)(failure.description)
