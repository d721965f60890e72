"""Unit tests for resource_server.oauth_client: the resource as a PKCE client of a real issuer on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from flask.testing import FlaskClient

from jwt_verifier import VerifierConfig
from resource_server.oauth_client import AuthorizationRequest, IssuerClient, _RecentAnswers
from resource_server.settings import ResourceSettings
from shared.oauth_client import InvalidGrant, IssuerError, IssuerUnavailable
from tests.support.browsing import WEB_REDIRECT_URI, follow_authorization, location_path, query
from tests.support.fakes import JwksServer, LiveIssuer, finishes_within

PUBLIC_ISSUER = "http://issuer.public.test"
UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]+")

ClientFactory = Callable[..., IssuerClient]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """Build issuer clients of the resource's web client; their HTTP sessions are closed afterwards."""
    made: list[IssuerClient] = []

    def make(internal_issuer: str, *, public_issuer: str = PUBLIC_ISSUER, timeout: float = 2.0) -> IssuerClient:
        client = IssuerClient(
            ResourceSettings(
                verifier=VerifierConfig(
                    issuer=public_issuer,
                    audience="jwt-split-api",
                    resource=WEB_REDIRECT_URI.removesuffix("/callback"),
                ),
                issuer_internal_url=internal_issuer,
                client_id="resource-web",
                scope="profile admin",
                issuer_timeout=timeout,
            )
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.session.close()


@pytest.fixture
def issuer_client(make_client: ClientFactory, live_issuer: LiveIssuer) -> IssuerClient:
    """A client whose back channel reaches the live issuer (the browser URL is the public one)."""
    return make_client(live_issuer.url)


@pytest.fixture
def browser(live_issuer: LiveIssuer) -> FlaskClient:
    """The browser's view of the live issuer (the same app and database)."""
    return live_issuer.app.test_client()


def _code(browser: FlaskClient, flow: AuthorizationRequest) -> str:
    """Let alice approve the flow at the issuer; return the code the browser brings back."""
    response = follow_authorization(browser, flow.url)
    assert response.status_code == 302, response.get_data(as_text=True)
    params = query(response)
    assert params["state"] == flow.state
    return params["code"]


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# -- the authorization request ------------------------------------------------------------


def test_authorization_request_sends_the_browser_to_the_public_authorize_endpoint(
    make_client: ClientFactory,
) -> None:
    flow = make_client("http://issuer.internal.test").authorization_request()
    parts = urlsplit(flow.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{PUBLIC_ISSUER}/authorize"
    assert parts.fragment == ""


def test_authorization_request_carries_every_parameter_once(make_client: ClientFactory) -> None:
    flow = make_client("http://issuer.internal.test").authorization_request()
    params = parse_qs(urlsplit(flow.url).query, strict_parsing=True)
    assert params == {
        "response_type": ["code"],
        "client_id": ["resource-web"],
        "redirect_uri": [WEB_REDIRECT_URI],
        "scope": ["openid profile email admin"],
        "state": [flow.state],
        "nonce": [flow.nonce],
        "code_challenge": [_s256(flow.verifier)],
        "code_challenge_method": ["S256"],
    }


def test_end_session_url_carries_the_hint_client_return_uri_and_state(make_client: ClientFactory) -> None:
    url = make_client("http://issuer.internal.test").end_session_url_for("an.id.token", "state-1")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{PUBLIC_ISSUER}/logout"
    assert parse_qs(parts.query, strict_parsing=True) == {
        "id_token_hint": ["an.id.token"],
        "client_id": ["resource-web"],
        "post_logout_redirect_uri": [WEB_REDIRECT_URI.removesuffix("/callback") + "/logged-out"],
        "state": ["state-1"],
    }


def test_verifier_meets_rfc7636_and_state_is_unguessable(make_client: ClientFactory) -> None:
    flow = make_client("http://issuer.internal.test").authorization_request()
    assert 43 <= len(flow.verifier) <= 128
    assert UNRESERVED.fullmatch(flow.verifier)
    assert len(flow.state) >= 32
    assert flow.state not in flow.verifier


def test_each_authorization_request_is_fresh(make_client: ClientFactory) -> None:
    client = make_client("http://issuer.internal.test")
    flows = [client.authorization_request() for _ in range(10)]
    assert len({flow.state for flow in flows}) == 10
    assert len({flow.verifier for flow in flows}) == 10
    assert len({flow.nonce for flow in flows}) == 10
    assert all(len(flow.nonce) >= 32 and "." not in flow.nonce + flow.state for flow in flows)


def test_the_issuer_accepts_the_authorization_request(
    make_client: ClientFactory, live_issuer: LiveIssuer, browser: FlaskClient
) -> None:
    flow = make_client(live_issuer.url, public_issuer=live_issuer.url).authorization_request()
    response = follow_authorization(browser, flow.url)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(WEB_REDIRECT_URI + "?")
    params = query(response)
    assert (params["state"], params["iss"]) == (flow.state, live_issuer.url)
    assert "error" not in params


# -- exchange -----------------------------------------------------------------------------


def test_exchange_trades_the_code_for_tokens_over_the_back_channel(
    issuer_client: IssuerClient, browser: FlaskClient, live_issuer: LiveIssuer
) -> None:
    flow = issuer_client.authorization_request()
    tokens = issuer_client.exchange(_code(browser, flow), flow.verifier)
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "admin email openid profile"
    assert tokens["refresh_token"]
    assert tokens["id_token"]
    key = live_issuer.app.extensions["issuer"].keys.signing_key().private_key.public_key()
    claims = jwt.decode(
        tokens["access_token"], key, algorithms=["RS256"], audience="jwt-split-api", issuer=live_issuer.url
    )
    assert (claims["preferred_username"], claims["client_id"]) == ("alice", "resource-web")
    assert claims["sub"] == live_issuer.app.extensions["issuer"].users.get("alice").id


def test_userinfo_reads_the_claims_of_the_access_tokens_user_by_their_stable_id(
    issuer_client: IssuerClient, browser: FlaskClient, live_issuer: LiveIssuer
) -> None:
    flow = issuer_client.authorization_request()
    tokens = issuer_client.exchange(_code(browser, flow), flow.verifier)
    info = issuer_client.userinfo(tokens["access_token"])
    assert info is not None
    alice = live_issuer.app.extensions["issuer"].users.get("alice")
    assert (info["sub"], info["preferred_username"], info["name"]) == (alice.id, "alice", "Alice")


@pytest.mark.parametrize("status", [401, 500, 503])
def test_userinfo_gives_none_for_any_answer_but_a_200_object(
    make_client: ClientFactory, jwks_server: JwksServer, status: int
) -> None:
    jwks_server.answer(status, b'{"sub": "x"}')
    assert make_client(jwks_server.base_url).userinfo("a.b.c") is None


def test_userinfo_gives_none_when_the_issuer_is_unreachable(make_client: ClientFactory, dead_url: str) -> None:
    assert make_client(dead_url.removesuffix("/.well-known/jwks.json")).userinfo("a.b.c") is None


def test_exchange_with_the_wrong_verifier_raises_with_the_issuers_description(
    issuer_client: IssuerClient, browser: FlaskClient
) -> None:
    flow = issuer_client.authorization_request()
    other = issuer_client.authorization_request()
    with pytest.raises(IssuerError, match="code_verifier does not match"):
        issuer_client.exchange(_code(browser, flow), other.verifier)


def test_exchange_of_a_used_code_raises(issuer_client: IssuerClient, browser: FlaskClient) -> None:
    flow = issuer_client.authorization_request()
    code = _code(browser, flow)
    issuer_client.exchange(code, flow.verifier)
    with pytest.raises(IssuerError, match="already used"):
        issuer_client.exchange(code, flow.verifier)


def test_exchange_of_an_unknown_code_raises_with_the_issuers_description(issuer_client: IssuerClient) -> None:
    flow = issuer_client.authorization_request()
    with pytest.raises(IssuerError, match=r"^the issuer refused: the authorization code is not known$"):
        issuer_client.exchange("made-up-code", flow.verifier)


# -- refresh and revoke -------------------------------------------------------------------


def test_refresh_rotates_the_refresh_token(issuer_client: IssuerClient, browser: FlaskClient) -> None:
    flow = issuer_client.authorization_request()
    first = issuer_client.exchange(_code(browser, flow), flow.verifier)
    second = issuer_client.refresh(first["refresh_token"])
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == "admin email openid profile"
    assert issuer_client.refresh(second["refresh_token"])["access_token"]


def test_refresh_retried_within_the_grace_gets_the_same_refresh_token(
    issuer_client: IssuerClient, browser: FlaskClient
) -> None:
    flow = issuer_client.authorization_request()
    first = issuer_client.exchange(_code(browser, flow), flow.verifier)
    second = issuer_client.refresh(first["refresh_token"])
    assert issuer_client.refresh(first["refresh_token"])["refresh_token"] == second["refresh_token"]


def test_revoke_ends_the_refresh_token_and_the_issuer_login(issuer_client: IssuerClient, browser: FlaskClient) -> None:
    flow = issuer_client.authorization_request()
    tokens = issuer_client.exchange(_code(browser, flow), flow.verifier)
    issuer_client.revoke(tokens["refresh_token"])
    with pytest.raises(IssuerError, match="revoked"):
        issuer_client.refresh(tokens["refresh_token"])
    again = urlsplit(issuer_client.authorization_request().url)
    assert location_path(browser.get(again.path, query_string=again.query)) == "/login"


@pytest.mark.parametrize("part", ["headers", "body"])
def test_issuer_trickling_its_answer_raises_issuer_error_within_the_timeout(
    make_client: ClientFactory, jwks_server: JwksServer, part: str
) -> None:
    jwks_server.answer(200, b'{"access_token": "a.b.c", "token_type": "Bearer", "padding": "' + b"x" * 200 + b'"}')
    jwks_server.trickle_in(part)
    client = make_client(jwks_server.base_url, timeout=1.0)
    with pytest.raises(IssuerError, match="could not be reached"):
        finishes_within(3, jwks_server, lambda: client.exchange("code", "v" * 43))


def test_revoke_at_an_issuer_trickling_its_answer_gives_up_within_the_timeout(
    make_client: ClientFactory, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_server.trickle_in("headers")
    client = make_client(jwks_server.base_url, timeout=1.0)
    finishes_within(3, jwks_server, lambda: client.revoke("some-refresh-token"))
    assert "could not revoke at the issuer" in caplog.text


def test_revoke_on_an_unreachable_issuer_is_logged_not_raised(
    make_client: ClientFactory, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_client(_base_url(dead_url)).revoke("some-refresh-token")
    assert "could not revoke at the issuer" in caplog.text
    assert "some-refresh-token" not in caplog.text


# -- failures of the back channel ---------------------------------------------------------


def test_unreachable_issuer_raises_issuer_error(make_client: ClientFactory, dead_url: str) -> None:
    with pytest.raises(IssuerError, match="could not be reached") as caught:
        make_client(_base_url(dead_url)).exchange("code", "v" * 43)
    assert caught.value.__cause__ is not None


def test_issuer_slower_than_the_timeout_raises_issuer_error(
    make_client: ClientFactory, jwks_server: JwksServer
) -> None:
    jwks_server.delay = 2.0
    with pytest.raises(IssuerError, match="could not be reached"):
        make_client(jwks_server.base_url, timeout=0.2).refresh("some-refresh-token")


def test_non_json_answer_raises_issuer_error_with_the_status(
    make_client: ClientFactory, jwks_server: JwksServer
) -> None:
    jwks_server.answer(502, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"})
    with pytest.raises(IssuerError, match="HTTP 502 without JSON"):
        make_client(jwks_server.base_url).exchange("code", "v" * 43)
    assert jwks_server.paths == ["/token"]


def test_refusal_without_description_names_the_status(make_client: ClientFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(400, b'{"error": "invalid_grant"}')
    with pytest.raises(IssuerError, match=r"^the issuer refused: 400$"):
        make_client(jwks_server.base_url).refresh("some-refresh-token")


def test_long_error_description_is_cut_short(make_client: ClientFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(400, json.dumps({"error": "invalid_grant", "error_description": "x" * 5000}).encode())
    with pytest.raises(IssuerError) as caught:
        make_client(jwks_server.base_url).refresh("some-refresh-token")
    assert len(str(caught.value)) < 250


@pytest.mark.parametrize(
    "body", [b'{"token_type": "Bearer"}', b'["access_token"]', b'"access_token"'], ids=["no-token", "list", "string"]
)
def test_success_status_without_an_access_token_raises(
    make_client: ClientFactory, jwks_server: JwksServer, body: bytes
) -> None:
    jwks_server.answer(200, body)
    with pytest.raises(IssuerError, match="the issuer refused"):
        make_client(jwks_server.base_url).exchange("code", "v" * 43)


NESTED = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, NESTED), (400, NESTED), (200, b'{"access_token": ' + NESTED + b"}"), (200, b"\xff\xfe")],
    ids=["nested-200", "nested-400", "nested-member", "not-utf8"],
)
def test_hostile_json_from_the_token_endpoint_is_unavailable_not_a_crash(
    make_client: ClientFactory, jwks_server: JwksServer, status: int, body: bytes
) -> None:
    jwks_server.answer(status, body)
    with pytest.raises(IssuerUnavailable):
        make_client(jwks_server.base_url).refresh("some-refresh-token")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, b'{"error": "too_many_requests", "error_description": "slow down"}'),
        (503, b'{"error": "temporarily_unavailable"}'),
        (500, b"{}"),
    ],
    ids=["429", "503", "500"],
)
def test_rate_limits_and_server_errors_are_unavailable_not_refusals(
    make_client: ClientFactory, jwks_server: JwksServer, status: int, body: bytes
) -> None:
    jwks_server.answer(status, body)
    with pytest.raises(IssuerUnavailable) as caught:
        make_client(jwks_server.base_url).refresh("some-refresh-token")
    assert not isinstance(caught.value, InvalidGrant)


def test_invalid_grant_is_its_own_error(make_client: ClientFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(400, b'{"error": "invalid_grant", "error_description": "the refresh token was revoked"}')
    with pytest.raises(InvalidGrant, match="revoked"):
        make_client(jwks_server.base_url).refresh("some-refresh-token")


def test_other_refusals_are_not_invalid_grant(make_client: ClientFactory, jwks_server: JwksServer) -> None:
    jwks_server.answer(400, b'{"error": "invalid_request", "error_description": "what?"}')
    with pytest.raises(IssuerError) as caught:
        make_client(jwks_server.base_url).refresh("some-refresh-token")
    assert not isinstance(caught.value, InvalidGrant)


def test_kept_userinfo_answers_are_bounded_in_number_and_time() -> None:
    recent = _RecentAnswers(ttl=60.0, size=2)
    keys = [recent.key(f"token-{n}") for n in range(3)]
    for n, key in enumerate(keys):
        recent.put(key, {"sub": str(n)})
    assert recent.get(keys[0]) is None  # the oldest went when the third came
    assert recent.get(keys[2]) == {"sub": "2"}
    expired = _RecentAnswers(ttl=0.0, size=2)
    expired.put(keys[0], {"sub": "0"})
    assert expired.get(keys[0]) is None
