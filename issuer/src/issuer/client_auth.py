"""Client authentication at the token endpoint (RFC 6749 2.3, RFC 7521 4.2, RFC 7523 2.2 and 3).

The request says which method the client uses, and the client must be registered with exactly
that one (RFC 6749 2.3: a client MUST NOT use more than one method in a request):

| the request carries                                   | method                |
| ----------------------------------------------------- | --------------------- |
| an `Authorization` header                             | `client_secret_basic` |
| `client_assertion_type` (jwt-bearer) and `client_assertion` | `private_key_jwt` |
| neither: only the `client_id` form parameter          | `none` (public)       |

Anything else (both, a `client_secret` form parameter, another `Authorization` scheme, half an
assertion) is refused. Every refusal is the same 401 `invalid_client` with one fixed description,
whatever was wrong (RFC 6749 5.2), plus a `Basic` challenge when the request used the
`Authorization` header; the reason goes to the log only.

The assertion policy of `private_key_jwt`:

| check            | rule                                                                 |
| ---------------- | -------------------------------------------------------------------- |
| size, encoding   | at most 8 KB, ASCII, three base64url segments, refused before parsing |
| JSON             | header and claims are objects, no duplicate members, no NaN (`strict_json`) |
| `alg`            | exactly RS256; `crit` refused; the key is chosen by `kid`, never by `alg` |
| key              | from the client's registered JWKS: the `kid`'s key, or the only key when no `kid`; within `issuer.client_keys`' bounds (e = 65537, 2048 to 4096 bits) |
| `iss`, `sub`     | both equal the client id                                             |
| `aud`            | one string, exactly the issuer identifier (see below)                |
| `exp`            | a number, not passed, at most 5 minutes ahead (and after `iat`)      |
| `iat`, `nbf`     | numbers when present, not in the future                              |
| `jti`            | a non-empty string of at most 255 characters, accepted once per client |

`aud`: RFC 7523 section 3 also allows the token endpoint URL, and a list. Both are refused:
an assertion a client made for another server whose token endpoint or list names ours would
otherwise be accepted here (the January 2025 private_key_jwt disclosure, CVE-2025-27371), so
`aud` is the issuer identifier as a single string, as draft-ietf-oauth-rfc7523bis requires.

The assertion is parsed by the verifier library's parser and checked by `issuer.jose`'s
`CLIENT_ASSERTION` rules (the issuer's one JWT reader), times on the injected clock with a
30-second leeway; choosing the key and remembering `jti` are this module's.

Logging: one line per refusal with its reason, and one audit line (`client.auth_failed` with a
stable `reason`, or `client.assertion_replayed`), never the secret or the assertion. A registered client is logged as `client_id`;
an id nobody registered is typed by whoever sent it, so it goes to `unknown_client_id` cut to
64 characters with everything but printable ASCII escaped.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import flask
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import jose
from issuer.client_keys import FetchUnderWay, RemoteKeys, check_client_key
from issuer.clients import Client, ClientAssertions, ClientStore
from issuer.jose import CLIENT_ASSERTION, JwtRefused
from issuer.opaque import secret_hash
from issuer.protocol import OAuthError
from jwt_verifier.errors import REALM, JwkError, Reason, UnknownKey, VerificationUnavailable
from jwt_verifier.jose import CompactJws, load_verification_key
from jwt_verifier.verifier import strict_json
from shared import audit

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DESCRIPTION = "client authentication failed"
BASIC_CHALLENGE = f'Basic realm="{REALM}"'
LEEWAY = jose.LEEWAY
MAX_ASSERTION_LIFETIME = jose.MAX_ASSERTION_LIFETIME
MAX_ASSERTION_BYTES = 8192
MAX_BASIC_CREDENTIALS = 2048  # base64 characters; ids are 64 characters, secrets a few dozen
MAX_LOGGED_ID = 64
# What an unknown client's secret is compared with, so that it costs what a known one does.
_DUMMY_HASH = secret_hash("no client is registered with this id")


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 5.2): a 401 that never says which part was wrong."""

    status = 401
    error = "invalid_client"

    def __init__(self) -> None:
        # RFC 9110 section 15.5.2: a 401 always carries a challenge, whichever method the client tried.
        super().__init__(DESCRIPTION, headers={"WWW-Authenticate": BASIC_CHALLENGE})


class _Refused(Exception):
    """Why authentication failed: `code` for the audit trail, `reason` for the log.

    `client` is set once the id names a registered client. `code` is one of shared.audit.CLIENT_AUTH_REASONS, or
    `replayed` (an event of its own).
    """

    def __init__(self, code: str, reason: str, client: Client | None = None, claimed_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.client = client
        self.claimed_id = claimed_id


def authenticate_client(
    request: flask.Request,
    params: dict[str, str],
    *,
    clients: ClientStore,
    assertions: ClientAssertions,
    issuer: str,
    token_endpoint: str,
    remote_keys: RemoteKeys | None = None,
    now: Callable[[], float] = time.time,
) -> Client:
    """Return the client the request authenticates as, or raise InvalidClient.

    Without `remote_keys`, clients registered by JWKS URL cannot authenticate.
    """
    try:
        endpoint = _Endpoint(clients, assertions, issuer, token_endpoint, remote_keys, now)
        return _authenticate(request, params, endpoint)
    except _Refused as exc:
        fields: dict[str, Any] = {"reason": exc.reason}
        if exc.client is not None:
            fields["client_id"] = exc.client.client_id
        elif exc.claimed_id is not None:
            fields["unknown_client_id"] = _escaped(exc.claimed_id)
        log.warning("client authentication failed", extra={"fields": fields})
        # Only a registered client is named: an id typed for nobody stays in the log, cut and escaped.
        registered = exc.client.client_id if exc.client is not None else None
        if exc.code == "replayed":
            audit.emit("client.assertion_replayed", client=registered)
        else:
            audit.emit("client.auth_failed", client=registered, reason=exc.code)
        raise InvalidClient() from exc


@dataclass(frozen=True)
class _Endpoint:
    """What authenticating a client at the token endpoint works with."""

    clients: ClientStore
    assertions: ClientAssertions
    issuer: str
    token_endpoint: str
    remote_keys: RemoteKeys | None
    now: Callable[[], float]


def _authenticate(request: flask.Request, params: dict[str, str], endpoint: _Endpoint) -> Client:
    headers = request.headers.getlist("Authorization")
    has_assertion = "client_assertion" in params or "client_assertion_type" in params
    if "client_secret" in params:
        raise _Refused("wrong_method", "client_secret in the form (client_secret_post) is not supported")
    if headers and has_assertion:
        raise _Refused("wrong_method", "more than one authentication method")
    if headers:
        return _basic(headers, params, endpoint.clients)
    if has_assertion:
        return _private_key_jwt(params, endpoint)
    return _public(params, endpoint.clients)


def _lookup(clients: ClientStore, client_id: str) -> Client | None:
    """Return the registered client, asking the database only about ids that could be registered."""
    # Registered ids are printable ASCII (check_client); anything else, a lone surrogate from
    # JSON for one, would only make the database driver fail.
    if not client_id.isascii() or not client_id.isprintable() or len(client_id) > 64:
        return None
    return clients.get(client_id)


def _expect_method(client: Client | None, claimed_id: str, method: str) -> Client:
    if client is None:
        raise _Refused("unknown_client", "unknown client", claimed_id=claimed_id)
    if client.auth_method != method:
        raise _Refused("wrong_method", f"the client is registered for {client.auth_method}, not {method}", client)
    return client


def _same_id(params: dict[str, str], client: Client) -> None:
    """Refuse a `client_id` parameter that names another client than the credentials do."""
    given = params.get("client_id")
    if given is not None and given != client.client_id:
        raise _Refused("wrong_method", "the client_id parameter names another client", client)


# -- none: public clients ------------------------------------------------------------------


def _public(params: dict[str, str], clients: ClientStore) -> Client:
    client_id = params.get("client_id", "")
    if not client_id:
        raise _Refused("no_credentials", "no client credentials and no client_id")
    return _expect_method(_lookup(clients, client_id), client_id, "none")


# -- client_secret_basic (RFC 6749 2.3.1) ----------------------------------------------------


def _basic(headers: list[str], params: dict[str, str], clients: ClientStore) -> Client:
    client_id, secret = _basic_credentials(headers)
    client = _lookup(clients, client_id)
    stored = client.secret_hash if client is not None and client.secret_hash else _DUMMY_HASH
    # Hash and compare even for an unknown client or another method: the answer takes as long.
    matches = hmac.compare_digest(secret_hash(secret), stored)
    client = _expect_method(client, client_id, "client_secret_basic")
    if not matches:
        raise _Refused("wrong_secret", "wrong client secret", client)
    _same_id(params, client)
    return client


def basic_credentials(request: flask.Request) -> tuple[str, str] | None:
    """Return (client id, secret) from a well-formed HTTP Basic header (RFC 6749 2.3.1), or None."""
    try:
        return _basic_credentials(request.headers.getlist("Authorization"))
    except _Refused:
        return None


def _basic_credentials(headers: list[str]) -> tuple[str, str]:
    """Return (client id, secret) from the one Basic header: form-urlencoded, then base64."""
    if len(headers) != 1:
        raise _Refused("malformed", "more than one Authorization header")
    scheme, _, encoded = headers[0].strip().partition(" ")
    if scheme.lower() != "basic":
        raise _Refused("malformed", "the Authorization scheme is not Basic")
    encoded = encoded.strip()
    if len(encoded) > MAX_BASIC_CREDENTIALS:
        raise _Refused("malformed", "the Basic credentials are too long")
    try:
        decoded = base64.b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
    except (UnicodeError, binascii.Error) as exc:
        raise _Refused("malformed", "the Basic credentials are not base64 of ASCII") from exc
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise _Refused("malformed", "the Basic credentials have no colon")
    try:
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except UnicodeDecodeError as exc:
        raise _Refused("malformed", "the Basic credentials are not form-urlencoded UTF-8") from exc
    if not client_id or not secret:
        raise _Refused("malformed", "the Basic credentials lack the client id or the secret")
    return client_id, secret


# -- private_key_jwt (RFC 7523) --------------------------------------------------------------


def _private_key_jwt(params: dict[str, str], endpoint: _Endpoint) -> Client:
    if params.get("client_assertion_type") != ASSERTION_TYPE:
        raise _Refused("malformed", "client_assertion_type is missing or not jwt-bearer")
    assertion = params.get("client_assertion", "")
    if not assertion:
        raise _Refused("malformed", "client_assertion is missing")
    jws = _parse(assertion)
    header, unverified = jws.header, jws.claims
    claimed_id = unverified.get("sub")
    if not isinstance(claimed_id, str) or not claimed_id:
        raise _Refused("malformed", "the assertion has no sub")
    client = _expect_method(_lookup(endpoint.clients, claimed_id), claimed_id, "private_key_jwt")
    _same_id(params, client)
    key = _key(client, header, endpoint.remote_keys)
    try:
        claims = jose.verify(
            jws,
            CLIENT_ASSERTION,
            key,
            issuer=client.client_id,  # the client signs for itself (RFC 7523 section 3)
            audience=endpoint.issuer,
            subject=client.client_id,
            now=endpoint.now(),
            leeway=LEEWAY,
        )
    except JwtRefused as exc:
        if exc.reason is Reason.WRONG_AUDIENCE:
            raise _Refused("bad_assertion", _audience_refusal(unverified.get("aud"), endpoint), client) from exc
        raise _Refused("bad_assertion", f"assertion refused: {exc}", client) from exc
    expires_at = int(claims["exp"])
    jti = claims["jti"]
    # Remembered until the assertion can no longer be accepted: its exp plus the leeway.
    if not endpoint.assertions.accept_once(client.client_id, jti, expires_at + LEEWAY):
        raise _Refused("replayed", "assertion replayed (jti already used)", client)
    return client


def _audience_refusal(aud: object, endpoint: _Endpoint) -> str:
    """Say why `aud` is refused, naming the common mistakes (only the issuer identifier is accepted)."""
    if isinstance(aud, list):
        return "the assertion's aud is a list; it must be the issuer identifier alone"
    if aud == endpoint.token_endpoint:
        return "the assertion's aud is the token endpoint; it must be the issuer identifier"
    return "the assertion's aud is not the issuer identifier"


def _parse(assertion: str) -> CompactJws:
    """Return the assertion decoded strictly (`issuer.jose`), its header checked; nothing in it is trusted yet."""
    try:
        return jose.parse(assertion, CLIENT_ASSERTION, max_bytes=MAX_ASSERTION_BYTES)
    except JwtRefused as exc:
        raise _Refused("malformed", str(exc)) from exc


def _key(client: Client, header: dict[str, Any], remote_keys: RemoteKeys | None) -> rsa.RSAPublicKey:
    """Return the registered public key the assertion names by `kid` (or the only one)."""
    if client.jwks is None:
        if client.jwks_uri and remote_keys is not None:
            return _remote_key(client, client.jwks_uri, header, remote_keys)
        raise _Refused("no_key", "the client has no registered JWKS", client)
    try:
        jwks = strict_json(client.jwks.encode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _Refused("no_key", "the client's registered JWKS is not JSON", client) from exc
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(entries, list):
        raise _Refused("no_key", "the client's registered JWKS has no keys list", client)
    keys: dict[str, rsa.RSAPublicKey] = {}
    for entry in entries:
        try:
            kid, key = load_verification_key(entry)
        except JwkError:
            continue  # an encryption key or another kind: not one an assertion can name
        keys[kid] = key
    named = header.get("kid")
    if named is None:
        if len(keys) != 1:
            raise _Refused("no_key", "the assertion has no kid and the JWKS has not exactly one key", client)
        return _bounded(next(iter(keys.values())), client)
    if not isinstance(named, str) or named not in keys:
        raise _Refused("no_key", "the assertion's kid is not in the client's JWKS", client)
    return _bounded(keys[named], client)


def _bounded(key: rsa.RSAPublicKey, client: Client) -> rsa.RSAPublicKey:
    """Return `key` if checking a signature with it costs what it should (issuer.client_keys)."""
    try:
        check_client_key(key)
    except JwkError as exc:
        raise _Refused("key_refused", f"the client's key is refused: {exc}", client) from exc
    return key


def _remote_key(client: Client, uri: str, header: dict[str, Any], remote_keys: RemoteKeys) -> rsa.RSAPublicKey:
    """Return the key the assertion names from the client's JWKS URL (a kid is required there)."""
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _Refused("no_key", "an assertion from a JWKS URL client must name its key (kid)", client)
    try:
        return _bounded(remote_keys.get(uri, kid), client)
    except UnknownKey as exc:
        raise _Refused("no_key", "the assertion's kid is not in the client's JWKS", client) from exc
    except FetchUnderWay as exc:
        raise _Refused(
            "keys_unavailable", "another request's fetch of the client's JWKS URL took too long", client
        ) from exc
    except VerificationUnavailable as exc:
        raise _Refused("keys_unavailable", "the client's JWKS URL could not be fetched", client) from exc


def _escaped(client_id: str) -> str:
    """Return a typed-in client id fit for a log line: cut short, printable ASCII only."""
    return client_id[:MAX_LOGGED_ID].encode("unicode_escape").decode("ascii")
