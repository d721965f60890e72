"""Unit tests for resource_server.pages through Flask's test client: the page, browser login and logout."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from jwt_verifier import JwksClient, VerifierConfig
from jwt_verifier.flask import protection
from resource_server import create_app
from resource_server.oauth_client import IssuerClient
from resource_server.pages import SpentStates
from resource_server.session_key import decode, encode, new_key
from resource_server.settings import ResourceSettings
from shared.dpop_client import ServerNonces
from tests.support.browsing import WEB_REDIRECT_URI, follow_authorization, location_path
from tests.support.fakes import FakeClock, JwksServer, LiveIssuer
from tests.support.tokens import AUDIENCE, ID_NONCE, ISSUER, at_hash, kid_of, make_claims, make_id_claims, sign, sign_id
from tests.unit.resource.conftest import AppFactory

PUBLIC_URL = "http://localhost:8001"
TOKEN_COOKIES = ("rs_access", "rs_refresh")
NONCE = ID_NONCE


class PublicHostClient(FlaskClient):
    """A browser that reached the resource by its public URL's host, as the login needs."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        """Send the request to the public URL unless the test says otherwise."""
        kwargs.setdefault("base_url", self.application.extensions["resource.settings"].public_url)
        return super().open(*args, **kwargs)


@pytest.fixture
def make_app(jwks_server: JwksServer) -> Iterator[AppFactory]:
    """Build resource apps (keys from the test JWKS server by default); their HTTP sessions are closed afterwards."""
    apps: list[Flask] = []

    def make(**options: Any) -> Flask:
        # The verifier's options (`public_url` is its `resource`) go to its config, the others to the settings.
        options["resource"] = options.pop("public_url", PUBLIC_URL)
        verifier_fields = {f.name for f in dataclasses.fields(VerifierConfig)}
        verifier = VerifierConfig(
            **{
                "issuer": ISSUER,
                "jwks_url": jwks_server.url,
                "audience": AUDIENCE,
                "scopes_supported": ("profile", "admin"),
                "jwks_timeout": 0.5,
                "jwks_cooldown": 0.0,
                "jwks_prefetch": False,
                **{name: options.pop(name) for name in list(options) if name in verifier_fields},
            }
        )
        settings = ResourceSettings(verifier=verifier, issuer_internal_url=jwks_server.base_url, issuer_timeout=2.0)
        settings = dataclasses.replace(settings, **options)
        app = create_app(settings)
        app.test_client_class = PublicHostClient
        apps.append(app)
        return app

    yield make
    for app in apps:
        jwks: JwksClient = protection(app).jwks
        issuer: IssuerClient = app.extensions["resource.issuer_client"]
        protection(app).close()  # its background threads
        jwks.session.close()
        issuer.session.close()


def _cookie_headers(response: TestResponse) -> dict[str, str]:
    """Return the Set-Cookie headers of a response by cookie name."""
    headers = response.headers.getlist("Set-Cookie")
    return {header.split("=", 1)[0]: header for header in headers}


def _attributes(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


def _assert_deleted(response: TestResponse, name: str) -> None:
    header = _cookie_headers(response)[name]
    assert header.startswith(f"{name}=;")
    assert "max-age=0" in _attributes(header)


def _assert_no_token_cookies_set(response: TestResponse) -> None:
    """Check no access or refresh cookie is given a value (deleting one is fine)."""
    for name, header in _cookie_headers(response).items():
        if name in TOKEN_COOKIES:
            assert header.startswith(f"{name}=;"), header


# The DPoP key of the logins these tests finish: the fake issuer's tokens are bound to it.
SESSION_KEY = new_key(ServerNonces())


def _log_in_cookie(client: FlaskClient, state: str = "state-abc", verifier: str = "v" * 43, nonce: str = NONCE) -> None:
    key = encode(SESSION_KEY)  # the session's DPoP key travels to /callback with the state
    client.set_cookie("rs_login", f"{state}.{nonce}.{key}.{verifier}", path="/callback")


def _same_origin() -> dict[str, str]:
    return {"Sec-Fetch-Site": "same-origin"}


# -- the page -----------------------------------------------------------------------------


def test_page_when_logged_out_offers_a_log_in_link(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<a class="button" href="/login">Log in</a>' in html
    assert "Hello" not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_page_with_a_valid_access_cookie_shows_the_user_scope_and_claims(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    claims = make_claims(scope="profile admin", sub="alice")
    client.set_cookie("rs_access", sign(claims, rsa_key))
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Hello, alice</h1>" in html
    assert '<dd id="scope">profile admin</dd>' in html
    assert f"<td>{claims['jti']}</td>" in html
    assert f"<td>{claims['client_id']}</td>" in html
    assert "Log in</a>" not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_page_escapes_the_claims_it_shows(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    client.set_cookie("rs_access", sign(make_claims(sub="<script>alert(1)</script>"), rsa_key))
    html = client.get("/").get_data(as_text=True)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_page_with_a_tampered_cookie_shows_logged_out_and_deletes_the_cookies(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    header, _, signature = sign(make_claims(), rsa_key).split(".")
    forged_payload = base64.urlsafe_b64encode(b'{"sub":"admin"}').rstrip(b"=").decode()
    client.set_cookie("rs_access", f"{header}.{forged_payload}.{signature}")
    client.set_cookie("rs_refresh", "some-refresh-token")
    response = client.get("/")
    assert response.status_code == 200
    assert "Log in</a>" in response.get_data(as_text=True)
    for name in TOKEN_COOKIES:
        _assert_deleted(response, name)
    assert client.get_cookie("rs_access") is None
    assert client.get_cookie("rs_refresh") is None


def test_page_with_a_token_of_another_key_shows_logged_out(
    client: FlaskClient, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    client.set_cookie("rs_access", sign(make_claims(), other_rsa_key))
    response = client.get("/")
    assert "Log in</a>" in response.get_data(as_text=True)
    _assert_deleted(response, "rs_access")


def test_page_with_an_expired_token_and_unreachable_issuer_keeps_the_cookies(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, dead_url: str
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_app(issuer_internal_url=dead_url.removesuffix("/.well-known/jwks.json")).test_client()
    _expired_session(client, rsa_key)
    response = client.get("/")
    assert response.status_code == 503
    assert "Log in</a>" not in response.get_data(as_text=True)
    assert not set(TOKEN_COOKIES) & set(_cookie_headers(response))


def test_page_keeps_the_cookies_while_the_issuers_keys_are_unavailable(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.answer(503, b"down for maintenance", {"Content-Type": "text/plain"})
    client = make_app().test_client()
    client.set_cookie("rs_access", sign(make_claims(), rsa_key))
    client.set_cookie("rs_refresh", "some-refresh-token")
    client.get("/")
    assert client.get_cookie("rs_access") is not None
    assert client.get_cookie("rs_refresh") is not None


# -- /api/me with the cookie --------------------------------------------------------------


def test_api_me_accepts_the_access_cookie(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = make_claims(scope="profile")
    client.set_cookie("rs_access", sign(claims, rsa_key))
    response = client.get("/api/me")
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice", "scope": "profile", "claims": claims}


def test_api_me_refuses_a_tampered_access_cookie(client: FlaskClient, other_rsa_key: rsa.RSAPrivateKey) -> None:
    client.set_cookie("rs_access", sign(make_claims(), other_rsa_key))
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_a_dpop_bound_access_cookie_counts_only_with_the_sessions_key(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = new_key(ServerNonces())
    claims = make_claims(scope="profile admin", sub="alice", cnf={"jkt": key.jkt}, acr="multi-factor")
    token = sign(claims, rsa_key)
    client.set_cookie("rs_access", token)
    client.set_cookie("rs_dpop", encode(key))
    assert "<h1>Hello, alice</h1>" in client.get("/").get_data(as_text=True)
    assert client.get("/api/me").status_code == 200
    assert client.get("/api/admin").status_code == 200
    # The token as a bearer token, even from the browser holding the key: refused.
    as_bearer = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401
    assert as_bearer.headers["WWW-Authenticate"].startswith("DPoP ")
    for other in (encode(new_key(ServerNonces())), "not-a-key", "A" * 43, None):
        if other is None:
            client.delete_cookie("rs_dpop")
        else:
            client.set_cookie("rs_dpop", other)
        refused = client.get("/api/me")
        assert refused.status_code == 401, other
        assert refused.get_json()["error"] == "invalid_token"
        page = client.get("/")
        assert "Log in</a>" in page.get_data(as_text=True), other
        _assert_deleted(page, "rs_access")
        client.set_cookie("rs_access", token)


# -- /login -------------------------------------------------------------------------------


def test_login_sends_the_browser_to_the_issuers_authorize_endpoint(client: FlaskClient) -> None:
    response = client.get("/login")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/authorize"
    assert response.headers["Cache-Control"] == "no-store"


def test_login_remembers_state_nonce_key_and_verifier_in_an_httponly_cookie_for_the_callback_only(
    client: FlaskClient,
) -> None:
    response = client.get("/login")
    header = _cookie_headers(response)["rs_login"]
    assert {"httponly", "path=/callback", "samesite=lax", "max-age=600"} <= _attributes(header)
    assert "secure" not in _attributes(header)
    state, nonce, key, verifier = header.split(";")[0].split("=", 1)[1].split(".", 3)
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    session_key = decode(key, ServerNonces())
    assert session_key is not None
    assert params["dpop_jkt"] == [session_key.jkt]  # the code is bound to the session's key
    assert key not in response.headers["Location"]
    assert params["state"] == [state]
    assert params["nonce"] == [nonce]
    assert params["scope"] == ["openid profile email admin"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert params["code_challenge"] == [challenge]
    assert params["redirect_uri"] == [f"{PUBLIC_URL}/callback"]
    assert verifier not in response.headers["Location"]


def test_login_cookie_is_secure_when_the_resource_is_served_over_https(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_app(public_url="https://rs.test").test_client()
    header = _cookie_headers(client.get("/login"))["rs_login"]
    assert "secure" in _attributes(header)


# -- /callback ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cookie_state", "query_state"),
    [(None, "state-abc"), ("state-abc", None), ("state-abc", "state-xyz"), ("state-abc", ""), (None, None)],
    ids=["no-cookie", "no-state", "other-state", "empty-state", "neither"],
)
def test_callback_without_the_matching_state_is_refused(
    client: FlaskClient, jwks_server: JwksServer, cookie_state: str | None, query_state: str | None
) -> None:
    if cookie_state is not None:
        _log_in_cookie(client, cookie_state)
    params = {"code": "some-code", "iss": ISSUER}
    if query_state is not None:
        params["state"] = query_state
    response = client.get("/callback", query_string=params)
    assert response.status_code == 400
    assert "could not be completed" in response.get_data(as_text=True)
    _assert_no_token_cookies_set(response)
    assert jwks_server.paths == []  # the code was never sent to the issuer


def test_refused_callback_forgets_the_login_cookie(client: FlaskClient) -> None:
    _log_in_cookie(client)
    response = client.get("/callback", query_string={"code": "c", "state": "state-xyz"})
    header = _cookie_headers(response)["rs_login"]
    assert "path=/callback" in _attributes(header)
    assert "max-age=0" in _attributes(header)


def test_callback_with_an_error_from_the_issuer_is_refused(client: FlaskClient, jwks_server: JwksServer) -> None:
    _log_in_cookie(client)
    response = client.get("/callback", query_string={"error": "access_denied", "state": "state-abc", "iss": ISSUER})
    assert response.status_code == 400
    assert "did not grant the login" in response.get_data(as_text=True)
    _assert_no_token_cookies_set(response)
    assert jwks_server.paths == []


def test_callback_from_another_issuer_is_refused(client: FlaskClient, jwks_server: JwksServer) -> None:
    _log_in_cookie(client)
    response = client.get("/callback", query_string={"code": "c", "state": "state-abc", "iss": "http://evil.test"})
    assert response.status_code == 400
    assert "unexpected issuer" in response.get_data(as_text=True)
    _assert_no_token_cookies_set(response)
    assert jwks_server.paths == []


def test_callback_without_a_code_is_refused(client: FlaskClient) -> None:
    _log_in_cookie(client)
    response = client.get("/callback", query_string={"state": "state-abc", "iss": ISSUER})
    assert response.status_code == 400
    _assert_no_token_cookies_set(response)


def test_callback_whose_exchange_fails_is_a_502_without_token_cookies(
    client: FlaskClient, jwks_server: JwksServer
) -> None:
    jwks_server.answer(400, b'{"error": "invalid_grant", "error_description": "the authorization code is not known"}')
    _log_in_cookie(client)
    response = client.get("/callback", query_string={"code": "c", "state": "state-abc", "iss": ISSUER})
    assert response.status_code == 502
    assert "the authorization code is not known" in response.get_data(as_text=True)
    assert jwks_server.paths == ["/token"]
    _assert_no_token_cookies_set(response)


# -- /callback: the ID token ---------------------------------------------------------------


def _token_answer(rsa_key: rsa.RSAPrivateKey, **id_overrides: Any) -> dict[str, Any]:
    """Return a token endpoint answer with a valid access token and an ID token with these overrides."""
    claims = make_claims(client_id="resource-web", scope="openid profile", cnf={"jkt": SESSION_KEY.jkt})
    access_token = sign(claims, rsa_key)
    id_token = sign_id(make_id_claims(access_token, **id_overrides), rsa_key)
    return {"access_token": access_token, "token_type": "DPoP", "expires_in": 300, "id_token": id_token}


def _callback_answered(client: FlaskClient, jwks_server: JwksServer, answer: dict[str, Any]) -> TestResponse:
    """Finish a login whose code exchange the fake issuer answers with `answer`."""
    assert client.get("/readyz").status_code == 200  # the keys are held before the server answers tokens
    jwks_server.answer(200, json.dumps(answer).encode())
    _log_in_cookie(client)
    return client.get("/callback", query_string={"code": "c", "state": "state-abc", "iss": ISSUER})


@pytest.mark.parametrize(
    ("bound_to", "token_type"),
    [(None, "Bearer"), (None, "DPoP"), ("another key", "DPoP"), ("the session key", "Bearer")],
)
def test_callback_refuses_tokens_not_bound_to_the_sessions_key(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, bound_to: str | None, token_type: str
) -> None:
    jkt = {None: None, "another key": new_key(ServerNonces()).jkt, "the session key": SESSION_KEY.jkt}[bound_to]
    claims = make_claims(client_id="resource-web", scope="openid profile")
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    token = sign(claims, rsa_key)
    answer = {
        "access_token": token,
        "token_type": token_type,
        "expires_in": 300,
        "id_token": sign_id(make_id_claims(token), rsa_key),
    }
    response = _callback_answered(client, jwks_server, answer)
    assert response.status_code == 502, response.get_data(as_text=True)
    assert "DPoP" in response.get_data(as_text=True)
    _assert_no_token_cookies_set(response)
    assert "rs_dpop" not in _cookie_headers(response)


def test_callback_with_a_valid_id_token_logs_in_and_shows_who(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    answer = _token_answer(rsa_key)
    response = _callback_answered(client, jwks_server, answer)
    assert response.status_code == 303, response.get_data(as_text=True)
    assert {"httponly", "samesite=lax", "path=/"} <= _attributes(_cookie_headers(response)["rs_id"])
    jwks_server.serve_keys(rsa_key)
    html = client.get("/").get_data(as_text=True)
    assert '<dd id="name">Alice</dd>' in html
    assert '<dd id="email">alice@example.com</dd>' in html


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"nonce": "the-nonce-of-another-login"}, "its nonce does not match this login"),
        ({"aud": "another-client"}, "it was issued to another client"),
        ({"iss": "http://evil.test"}, "it comes from another issuer"),
        ({"at_hash": at_hash("another access token")}, "it does not belong to the access token it came with"),
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 420}, "the ID token has expired"),
        ({"sub": "mallory"}, "it names no user, or another one"),
    ],
    ids=["wrong-nonce", "wrong-aud", "wrong-iss", "bad-at-hash", "expired", "other-sub"],
)
def test_callback_refuses_an_id_token_that_breaks_a_rule(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any], reason: str
) -> None:
    response = _callback_answered(client, jwks_server, _token_answer(rsa_key, **overrides))
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "The login could not be verified" in html
    assert reason in html
    _assert_no_token_cookies_set(response)
    assert "rs_id" not in _cookie_headers(response)
    _assert_deleted(response, "rs_login")


def test_callback_refuses_an_id_token_of_a_foreign_signature(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    answer = _token_answer(rsa_key)
    answer["id_token"] = sign_id(make_id_claims(answer["access_token"]), other_rsa_key, kid=kid_of(rsa_key))
    response = _callback_answered(client, jwks_server, answer)
    assert response.status_code == 400
    assert "signature or encoding is not valid" in response.get_data(as_text=True)
    _assert_no_token_cookies_set(response)


def test_callback_without_an_id_token_is_refused(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    answer = _token_answer(rsa_key)
    del answer["id_token"]
    response = _callback_answered(client, jwks_server, answer)
    assert response.status_code == 502
    assert "no ID token" in response.get_data(as_text=True)
    _assert_no_token_cookies_set(response)


def test_page_does_not_show_an_id_token_cookie_of_another_user(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    client.set_cookie("rs_access", sign(make_claims(sub="alice"), rsa_key))
    client.set_cookie("rs_id", sign_id(make_id_claims("", sub="bob", name="Bob"), rsa_key))
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert "<h1>Hello, alice</h1>" in html
    assert 'id="identity"' not in html
    assert "Bob" not in html


def test_page_shows_an_expired_id_token_cookie_of_the_same_user(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    client.set_cookie("rs_access", sign(make_claims(sub="alice"), rsa_key))
    client.set_cookie("rs_id", sign_id(make_id_claims("", exp=now - 60, iat=now - 360), rsa_key))
    assert '<dd id="name">Alice</dd>' in client.get("/").get_data(as_text=True)


USER_ID = "5f0c6a5e0d8e4b6c9d0a1b2c3d4e5f60"


def _minimal_session(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    """Log a browser in as the issuer does now: `sub` the user's id, an ID token without profile claims."""
    access = sign(
        make_claims(sub=USER_ID, preferred_username="alice", scope="openid profile email", client_id="resource-web"),
        rsa_key,
    )
    client.set_cookie("rs_access", access)
    client.set_cookie("rs_id", sign_id(make_id_claims(access, sub=USER_ID, name=None, email=None), rsa_key))
    assert client.get("/readyz").status_code == 200  # the keys are held: from now on the fake answers /userinfo


def test_page_shows_the_name_and_email_the_issuers_userinfo_gives(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # OpenID Connect Core 1.0 section 5.4: with an access token issued, the profile claims are at /userinfo.
    _minimal_session(client, rsa_key)
    info = {"sub": USER_ID, "name": "Alice", "email": "alice@example.com", "preferred_username": "alice"}
    jwks_server.answer(200, json.dumps(info).encode())
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Hello, alice</h1>" in html  # the name, never the id
    assert '<dd id="name">Alice</dd>' in html
    assert '<dd id="email">alice@example.com</dd>' in html
    assert '<dd id="username">alice</dd>' in html
    assert jwks_server.paths[-1] == "/userinfo"


def test_page_asks_userinfo_once_per_access_token_not_per_view(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # The page is viewed often; the issuer is asked once per access token (and again after a minute).
    _minimal_session(client, rsa_key)
    info = {"sub": USER_ID, "name": "Alice", "email": "alice@example.com", "preferred_username": "alice"}
    jwks_server.answer(200, json.dumps(info).encode())
    asked = len(jwks_server.paths)
    for _ in range(3):
        assert '<dd id="name">Alice</dd>' in client.get("/").get_data(as_text=True)
    assert jwks_server.paths[asked:] == ["/userinfo"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"internal error"),
        (401, b'{"error": "invalid_token"}'),
        (200, b"not json"),
        (200, b'["a", "list"]'),
        (200, json.dumps({"sub": "someone-else", "name": "Mallory", "email": "m@evil.test"}).encode()),
        (200, json.dumps({"sub": USER_ID, "name": ["Mallory"], "email": {"x": 1}}).encode()),
    ],
    ids=["5xx", "401", "not-json", "not-an-object", "other-sub", "not-strings"],
)
def test_page_without_a_usable_userinfo_answer_shows_who_logged_in_without_name_or_email(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, status: int, body: bytes
) -> None:
    _minimal_session(client, rsa_key)
    jwks_server.answer(status, body)
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Hello, alice</h1>" in html
    assert 'id="identity"' in html
    assert 'id="name"' not in html
    assert 'id="email"' not in html
    assert "Mallory" not in html


def test_page_with_a_slow_userinfo_answers_within_its_timeout_without_name(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_app(issuer_timeout=0.2).test_client()
    _minimal_session(client, rsa_key)
    jwks_server.answer(200, json.dumps({"sub": USER_ID, "name": "Alice"}).encode())
    jwks_server.hold()
    try:
        started = time.monotonic()
        response = client.get("/")
        assert time.monotonic() - started < 5  # generous: the bound is the timeout, 0.2 s
    finally:
        jwks_server.release()
    assert response.status_code == 200
    assert 'id="name"' not in response.get_data(as_text=True)


def test_page_with_an_unreachable_issuer_shows_who_logged_in_without_name(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, dead_url: str
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_app(issuer_internal_url=dead_url.removesuffix("/.well-known/jwks.json")).test_client()
    _minimal_session(client, rsa_key)
    response = client.get("/")
    assert response.status_code == 200
    assert "<h1>Hello, alice</h1>" in response.get_data(as_text=True)


def test_a_refresh_whose_id_token_names_another_user_logs_out(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    _expired_session(client, rsa_key)
    client.set_cookie("rs_dpop", encode(SESSION_KEY))  # the key the fake issuer's tokens are bound to
    answer = _token_answer(rsa_key, nonce=None, sub="mallory")
    answer["refresh_token"] = "successor"
    jwks_server.serve_keys(rsa_key)
    assert client.get("/readyz").status_code == 200
    jwks_server.answer(200, json.dumps(answer).encode())
    response = client.get("/")
    assert response.status_code == 502
    assert "names no user, or another one" in response.get_data(as_text=True)
    for name in (*TOKEN_COOKIES, "rs_id"):
        _assert_deleted(response, name)


# -- /logout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.test"},
        {"Origin": "null"},
        {"Origin": "https://localhost:8001"},
        {"Sec-Fetch-Site": "cross-site", "Origin": PUBLIC_URL},
    ],
    ids=["no-headers", "cross-site", "same-site", "other-origin", "null-origin", "other-scheme", "fetch-site-wins"],
)
def test_logout_from_elsewhere_is_forbidden_and_keeps_the_cookies(
    client: FlaskClient, jwks_server: JwksServer, headers: dict[str, str]
) -> None:
    client.set_cookie("rs_access", "some-access-token")
    client.set_cookie("rs_refresh", "some-refresh-token")
    response = client.post("/logout", headers=headers)
    assert response.status_code == 403
    assert "must start from this site" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert jwks_server.paths == []  # nothing was revoked


@pytest.mark.parametrize(
    "headers", [{"Sec-Fetch-Site": "same-origin"}, {"Origin": PUBLIC_URL}], ids=["same-origin", "own-origin"]
)
def test_logout_from_our_page_revokes_and_deletes_the_cookies(
    client: FlaskClient, jwks_server: JwksServer, headers: dict[str, str]
) -> None:
    jwks_server.answer(200, b"")
    client.set_cookie("rs_access", "some-access-token")
    client.set_cookie("rs_refresh", "some-refresh-token")
    response = client.post("/logout", headers=headers)
    assert response.status_code == 303
    # No ID token to give as a hint: the issuer is asked to end the session of this browser.
    assert response.headers["Location"].startswith(f"{ISSUER}/logout?client_id=resource-web&")
    for name in TOKEN_COOKIES:
        _assert_deleted(response, name)
    assert client.get_cookie("rs_access") is None
    assert jwks_server.paths == ["/revoke"]


def test_logout_without_a_refresh_cookie_revokes_nothing(client: FlaskClient, jwks_server: JwksServer) -> None:
    response = client.post("/logout", headers=_same_origin())
    assert response.status_code == 303
    assert jwks_server.paths == []


def test_logout_succeeds_even_when_the_issuer_is_unreachable(
    make_app: AppFactory, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, dead_url: str
) -> None:
    jwks_server.serve_keys(rsa_key)
    client = make_app(issuer_internal_url=dead_url.removesuffix("/.well-known/jwks.json")).test_client()
    client.set_cookie("rs_refresh", "some-refresh-token")
    response = client.post("/logout", headers=_same_origin())
    assert response.status_code == 303
    _assert_deleted(response, "rs_refresh")


def test_the_pages_let_the_log_out_form_end_at_the_issuer_only(client: FlaskClient) -> None:
    csp = client.get("/").headers["Content-Security-Policy"]
    assert f"form-action 'self' {ISSUER};" in csp
    assert "script-src" not in csp  # still no script at all (default-src 'none')


def test_logout_get_is_not_allowed(client: FlaskClient) -> None:
    assert client.get("/logout").status_code == 405


# -- /logged-out ---------------------------------------------------------------------------


def test_logout_gives_the_id_token_as_hint_and_keeps_a_state_for_the_way_back(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    id_token = sign_id(make_id_claims("", exp=now - 60, iat=now - 360), rsa_key)  # expired: still a hint
    client.set_cookie("rs_id", id_token)
    response = client.post("/logout", headers=_same_origin())
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{ISSUER}/logout?id_token_hint={id_token}&")
    state = parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]
    assert len(state) >= 32
    cookie = client.get_cookie("rs_logout", path="/logged-out")
    assert cookie is not None
    assert cookie.value == state
    _assert_deleted(response, "rs_id")
    back = client.get("/logged-out", query_string={"state": state})
    assert back.status_code == 200
    assert "<h1>You have been logged out</h1>" in back.get_data(as_text=True)
    _assert_deleted(back, "rs_logout")


@pytest.mark.parametrize("id_token", ["an.id.token", "forged"], ids=["garbage", "foreign-key"])
def test_logout_gives_no_hint_the_issuer_would_refuse(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, id_token: str
) -> None:
    if id_token == "forged":
        id_token = sign_id(make_id_claims(""), other_rsa_key, kid=kid_of(rsa_key))
    client.set_cookie("rs_id", id_token)
    response = client.post("/logout", headers=_same_origin())
    assert response.status_code == 303
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert "id_token_hint" not in params
    assert params["post_logout_redirect_uri"] == [f"{PUBLIC_URL}/logged-out"]
    _assert_deleted(response, "rs_id")


@pytest.mark.parametrize(
    ("cookie", "query"),
    [(None, "state-abc"), ("state-abc", None), ("state-abc", "state-xyz"), ("stäte", "stäte"), (None, None)],
    ids=["no-cookie", "no-state", "other-state", "non-ascii", "neither"],
)
def test_logged_out_without_the_matching_state_still_shows_a_logged_out_page(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey, cookie: str | None, query: str | None
) -> None:
    client.set_cookie("rs_access", sign(make_claims(), rsa_key))
    if cookie is not None:
        client.set_cookie("rs_logout", cookie, path="/logged-out")
    response = client.get("/logged-out", query_string={"state": query} if query is not None else {})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Logged out</h1>" in html
    assert "nothing changed" in html
    assert response.headers["Cache-Control"] == "no-store"
    # A link to this page logs nobody out.
    assert not {"rs_access", "rs_refresh", "rs_id"} & set(_cookie_headers(response))


# -- the whole flow against a real issuer -------------------------------------------------


@pytest.fixture
def live_client(make_app: AppFactory, live_issuer: LiveIssuer) -> FlaskClient:
    """A browser on a resource whose issuer is the live one on loopback."""
    app = make_app(
        issuer=live_issuer.url,
        issuer_internal_url=live_issuer.url,
        jwks_url=f"{live_issuer.url}/.well-known/jwks.json",
    )
    assert app.extensions["resource.settings"].redirect_uri == WEB_REDIRECT_URI
    return app.test_client()


def _browser_login(resource: FlaskClient, issuer: FlaskClient) -> TestResponse:
    """Log alice in from the resource's page through the issuer; return the callback's answer."""
    at_issuer = follow_authorization(issuer, resource.get("/login").headers["Location"])
    assert at_issuer.status_code == 302, at_issuer.get_data(as_text=True)
    back = urlsplit(at_issuer.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == WEB_REDIRECT_URI
    return resource.get(back.path, query_string=back.query)


def test_browser_login_through_the_issuer_stores_the_tokens_in_httponly_cookies(
    live_client: FlaskClient, live_issuer: LiveIssuer
) -> None:
    response = _browser_login(live_client, live_issuer.app.test_client())
    assert response.status_code == 303, response.get_data(as_text=True)
    assert response.headers["Location"] == "/"
    headers = _cookie_headers(response)
    for name in (*TOKEN_COOKIES, "rs_id"):
        assert {"httponly", "samesite=lax", "path=/"} <= _attributes(headers[name])
    _assert_deleted(response, "rs_login")
    html = live_client.get("/").get_data(as_text=True)
    assert "<h1>Hello, alice</h1>" in html
    assert '<dd id="scope">admin email openid profile</dd>' in html
    # Who logged in, from the ID token the callback validated.
    assert '<dd id="name">Alice</dd>' in html
    assert '<dd id="email">alice@example.com</dd>' in html
    assert '<dd id="username">alice</dd>' in html
    assert 'id="auth-time">' in html


def test_state_of_one_login_cannot_finish_another(live_client: FlaskClient, live_issuer: LiveIssuer) -> None:
    issuer = live_issuer.app.test_client()
    at_issuer = follow_authorization(issuer, live_client.get("/login").headers["Location"])
    live_client.get("/login")  # a second login replaces the first's state and verifier
    back = urlsplit(at_issuer.headers["Location"])
    response = live_client.get(back.path, query_string=back.query)
    assert response.status_code == 400
    _assert_no_token_cookies_set(response)


def test_expired_access_cookie_is_renewed_with_the_refresh_cookie(
    live_client: FlaskClient, live_issuer: LiveIssuer
) -> None:
    _browser_login(live_client, live_issuer.app.test_client())
    old_refresh = live_client.get_cookie("rs_refresh")
    old_id = live_client.get_cookie("rs_id")
    assert old_refresh is not None
    assert old_id is not None
    key = live_issuer.app.extensions["issuer"].keys.signing_key()
    now = int(time.time())
    expired = make_claims(issuer=live_issuer.url, client_id="resource-web", iat=now - 900, exp=now - 600)
    live_client.set_cookie("rs_access", sign(expired, key.private_key, kid=key.kid))
    response = live_client.get("/")
    assert "<h1>Hello, alice</h1>" in response.get_data(as_text=True)
    headers = _cookie_headers(response)
    assert set(TOKEN_COOKIES) <= set(headers)
    new_refresh = live_client.get_cookie("rs_refresh")
    assert new_refresh is not None
    assert new_refresh.value != old_refresh.value
    # The refresh's new ID token (no nonce, the same sub) was validated and replaces the old one.
    new_id = live_client.get_cookie("rs_id")
    assert new_id is not None
    assert new_id.value != old_id.value
    assert '<dd id="name">Alice</dd>' in response.get_data(as_text=True)


def test_logout_sends_the_browser_to_the_issuers_end_session_endpoint_with_the_id_token(
    live_client: FlaskClient, live_issuer: LiveIssuer
) -> None:
    _browser_login(live_client, live_issuer.app.test_client())
    id_token = live_client.get_cookie("rs_id")
    assert id_token is not None
    response = live_client.post("/logout", headers=_same_origin())
    assert response.status_code == 303
    target = urlsplit(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{live_issuer.url}/logout"
    params = parse_qs(target.query, strict_parsing=True)
    state = _cookie_headers(response)["rs_logout"].split(";")[0].split("=", 1)[1]
    assert params == {
        "id_token_hint": [id_token.value],
        "client_id": ["resource-web"],
        "post_logout_redirect_uri": [f"{PUBLIC_URL}/logged-out"],
        "state": [state],
    }
    assert {"httponly", "path=/logged-out", "max-age=600"} <= _attributes(_cookie_headers(response)["rs_logout"])
    for name in (*TOKEN_COOKIES, "rs_id"):
        _assert_deleted(response, name)
    assert "Log in</a>" in live_client.get("/").get_data(as_text=True)


def test_logout_through_the_issuer_ends_its_session_and_comes_back_confirmed(
    live_client: FlaskClient, live_issuer: LiveIssuer
) -> None:
    issuer = live_issuer.app.test_client()
    _browser_login(live_client, issuer)
    refresh = live_client.get_cookie("rs_refresh")
    assert refresh is not None
    kept_key = live_client.get_cookie("rs_dpop")
    assert kept_key is not None
    key = decode(kept_key.value, ServerNonces())
    assert key is not None
    at_issuer = urlsplit(live_client.post("/logout", headers=_same_origin()).headers["Location"])
    answer = issuer.get(at_issuer.path, query_string=at_issuer.query)
    assert answer.status_code in {302, 303}, answer.get_data(as_text=True)
    back = urlsplit(answer.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == f"{PUBLIC_URL}/logged-out"
    confirmed = live_client.get(back.path, query_string=back.query)
    assert "<h1>You have been logged out</h1>" in confirmed.get_data(as_text=True)
    # Even with a proof by the session's key (the refresh token is bound to it): revoked.
    refused = issuer.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh.value, "client_id": "resource-web"},
        headers={"DPoP": key.proof("POST", f"{live_issuer.url}/token")},
    )
    assert refused.get_json()["error"] == "invalid_grant"
    assert live_client.get_cookie("rs_dpop") is None  # the key went with the tokens
    again = urlsplit(live_client.get("/login").headers["Location"])
    assert location_path(issuer.get(again.path, query_string=again.query)) == "/login"


# -- any host ends at the public URL --------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/login"])
@pytest.mark.parametrize("host", ["127.0.0.1:8001", "localhost", "localhost:8002", "evil.test", "LOCALHOST:8001.evil"])
def test_pages_on_another_host_redirect_to_the_public_url(client: FlaskClient, path: str, host: str) -> None:
    response = client.get(path, headers={"Host": host}, query_string={"next": "//evil.test"})
    assert response.status_code == 302
    assert response.headers["Location"] == PUBLIC_URL + path
    assert "Set-Cookie" not in response.headers


def test_pages_on_the_public_host_answer_in_any_case(client: FlaskClient) -> None:
    assert client.get("/", headers={"Host": "LocalHost:8001"}).status_code == 200


def test_the_api_answers_on_any_host(client: FlaskClient, rsa_key: rsa.RSAPrivateKey) -> None:
    response = client.get(
        "/api/me", headers={"Host": "127.0.0.1:8001", "Authorization": f"Bearer {sign(make_claims(), rsa_key)}"}
    )
    assert response.status_code == 200


# -- /callback: hostile input, replays, floods ---------------------------------------------


@pytest.mark.parametrize(
    ("cookie_state", "query_state"),
    [("state-abc", "stäte"), ("stäte", "stäte"), ("stäte", "state-abc"), ("state-abc", "%FF%FE")],
    ids=["query", "both", "cookie", "not-utf8"],
)
def test_callback_with_a_non_ascii_state_is_refused_not_a_500(
    client: FlaskClient, jwks_server: JwksServer, cookie_state: str, query_state: str
) -> None:
    _log_in_cookie(client, cookie_state)
    state = query_state if query_state.startswith("%") else quote(query_state)
    response = client.get("/callback", query_string=f"code=c&state={state}&iss={quote(ISSUER, safe='')}")
    assert response.status_code == 400
    assert jwks_server.paths == []


def test_callback_with_a_non_ascii_raw_cookie_is_refused_not_a_500(
    client: FlaskClient, jwks_server: JwksServer
) -> None:
    response = client.get(
        "/callback",
        query_string={"code": "c", "state": "state-abc", "iss": ISSUER},
        headers={"Cookie": "rs_login=st\xe4te.verifier".encode().decode("latin-1")},
    )
    assert response.status_code == 400
    assert jwks_server.paths == []


def test_callback_clears_the_login_cookie_whatever_the_outcome(client: FlaskClient, jwks_server: JwksServer) -> None:
    jwks_server.answer(503, b"down", {"Content-Type": "text/plain"})
    _log_in_cookie(client)
    response = client.get("/callback", query_string={"code": "c", "state": "state-abc", "iss": ISSUER})
    assert response.status_code == 503
    _assert_deleted(response, "rs_login")


def test_a_state_is_good_for_one_callback_only(client: FlaskClient, jwks_server: JwksServer) -> None:
    jwks_server.answer(400, b'{"error": "invalid_grant", "error_description": "unknown code"}')
    for _ in range(2):
        _log_in_cookie(client)  # a replay brings its own copy of the cookie
        response = client.get("/callback", query_string={"code": "junk", "state": "state-abc", "iss": ISSUER})
    assert response.status_code == 400
    assert "could not be completed" in response.get_data(as_text=True)
    assert jwks_server.paths == ["/token"]  # only the first reached the issuer


def test_callback_is_rate_limited_per_client_address(make_app: AppFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(400, b'{"error": "invalid_grant", "error_description": "unknown code"}')
    client = make_app(callback_rate_limit="3 per minute").test_client()
    statuses = []
    for number in range(5):
        _log_in_cookie(client, f"state-{number}")
        response = client.get(
            "/callback",
            query_string={"code": "junk", "state": f"state-{number}", "iss": ISSUER},
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        )
        statuses.append(response.status_code)
    assert statuses == [502, 502, 502, 429, 429]
    assert response.headers.get("Retry-After")
    assert len(jwks_server.paths) == 3
    _log_in_cookie(client, "state-other")
    other = client.get(
        "/callback",
        query_string={"code": "junk", "state": "state-other", "iss": ISSUER},
        environ_base={"REMOTE_ADDR": "192.0.2.8"},
    )
    assert other.status_code == 502


# -- refresh failures keep the login unless the grant is gone ----------------------------------


def _expired_session(client: FlaskClient, key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    client.set_cookie("rs_access", sign(make_claims(iat=now - 900, exp=now - 600), key))
    client.set_cookie("rs_refresh", "some-refresh-token")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, b'{"error": "too_many_requests", "error_description": "slow down"}'),
        (500, b"oops"),
        (503, b'{"error": "temporarily_unavailable"}'),
        (400, b'{"error": "invalid_request", "error_description": "what?"}'),
        (200, b"[" * 20_000 + b"]" * 20_000),
    ],
    ids=["429", "500", "503", "invalid_request", "nested-json"],
)
def test_a_refresh_that_fails_for_another_reason_is_a_503_that_keeps_the_cookies(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, status: int, body: bytes
) -> None:
    _expired_session(client, rsa_key)
    assert client.get("/readyz").status_code == 200  # the keys are held before the issuer fails
    jwks_server.answer(status, body)
    response = client.get("/")
    assert response.status_code == 503
    assert "try again" in response.get_data(as_text=True)
    assert "rs_access" not in _cookie_headers(response)
    assert "rs_refresh" not in _cookie_headers(response)
    assert client.get_cookie("rs_refresh") is not None


def test_a_refresh_refused_with_invalid_grant_forgets_the_cookies(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    _expired_session(client, rsa_key)
    assert client.get("/readyz").status_code == 200
    jwks_server.answer(400, b'{"error": "invalid_grant", "error_description": "the refresh token is not valid"}')
    response = client.get("/")
    assert response.status_code == 200
    assert "Log in</a>" in response.get_data(as_text=True)
    for name in TOKEN_COOKIES:
        _assert_deleted(response, name)


# -- spent states ---------------------------------------------------------------------------


def test_a_spent_state_is_refused_until_a_login_cookie_would_have_expired(clock: FakeClock) -> None:
    spent = SpentStates(600, 10, clock=clock)
    assert spent.spend("state-1") is True
    assert spent.spend("state-1") is False
    clock.advance(599)
    assert spent.spend("state-1") is False
    clock.advance(1)
    assert spent.spend("state-1") is True  # its cookie is long gone: nothing left to replay


def test_spent_states_are_bounded(clock: FakeClock) -> None:
    spent = SpentStates(600, 3, clock=clock)
    for number in range(5):
        assert spent.spend(f"state-{number}") is True
    assert spent.spend("state-4") is False
    assert spent.spend("state-0") is True  # the oldest made room


def test_a_refreshed_token_that_cannot_be_verified_yet_keeps_the_successor_refresh_token(
    client: FlaskClient, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # An emergency rotation: the issuer already signs with a key the resource cannot fetch yet.
    _expired_session(client, rsa_key)
    assert client.get("/readyz").status_code == 200
    now = int(time.time())
    fresh = sign(make_claims(iat=now, exp=now + 300), other_rsa_key)
    tokens = {"access_token": fresh, "refresh_token": "successor", "token_type": "Bearer", "expires_in": 300}
    jwks_server.answer(200, json.dumps(tokens).encode())
    response = client.get("/")
    assert response.status_code == 503
    assert "successor" in _cookie_headers(response)["rs_refresh"]
    cookie = client.get_cookie("rs_refresh")
    assert cookie is not None
    assert cookie.value == "successor"  # the spent one would revoke the family after the reuse grace


# -- /admin and its step-up (RFC 9470) -------------------------------------------------------


def _admin_session(client: FlaskClient, rsa_key: rsa.RSAPrivateKey, **login: Any) -> None:
    key = new_key(ServerNonces())
    claims = make_claims(scope="profile admin", sub="alice", cnf={"jkt": key.jkt}, **login)
    client.set_cookie("rs_access", sign(claims, rsa_key))
    client.set_cookie("rs_dpop", encode(key))


def test_admin_without_a_login_says_log_in_first(client: FlaskClient) -> None:
    response = client.get("/admin")
    assert response.status_code == 401
    assert 'id="admin-logged-out"' in response.get_data(as_text=True)


def test_admin_with_a_multi_factor_login_shows_the_admin_answer(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    _admin_session(client, rsa_key, acr="multi-factor")
    response = client.get("/admin")
    assert response.status_code == 200
    assert '<dd id="admin-message">welcome, administrator</dd>' in response.get_data(as_text=True)


def test_admin_with_one_factor_steps_up_once_with_acr_values_and_comes_back(
    client: FlaskClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    _admin_session(client, rsa_key, acr="single-factor")
    response = client.get("/admin")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/authorize"
    query = parse_qs(location.query)
    assert query["acr_values"] == ["multi-factor"]
    assert "dpop_jkt" in query
    assert "max_age" not in query
    cookies = _cookie_headers(response)
    assert cookies["rs_return"].startswith("rs_return=admin;")
    assert {"httponly", "path=/callback"} <= _attributes(cookies["rs_return"])
    # Back from a step-up that still fell short: no second redirect, the way to a second factor instead.
    again = client.get("/admin?stepped_up=1")
    assert again.status_code == 403
    html = again.get_data(as_text=True)
    assert 'id="admin-enroll"' in html
    assert f'href="{ISSUER}/account"' in html


def test_a_plain_login_forgets_an_abandoned_step_up(client: FlaskClient) -> None:
    response = client.get("/login")
    assert "acr_values" not in response.headers["Location"]
    _assert_deleted(response, "rs_return")
