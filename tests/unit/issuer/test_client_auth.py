"""Unit tests for issuer.client_auth: none, client_secret_basic and private_key_jwt at the token endpoint."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote_plus

import flask
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from issuer import client_auth
from issuer.client_auth import (
    ASSERTION_TYPE,
    BASIC_CHALLENGE,
    DESCRIPTION,
    LEEWAY,
    MAX_ASSERTION_BYTES,
    MAX_ASSERTION_LIFETIME,
    InvalidClient,
    authenticate_client,
)
from issuer.client_keys import RemoteKeys
from issuer.clients import Client, ClientAssertions, ClientStore
from issuer.db import Database
from jwt_verifier.jose import b64url_encode, public_jwk
from tests.support.fakes import FakeClock, JwksServer
from tests.support.tokens import (
    assertion_claims,
    compact,
    forge_hs256,
    jwks_json,
    kid_of,
    new_rsa_key,
    public_pem,
    rsa_key_with_exponent,
    sign,
    sign_raw,
)

ISSUER = "http://issuer.test"
TOKEN_ENDPOINT = "http://issuer.test/token"
SECRET = "a-long-random-client-secret-0123456789abcdef"
JWT_CLIENT = "svc-jwt"
OTHER_JWT_CLIENT = "svc-jwt-2"
SECRET_CLIENT = "svc-secret"
PUBLIC_CLIENT = "public-app"
URI_CLIENT = "svc-uri"
CC = frozenset({"client_credentials"})

APP = flask.Flask(__name__)


class TokenEndpoint:
    """Call `authenticate_client` the way the token endpoint does, inside a real Flask request."""

    def __init__(self, clients: ClientStore, assertions: ClientAssertions, now: Callable[[], float]) -> None:
        self.clients = clients
        self.assertions = assertions
        self.now = now
        self.remote_keys: RemoteKeys | None = None

    def authenticate(
        self, params: dict[str, str] | None = None, headers: list[tuple[str, str]] | None = None
    ) -> Client:
        """Return the authenticated client."""
        form = params or {}
        # The form is given as the token endpoint parsed it; only the headers come from the request.
        with APP.test_request_context("/token", method="POST", headers=headers or []):
            return authenticate_client(
                flask.request,
                form,
                clients=self.clients,
                assertions=self.assertions,
                issuer=ISSUER,
                token_endpoint=TOKEN_ENDPOINT,
                remote_keys=self.remote_keys,
                now=self.now,
            )

    def refuse(
        self, params: dict[str, str] | None = None, headers: list[tuple[str, str]] | None = None
    ) -> flask.Response:
        """Assert the request is refused with the one invalid_client answer; return the rendered response."""
        with pytest.raises(InvalidClient) as caught:
            self.authenticate(params, headers)
        with APP.test_request_context():
            response = caught.value.to_response()
        assert response.status_code == 401
        assert response.get_json() == {"error": "invalid_client", "error_description": DESCRIPTION}
        return response

    def assertion(self, token: str, **extra: str) -> dict[str, str]:
        """Return the form parameters of a private_key_jwt request."""
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": token, **extra}


def basic(client_id: str, secret: str) -> list[tuple[str, str]]:
    """Return the Authorization header of RFC 6749 2.3.1: form-urlencode, join with ':', base64."""
    return [("Authorization", "Basic " + b64(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()))]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def signed(key: rsa.RSAPrivateKey, client_id: str = JWT_CLIENT, *, kid: str | None = None, **claims: Any) -> str:
    """Return a client assertion signed with RS256 (no `typ`, as client libraries send it)."""
    return sign(assertion_claims(client_id, ISSUER, **claims), key, kid=kid, typ=None)


@pytest.fixture
def clients(database: Database, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> ClientStore:
    """A store with one client of each method, and a second private_key_jwt client."""
    store = ClientStore(database)
    store.add(Client(JWT_CLIENT, CC, auth_method="private_key_jwt", jwks=jwks_json(rsa_key)))
    store.add(Client(OTHER_JWT_CLIENT, CC, auth_method="private_key_jwt", jwks=jwks_json(other_rsa_key)))
    store.add(Client(SECRET_CLIENT, CC), secret=SECRET)
    store.add(Client(PUBLIC_CLIENT, frozenset({"password"})))
    return store


@pytest.fixture
def assertions(database: Database) -> ClientAssertions:
    """The assertion replay store on the same database."""
    return ClientAssertions(database)


@pytest.fixture
def wall_clock() -> FakeClock:
    """A hand-moved clock starting at the real time (the replay store purges on the real time)."""
    return FakeClock(time.time())


@pytest.fixture
def endpoint(clients: ClientStore, assertions: ClientAssertions, wall_clock: FakeClock) -> TokenEndpoint:
    """The token endpoint's view of client authentication, on the hand-moved clock."""
    return TokenEndpoint(clients, assertions, wall_clock)


def _failure_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {"msg": r.getMessage(), **getattr(r, "fields", {})} for r in caplog.records if r.name == "issuer.client_auth"
    ]


# -- none: public clients ----------------------------------------------------------------


def test_public_client_authenticates_with_its_client_id(endpoint: TokenEndpoint) -> None:
    assert endpoint.authenticate({"client_id": PUBLIC_CLIENT}).client_id == PUBLIC_CLIENT


def test_request_without_credentials_or_client_id_is_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({"grant_type": "client_credentials"})


def test_unknown_public_client_is_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({"client_id": "nobody"})


@pytest.mark.parametrize("client_id", [SECRET_CLIENT, JWT_CLIENT])
def test_confidential_client_without_credentials_is_refused(endpoint: TokenEndpoint, client_id: str) -> None:
    endpoint.refuse({"client_id": client_id})


@pytest.mark.parametrize("client_id", ["a" * 65, "bad\x00id", "caf\u00e9", "\ud800", "has space"])
def test_ids_no_client_could_have_are_refused_without_error(endpoint: TokenEndpoint, client_id: str) -> None:
    endpoint.refuse({"client_id": client_id})


# -- client_secret_basic -----------------------------------------------------------------


def test_basic_client_authenticates_with_its_secret(endpoint: TokenEndpoint) -> None:
    client = endpoint.authenticate({"grant_type": "client_credentials"}, basic(SECRET_CLIENT, SECRET))
    assert client.client_id == SECRET_CLIENT
    assert client.auth_method == "client_secret_basic"


def test_basic_with_matching_client_id_parameter_is_accepted(endpoint: TokenEndpoint) -> None:
    assert endpoint.authenticate({"client_id": SECRET_CLIENT}, basic(SECRET_CLIENT, SECRET)).client_id == SECRET_CLIENT


def test_basic_with_another_client_id_parameter_is_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({"client_id": PUBLIC_CLIENT}, basic(SECRET_CLIENT, SECRET))


def test_wrong_secret_is_refused_with_a_basic_challenge(endpoint: TokenEndpoint) -> None:
    response = endpoint.refuse({}, basic(SECRET_CLIENT, SECRET + "x"))
    assert response.headers["WWW-Authenticate"] == 'Basic realm="jwt-split"'


def test_secret_is_case_sensitive_and_not_a_prefix(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({}, basic(SECRET_CLIENT, SECRET.upper()))
    endpoint.refuse({}, basic(SECRET_CLIENT, SECRET[:-1]))


def test_unknown_client_with_basic_is_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({}, basic("nobody", SECRET))


def test_unknown_client_secret_is_still_hashed_and_compared(
    endpoint: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def recording(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    endpoint.refuse({}, basic("nobody", SECRET))
    endpoint.refuse({}, basic(PUBLIC_CLIENT, SECRET))
    endpoint.refuse({}, basic(SECRET_CLIENT, "wrong"))
    # One constant-time comparison of two SHA-256 hex digests each time, known client or not.
    assert len(compared) == 3
    assert all(len(a) == len(b) == 64 for a, b in compared)


def test_public_client_presenting_a_secret_is_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({}, basic(PUBLIC_CLIENT, SECRET))


def test_private_key_jwt_client_presenting_a_secret_is_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({}, basic(JWT_CLIENT, SECRET))


def test_percent_encoded_id_and_secret_are_decoded(endpoint: TokenEndpoint, clients: ClientStore) -> None:
    client_id = "team:svc+1%"
    secret = "pa ss:wo+rd%41 caf\u00e9 and enough characters to pass"
    clients.add(Client(client_id, CC), secret=secret)
    encoded = b64(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode())
    assert ":" not in quote_plus(client_id)  # the id's colon travels as %3A
    assert endpoint.authenticate({}, [("Authorization", f"Basic {encoded}")]).client_id == client_id
    # Not form-urlencoded: the '+' would be read as a space, the id as another client.
    raw = b64(f"{client_id}:{secret}".encode())
    endpoint.refuse({}, [("Authorization", f"Basic {raw}")])


def test_scheme_name_is_case_insensitive(endpoint: TokenEndpoint) -> None:
    value = basic(SECRET_CLIENT, SECRET)[0][1].replace("Basic", "bAsIc")
    assert endpoint.authenticate({}, [("Authorization", value)]).client_id == SECRET_CLIENT


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Basic !!!not-base64!!!", id="not-base64"),
        pytest.param("Basic " + b64(b"svc-secret:x")[:-2], id="truncated-base64"),
        pytest.param("Basic " + b64(SECRET_CLIENT.encode() + SECRET.encode()), id="no-colon"),
        pytest.param("Basic " + b64(b"svc-secret:\xff\xfe-not-utf8"), id="non-ascii-bytes"),
        pytest.param("Basic " + b64(b"svc-secret:%FF%FE%FD"), id="percent-encoded-non-utf8"),
        pytest.param("Basic " + b64(f":{SECRET}".encode()), id="empty-id"),
        pytest.param("Basic " + b64(b"svc-secret:"), id="empty-secret"),
        pytest.param("Basic ", id="empty"),
        pytest.param("Basic", id="scheme-only"),
        pytest.param("", id="blank"),
        pytest.param("Basic caf\u00e9", id="latin-1-header"),
        pytest.param("Basic " + "A" * 4000, id="oversized"),
        pytest.param("Bearer " + b64(f"{SECRET_CLIENT}:{SECRET}".encode()), id="other-scheme"),
        pytest.param("Digest username=svc-secret", id="digest"),
    ],
)
def test_bad_basic_header_is_refused_with_a_challenge(endpoint: TokenEndpoint, value: str) -> None:
    response = endpoint.refuse({}, [("Authorization", value)])
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE


def test_two_authorization_headers_are_refused(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({}, basic(SECRET_CLIENT, SECRET) + basic(SECRET_CLIENT, SECRET))


def test_client_secret_in_the_form_is_refused(endpoint: TokenEndpoint) -> None:
    response = endpoint.refuse({"client_id": SECRET_CLIENT, "client_secret": SECRET})
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE  # RFC 9110 section 15.5.2: every 401 has one


def test_client_secret_in_the_form_is_refused_even_for_a_public_client(endpoint: TokenEndpoint) -> None:
    endpoint.refuse({"client_id": PUBLIC_CLIENT, "client_secret": "anything"})


def test_two_methods_in_one_request_are_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    response = endpoint.refuse(endpoint.assertion(signed(rsa_key)), basic(SECRET_CLIENT, SECRET))
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE


# -- private_key_jwt ---------------------------------------------------------------------


def test_private_key_jwt_client_authenticates_with_an_assertion(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = endpoint.authenticate(endpoint.assertion(signed(rsa_key)))
    assert client.client_id == JWT_CLIENT
    assert client.auth_method == "private_key_jwt"


def test_assertion_with_matching_client_id_parameter_is_accepted(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key), client_id=JWT_CLIENT)).client_id == JWT_CLIENT


def test_assertion_with_another_client_id_parameter_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key), client_id=OTHER_JWT_CLIENT))


def test_assertion_audience_is_the_issuer_identifier(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, aud=ISSUER))).client_id == JWT_CLIENT


@pytest.mark.parametrize(
    "aud",
    [
        TOKEN_ENDPOINT,  # RFC 7523 allows it; an assertion made for one server's endpoint must not work at another
        [ISSUER],
        [ISSUER, "https://elsewhere.test"],
        ["https://elsewhere.test", TOKEN_ENDPOINT],
        "https://elsewhere.test/token",
        ISSUER + "/",
        TOKEN_ENDPOINT + "/",
        [],
        ["https://elsewhere.test"],
        7,
    ],
    ids=str,
)
def test_assertion_for_another_audience_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, aud: object
) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, aud=aud)))


def test_assertion_for_the_token_endpoint_is_logged_with_what_aud_must_be(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.refuse(endpoint.assertion(signed(rsa_key, aud=TOKEN_ENDPOINT)))
        endpoint.refuse(endpoint.assertion(signed(rsa_key, aud=[ISSUER])))
    assert [entry["reason"] for entry in _failure_logs(caplog)] == [
        "the assertion's aud is the token endpoint; it must be the issuer identifier",
        "the assertion's aud is a list; it must be the issuer identifier alone",
    ]


# Each costs far more to verify with than an RSA-2048 key with e = 65537 (a 1000-bit exponent about 50 times).
COSTLY_KEYS = {
    "exponent of 1000 bits": (2**1000 + 1, 2048, "exponent"),
    "exponent 3": (3, 2048, "exponent"),
    "modulus of 4160 bits": (65537, 4160, "modulus"),
}


@pytest.mark.parametrize("kind", list(COSTLY_KEYS))
def test_registered_key_costlier_than_the_bounds_is_refused(
    endpoint: TokenEndpoint, clients: ClientStore, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    exponent, bits, named = COSTLY_KEYS[kind]
    key = rsa_key_with_exponent(exponent, bits)
    clients.add(Client("svc-costly", CC, auth_method="private_key_jwt", jwks=jwks_json(key)))
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.refuse(endpoint.assertion(signed(key, "svc-costly", kid=kid_of(key))))
    (entry,) = _failure_logs(caplog)
    assert named in entry["reason"]


@pytest.mark.parametrize("kind", list(COSTLY_KEYS))
def test_key_from_a_jwks_uri_costlier_than_the_bounds_is_refused(
    endpoint: TokenEndpoint,
    clients: ClientStore,
    jwks_server: JwksServer,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exponent, bits, named = COSTLY_KEYS[kind]
    key = rsa_key_with_exponent(exponent, bits)
    jwks_server.serve_keys(key)
    clients.add(Client(URI_CLIENT, CC, auth_method="private_key_jwt", jwks_uri=jwks_server.url))
    endpoint.remote_keys = RemoteKeys(ISSUER)
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.refuse(endpoint.assertion(signed(key, URI_CLIENT, kid=kid_of(key))))
    (entry,) = _failure_logs(caplog)
    assert named in entry["reason"]


def test_assertion_without_kid_uses_the_only_registered_key(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(assertion_claims(JWT_CLIENT, ISSUER), rsa_key, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert endpoint.authenticate(endpoint.assertion(token)).client_id == JWT_CLIENT


def test_assertion_without_kid_is_refused_when_several_keys_are_registered(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    clients.add(Client("svc-two-keys", CC, auth_method="private_key_jwt", jwks=jwks_json(rsa_key, other_rsa_key)))
    token = jwt.encode(assertion_claims("svc-two-keys", ISSUER), rsa_key, algorithm="RS256")
    endpoint.refuse(endpoint.assertion(token))
    # Naming the key by its kid works.
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, "svc-two-keys"))).client_id == "svc-two-keys"
    assert endpoint.authenticate(endpoint.assertion(signed(other_rsa_key, "svc-two-keys"))).client_id == "svc-two-keys"


def test_registered_keys_an_assertion_cannot_use_are_skipped(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey
) -> None:
    encryption_key = {**public_jwk(rsa_key.public_key()), "use": "enc", "kid": "enc-1"}
    jwks = json.dumps({"keys": [encryption_key, {"kty": "EC"}, public_jwk(rsa_key.public_key())]})
    clients.add(Client("svc-mixed", CC, auth_method="private_key_jwt", jwks=jwks))
    token = jwt.encode(assertion_claims("svc-mixed", ISSUER), rsa_key, algorithm="RS256")
    assert endpoint.authenticate(endpoint.assertion(token)).client_id == "svc-mixed"
    endpoint.refuse(endpoint.assertion(signed(rsa_key, "svc-mixed", kid="enc-1")))


@pytest.mark.parametrize("jwks", ["not json", '{"keys": {}}', "[]", '{"keys": [{"kty": "RSA"}]}'])
def test_unusable_registered_jwks_is_refused_without_error(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey, jwks: str
) -> None:
    clients.add(Client("svc-broken", CC, auth_method="private_key_jwt", jwks=jwks))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, "svc-broken")))


@pytest.mark.parametrize("kid", ["not-registered", ""])
def test_assertion_naming_an_unregistered_kid_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, kid: str
) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, kid=kid)))


def test_assertion_signed_by_another_key_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # The attacker names the registered key but signs with their own.
    endpoint.refuse(endpoint.assertion(signed(other_rsa_key, kid=kid_of(rsa_key))))
    # Or signs with another client's registered key.
    endpoint.refuse(endpoint.assertion(signed(other_rsa_key)))


def test_assertion_with_alg_none_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = assertion_claims(JWT_CLIENT, ISSUER)
    endpoint.refuse(endpoint.assertion(compact({"alg": "none", "kid": kid_of(rsa_key)}, claims)))
    endpoint.refuse(endpoint.assertion(compact({"alg": "none"}, claims)))


def test_assertion_hs256_signed_with_the_public_key_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    claims = assertion_claims(JWT_CLIENT, ISSUER)
    endpoint.refuse(endpoint.assertion(forge_hs256(claims, public_pem(rsa_key), kid_of(rsa_key))))
    jwk_text = json.dumps(public_jwk(rsa_key.public_key())).encode()
    endpoint.refuse(endpoint.assertion(forge_hs256(claims, jwk_text, kid_of(rsa_key))))


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
def test_assertion_with_another_rsa_algorithm_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, alg: str
) -> None:
    claims = assertion_claims(JWT_CLIENT, ISSUER)
    token = jwt.encode(claims, rsa_key, algorithm=alg, headers={"kid": kid_of(rsa_key)})
    endpoint.refuse(endpoint.assertion(token))


def test_assertion_with_crit_header_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    header = json.dumps({"alg": "RS256", "kid": kid_of(rsa_key), "crit": ["exp-ext"], "exp-ext": 1}).encode()
    payload = json.dumps(assertion_claims(JWT_CLIENT, ISSUER)).encode()
    endpoint.refuse(endpoint.assertion(sign_raw(header, payload, rsa_key)))


def test_replayed_assertion_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    token = signed(rsa_key)
    endpoint.authenticate(endpoint.assertion(token))
    endpoint.refuse(endpoint.assertion(token))
    # A new assertion with the same jti is a replay too.
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    endpoint.refuse(endpoint.assertion(signed(rsa_key, jti=jti)))


def test_same_jti_from_another_client_is_accepted(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint.authenticate(endpoint.assertion(signed(rsa_key, jti="shared-jti")))
    client = endpoint.authenticate(endpoint.assertion(signed(other_rsa_key, OTHER_JWT_CLIENT, jti="shared-jti")))
    assert client.client_id == OTHER_JWT_CLIENT


def test_refused_assertion_does_not_use_up_its_jti(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint.refuse(endpoint.assertion(signed(other_rsa_key, kid=kid_of(rsa_key), jti="jti-1")))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, jti="jti-1"), client_id=OTHER_JWT_CLIENT))
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, jti="jti-1"))).client_id == JWT_CLIENT


def test_assertion_accepted_within_the_leeway_stays_remembered_until_the_leeway_ends(
    clients: ClientStore, assertions: ClientAssertions, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # Real time: the replay store forgets entries whose expiry is before its own clock.
    endpoint = TokenEndpoint(clients, assertions, time.time)
    now = int(time.time())
    token = signed(rsa_key, now=now - 60, exp=now - 5)
    endpoint.authenticate(endpoint.assertion(token))
    # Any later acceptance sweeps expired entries; this one must survive the sweep.
    endpoint.authenticate(endpoint.assertion(signed(other_rsa_key, OTHER_JWT_CLIENT)))
    endpoint.refuse(endpoint.assertion(token))


def test_expired_assertion_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(endpoint.now())
    endpoint.refuse(endpoint.assertion(signed(rsa_key, now=now - 120, exp=now - LEEWAY)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, now=now - 3600, exp=now - 3000)))
    # Within the leeway a late assertion still counts.
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, now=now - 120, exp=now - LEEWAY + 1)))


def test_assertion_expires_on_the_injected_clock(
    endpoint: TokenEndpoint, wall_clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = signed(rsa_key, now=wall_clock.now)
    wall_clock.advance(60 + LEEWAY)
    endpoint.refuse(endpoint.assertion(token))


def test_long_lived_assertion_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(endpoint.now())
    endpoint.refuse(endpoint.assertion(signed(rsa_key, now=now, exp=now + 3600)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, now=now, exp=now + MAX_ASSERTION_LIFETIME + 1)))
    # Without iat, exp alone may be at most the lifetime (plus the leeway) ahead.
    endpoint.refuse(endpoint.assertion(signed(rsa_key, iat=None, exp=now + MAX_ASSERTION_LIFETIME + LEEWAY + 1)))
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, now=now, exp=now + MAX_ASSERTION_LIFETIME)))
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, iat=None, exp=now + MAX_ASSERTION_LIFETIME)))


def test_assertion_from_the_future_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(endpoint.now())
    endpoint.refuse(endpoint.assertion(signed(rsa_key, now=now + LEEWAY + 1)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, nbf=now + LEEWAY + 1)))
    # A client clock a little ahead is fine.
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, now=now + LEEWAY - 1, nbf=now + LEEWAY - 1)))


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["1700000000", True, -1, 2**60, [1], {}], ids=repr)
def test_assertion_time_claims_must_be_numbers(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, name: str, value: object
) -> None:
    claims: dict[str, Any] = {name: value}
    endpoint.refuse(endpoint.assertion(signed(rsa_key, **claims)))


def test_assertion_without_exp_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, exp=None)))


def test_assertion_with_iss_other_than_sub_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, iss=OTHER_JWT_CLIENT)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, iss=ISSUER)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, iss=None)))


def test_assertion_for_another_client_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # Signed by svc-jwt's key, claiming to be svc-jwt-2 (iss and sub both).
    endpoint.refuse(endpoint.assertion(signed(rsa_key, OTHER_JWT_CLIENT, kid=kid_of(other_rsa_key))))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, OTHER_JWT_CLIENT)))


@pytest.mark.parametrize("sub", [None, "", 7, [JWT_CLIENT], "nobody"], ids=repr)
def test_assertion_without_a_registered_sub_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, sub: object
) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, sub=sub)))


@pytest.mark.parametrize("jti", [None, "", 7, ["a"], "j" * 256], ids=lambda v: repr(v)[:12])
def test_assertion_without_a_usable_jti_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, jti: object
) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, jti=jti)))


def test_jti_of_255_characters_is_accepted(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, jti="j" * 255))).client_id == JWT_CLIENT


def test_secret_or_public_client_presenting_an_assertion_is_refused(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    endpoint.refuse(endpoint.assertion(signed(rsa_key, SECRET_CLIENT)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, PUBLIC_CLIENT)))


@pytest.mark.parametrize(
    "params",
    [
        {"client_assertion": "x.y.z"},
        {"client_assertion_type": ASSERTION_TYPE},
        {"client_assertion_type": ASSERTION_TYPE, "client_assertion": ""},
        {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"},
    ],
)
def test_incomplete_assertion_parameters_are_refused(endpoint: TokenEndpoint, params: dict[str, str]) -> None:
    response = endpoint.refuse({**params, "client_id": JWT_CLIENT})
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE


def test_assertion_with_the_wrong_type_is_refused(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    params = endpoint.assertion(signed(rsa_key))
    params["client_assertion_type"] = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    endpoint.refuse(params)


def _segment(value: object) -> str:
    return b64url_encode(json.dumps(value).encode())


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("onlyone", id="one-segment"),
        pytest.param("a.b", id="two-segments"),
        pytest.param("a.b.c.d", id="four-segments"),
        pytest.param("a.b.c.d.e", id="five-segments-jwe"),
        pytest.param("!!.??.**", id="not-base64url"),
        pytest.param(_segment({"alg": "RS256"}) + "=." + _segment({"sub": JWT_CLIENT}) + ".", id="padded"),
        pytest.param(_segment(["alg"]) + "." + _segment({"sub": JWT_CLIENT}) + ".", id="header-not-object"),
        pytest.param(_segment({"alg": "RS256"}) + "." + _segment("claims") + ".", id="claims-not-object"),
        pytest.param(b64url_encode(b"\xff") + ".e30.", id="header-not-utf8"),
        pytest.param(b64url_encode(b"[" * 5000) + ".e30.", id="deeply-nested"),
        pytest.param("\u00e9yJ.eyJ.sig", id="non-ascii"),
        pytest.param("\ud800.e30.", id="lone-surrogate"),
    ],
)
def test_malformed_assertion_is_refused(endpoint: TokenEndpoint, token: str) -> None:
    endpoint.refuse(endpoint.assertion(token))


def test_oversized_assertion_is_refused_before_parsing(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = signed(rsa_key, padding="p" * MAX_ASSERTION_BYTES)
    parsed: list[bytes] = []
    monkeypatch.setattr(client_auth, "strict_json", lambda data: parsed.append(data))
    endpoint.refuse(endpoint.assertion(token))
    assert parsed == []


def test_assertion_just_under_the_size_limit_is_accepted(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    token = signed(rsa_key, padding="")
    token = signed(rsa_key, padding="p" * ((MAX_ASSERTION_BYTES - len(token)) * 3 // 4 - 8))
    assert len(token) <= MAX_ASSERTION_BYTES
    assert endpoint.authenticate(endpoint.assertion(token)).client_id == JWT_CLIENT


def test_assertion_with_duplicate_claims_is_refused_even_when_signed(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    header = json.dumps({"alg": "RS256", "kid": kid_of(rsa_key)}).encode()
    claims = json.dumps(assertion_claims(OTHER_JWT_CLIENT, ISSUER))[:-1]
    # Parsers disagree on which 'sub' wins: the key lookup and PyJWT must never see different ones.
    payload = f'{claims}, "sub": "{JWT_CLIENT}", "iss": "{JWT_CLIENT}"}}'.encode()
    endpoint.refuse(endpoint.assertion(sign_raw(header, payload, rsa_key)))
    duplicate_header = b'{"alg": "RS256", "kid": "x", "kid": "' + kid_of(rsa_key).encode() + b'"}'
    good_payload = json.dumps(assertion_claims(JWT_CLIENT, ISSUER)).encode()
    endpoint.refuse(endpoint.assertion(sign_raw(duplicate_header, good_payload, rsa_key)))
    # The same assertion without duplicates is fine: the refusals above were for the duplicates.
    assert endpoint.authenticate(endpoint.assertion(sign_raw(header, good_payload, rsa_key)))


def test_assertion_with_nan_is_refused_even_when_signed(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    header = json.dumps({"alg": "RS256", "kid": kid_of(rsa_key)}).encode()
    claims = json.dumps(assertion_claims(JWT_CLIENT, ISSUER))[:-1]
    endpoint.refuse(endpoint.assertion(sign_raw(header, f'{claims}, "nbf": NaN}}'.encode(), rsa_key)))
    endpoint.refuse(endpoint.assertion(sign_raw(header, f'{claims}, "nbf": 1e999}}'.encode(), rsa_key)))


def test_assertion_with_lone_surrogate_sub_is_refused_without_asking_the_database(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    header = json.dumps({"alg": "RS256", "kid": kid_of(rsa_key)}).encode()
    claims = json.dumps(assertion_claims(JWT_CLIENT, ISSUER))[:-1]
    endpoint.refuse(endpoint.assertion(sign_raw(header, f'{claims}, "sub": "\\ud800"}}'.encode(), rsa_key)))


def test_jwks_uri_client_is_refused_without_fetching_where_remote_keys_are_off(
    endpoint: TokenEndpoint,
    clients: ClientStore,
    rsa_key: rsa.RSAPrivateKey,
    jwks_server: JwksServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks_server.serve_keys(rsa_key)
    clients.add(Client(URI_CLIENT, CC, auth_method="private_key_jwt", jwks_uri=jwks_server.url))
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.refuse(endpoint.assertion(signed(rsa_key, URI_CLIENT)))
    assert jwks_server.request_count == 0
    (entry,) = _failure_logs(caplog)
    assert entry["client_id"] == URI_CLIENT
    assert "no registered JWKS" in entry["reason"]


def test_jwks_uri_client_authenticates_with_a_key_fetched_from_its_url(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    jwks_server.serve_keys(rsa_key)
    clients.add(Client(URI_CLIENT, CC, auth_method="private_key_jwt", jwks_uri=jwks_server.url))
    endpoint.remote_keys = RemoteKeys(ISSUER)
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, URI_CLIENT))).client_id == URI_CLIENT
    assert endpoint.authenticate(endpoint.assertion(signed(rsa_key, URI_CLIENT))).client_id == URI_CLIENT
    assert jwks_server.request_count == 1  # cached, as a verifier caches the issuer's keys


def test_jwks_uri_client_with_a_key_not_at_its_url_or_an_unreachable_url_is_refused(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, dead_url: str
) -> None:
    jwks_server.serve_keys(new_rsa_key())
    clients.add(Client(URI_CLIENT, CC, auth_method="private_key_jwt", jwks_uri=jwks_server.url))
    clients.add(Client("dead-uri", CC, auth_method="private_key_jwt", jwks_uri=dead_url))
    endpoint.remote_keys = RemoteKeys(ISSUER)
    endpoint.refuse(endpoint.assertion(signed(rsa_key, URI_CLIENT)))
    endpoint.refuse(endpoint.assertion(signed(rsa_key, "dead-uri")))


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_jwks_uri_that_trickles_is_refused_within_the_fetch_time(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, phase: str
) -> None:
    # Each byte comes well within any read timeout: only a deadline on the whole fetch stops it.
    jwks_server.serve_keys(rsa_key)
    jwks_server.trickle_interval = 0.5
    jwks_server.trickle_headers = phase == "headers"
    jwks_server.trickle = phase == "body"
    clients.add(Client(URI_CLIENT, CC, auth_method="private_key_jwt", jwks_uri=jwks_server.url))
    endpoint.remote_keys = RemoteKeys(ISSUER, timeout=1.0)
    pool = ThreadPoolExecutor(2)
    try:
        first = pool.submit(_timed_refusal, endpoint, signed(rsa_key, URI_CLIENT))
        jwks_server.wait_for_requests(1)
        # Another request for the same URL waits for that fetch at most, never longer.
        second = pool.submit(_timed_refusal, endpoint, signed(rsa_key, URI_CLIENT))
        assert second.result(timeout=3) < 1.4
        assert first.result(timeout=4) < 1.4  # the whole fetch within its configured second
    finally:
        jwks_server.stop()  # on failure, the stuck fetch ends when the server stops talking
        pool.shutdown(wait=True)


def test_requests_arriving_during_a_jwks_uri_fetch_share_its_answer(
    endpoint: TokenEndpoint, clients: ClientStore, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    # The workers of a client starting together: each asks for a token while the first fetch runs.
    jwks_server.serve_keys(rsa_key)
    jwks_server.hold()
    clients.add(Client(URI_CLIENT, CC, auth_method="private_key_jwt", jwks_uri=jwks_server.url))
    endpoint.remote_keys = RemoteKeys(ISSUER, timeout=5.0)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(endpoint.authenticate, endpoint.assertion(signed(rsa_key, URI_CLIENT)))
        jwks_server.wait_for_requests(1)
        others = [pool.submit(endpoint.authenticate, endpoint.assertion(signed(rsa_key, URI_CLIENT))) for _ in "ab"]
        jwks_server.release()
        assert {future.result(timeout=10).client_id for future in [first, *others]} == {URI_CLIENT}
    assert jwks_server.request_count == 1


def _timed_refusal(endpoint: TokenEndpoint, assertion: str) -> float:
    started = time.monotonic()
    endpoint.refuse(endpoint.assertion(assertion))
    return time.monotonic() - started


# -- the answer and the log --------------------------------------------------------------


def test_invalid_client_always_carries_a_challenge() -> None:
    # RFC 9110 section 15.5.2: a 401 MUST carry WWW-Authenticate, whichever method the client tried.
    assert InvalidClient().headers == {"WWW-Authenticate": 'Basic realm="jwt-split"'}
    assert InvalidClient().status == 401
    assert InvalidClient().error == "invalid_client"
    assert InvalidClient().description == "client authentication failed"


def test_every_failure_gets_the_same_answer(endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(endpoint.now())
    replayed = signed(rsa_key)
    endpoint.authenticate(endpoint.assertion(replayed))
    answers = [
        endpoint.refuse({}, basic(SECRET_CLIENT, "wrong")),
        endpoint.refuse({}, basic("nobody", SECRET)),
        endpoint.refuse({}, [("Authorization", "Basic !!")]),
        endpoint.refuse({"client_id": "nobody"}),
        endpoint.refuse({"client_id": SECRET_CLIENT}),
        endpoint.refuse(endpoint.assertion(replayed)),
        endpoint.refuse(endpoint.assertion(signed(rsa_key, exp=now - 3600, now=now - 3700))),
        endpoint.refuse(endpoint.assertion(signed(rsa_key, aud="https://elsewhere.test"))),
        endpoint.refuse(endpoint.assertion("not-a-jwt")),
    ]
    assert {response.get_data() for response in answers} == {answers[0].get_data()}
    challenges = [response.headers.get("WWW-Authenticate") for response in answers]
    assert challenges == [BASIC_CHALLENGE] * 9  # RFC 9110 section 15.5.2: a 401 always carries a challenge


def test_each_failure_logs_one_line_with_its_reason_and_no_secret(
    endpoint: TokenEndpoint,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = signed(other_rsa_key, kid=kid_of(rsa_key))
    header = basic(SECRET_CLIENT, "the-wrong-secret-value")
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.refuse({}, header)
        endpoint.refuse(endpoint.assertion(forged))
    wrong_secret, bad_signature = _failure_logs(caplog)
    assert wrong_secret == {
        "msg": "client authentication failed",
        "reason": "wrong client secret",
        "client_id": SECRET_CLIENT,
    }
    assert bad_signature["client_id"] == JWT_CLIENT
    assert "signature" in bad_signature["reason"].lower()
    text = caplog.text + json.dumps(_failure_logs(caplog))
    for secret in ("the-wrong-secret-value", header[0][1].split()[1], forged, forged.split(".")[2]):
        assert secret not in text


def test_unknown_client_id_is_logged_cut_short_and_escaped(
    endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.refuse({}, basic("x" * 100, SECRET))
        endpoint.refuse({"client_id": 'evil\n{"level": "error"}\u00e9'})
    long_id, newline_id = _failure_logs(caplog)
    assert long_id == {"msg": "client authentication failed", "reason": "unknown client", "unknown_client_id": "x" * 64}
    assert "client_id" not in newline_id
    assert newline_id["unknown_client_id"] == 'evil\\n{"level": "error"}\\xe9'


def test_successful_authentication_logs_nothing(
    endpoint: TokenEndpoint, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="issuer.client_auth"):
        endpoint.authenticate({}, basic(SECRET_CLIENT, SECRET))
        endpoint.authenticate(endpoint.assertion(signed(rsa_key)))
        endpoint.authenticate({"client_id": PUBLIC_CLIENT})
    assert _failure_logs(caplog) == []
