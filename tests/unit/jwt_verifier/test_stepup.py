"""Step-up authentication (RFC 9470) in the verifier library: the core's rule, and both integrations' answers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from flask import Flask, g
from requests.structures import CaseInsensitiveDict

from jwt_verifier import InsufficientUserAuthentication, InvalidToken, ResourceProtector, StepUp, observe
from jwt_verifier.errors import InsufficientScope
from jwt_verifier.fastapi import BearerAuth as FastApiAuth
from jwt_verifier.fastapi import Claims, require_scope
from jwt_verifier.fastapi import protection as fastapi_protection
from jwt_verifier.flask import BearerAuth as FlaskAuth
from jwt_verifier.flask import protection as flask_protection
from tests.support.asgi import serve_asgi
from tests.support.dpop import make_proof, thumbprint
from tests.support.fakes import JwksServer
from tests.support.orders_api import AUDIENCE, RESOURCE, orders_config
from tests.support.tokens import make_claims, sign
from tests.unit.jwt_verifier.test_observe import Recorder

METADATA = f'resource_metadata="{RESOURCE}/.well-known/oauth-protected-resource"'
ALGS = 'algs="ES256 RS256 PS256 EdDSA"'
MFA = "multi-factor"
# FastAPI resolves the annotations by module globals: the dependency lives here.
REFUNDS = require_scope("orders:write", acr_values=MFA, max_age=300)  # a space-separated string works too


# -- the rule itself -------------------------------------------------------------------------------


def _refusal(demand: StepUp, claims: Mapping[str, Any], now: float | None = None) -> InsufficientUserAuthentication:
    with pytest.raises(InsufficientUserAuthentication) as refused:
        demand.check(claims, now)
    return refused.value


def test_an_acceptable_acr_passes_and_any_other_is_refused_naming_the_values() -> None:
    demand = StepUp((MFA, "phr"))
    demand.check({"acr": MFA})
    demand.check({"acr": "phr"})
    refusal = _refusal(demand, {"acr": "single-factor"})
    assert (refusal.status, refusal.error, refusal.reason) == (401, "insufficient_user_authentication", refusal.reason)
    assert refusal.reason.value == "insufficient_user_authentication"
    assert refusal.challenge() == (
        'Bearer realm="jwt-split", error="insufficient_user_authentication", '
        'error_description="a login with acr one of multi-factor phr is required", acr_values="multi-factor phr"'
    )
    assert not isinstance(refusal, InvalidToken)  # refreshing gives the same login: not a bad token


def test_the_refusal_of_an_acr_not_listed_does_not_call_it_weaker() -> None:
    """acr values match exactly (RFC 9470 section 3): a route lists every acceptable value, the message says so."""
    refusal = _refusal(StepUp(("single-factor",)), {"acr": MFA})  # a higher acr the route did not list
    assert refusal.description == "a login with acr one of single-factor is required"
    assert "stronger" not in refusal.challenge()
    StepUp(("single-factor", MFA)).check({"acr": MFA})


@pytest.mark.parametrize("claims", [{}, {"acr": None}, {"acr": 2}, {"acr": [MFA]}])
def test_a_token_without_a_string_acr_is_refused(claims: dict[str, Any]) -> None:
    refusal = _refusal(StepUp((MFA,)), claims)
    assert refusal.description == "the token does not say how the user logged in (no acr)"
    assert refusal.challenge_params() == (("acr_values", MFA),)


def test_a_login_older_than_max_age_is_refused_and_a_recent_one_passes() -> None:
    demand = StepUp(max_age=300)
    now = 1_800_000_000
    demand.check({"auth_time": now - 300}, now)  # exactly max_age: still allowed
    demand.check({"auth_time": now - 5}, now)
    refusal = _refusal(demand, {"auth_time": now - 301}, now)
    assert refusal.description == "a more recent login is required: within the last 300 seconds"
    assert refusal.challenge_params() == (("max_age", "300"),)
    demand.check({"auth_time": int(time.time()) - 10})  # the clock by default


@pytest.mark.parametrize("claims", [{}, {"auth_time": None}, {"auth_time": "1800000000"}, {"auth_time": True}])
def test_a_token_without_a_numeric_auth_time_is_refused(claims: dict[str, Any]) -> None:
    refusal = _refusal(StepUp(max_age=60), claims)
    assert refusal.description == "the token does not say when the user logged in (no auth_time)"


def test_both_demands_are_named_in_the_challenge_whichever_failed() -> None:
    demand = StepUp((MFA,), 0)
    now = time.time()
    for claims in ({"acr": "single-factor", "auth_time": now}, {"acr": MFA, "auth_time": now - 10}):
        refusal = _refusal(demand, claims, now)
        assert refusal.challenge_params() == (("acr_values", MFA), ("max_age", "0"))
        assert 'acr_values="multi-factor", max_age="0"' in refusal.challenge(RESOURCE)


@pytest.mark.parametrize(
    ("acr_values", "max_age"), [(("",), None), (('a"b',), None), (("a b",), None), (("é",), None), ((), -1)]
)
def test_a_demand_that_cannot_be_written_in_a_challenge_is_refused_at_start(
    acr_values: tuple[str, ...], max_age: int | None
) -> None:
    with pytest.raises(ValueError, match=r"acr value|max_age"):
        StepUp(acr_values, max_age)


# -- the protector: scope first, then the login; counted by reason --------------------------------


class Answering:
    """A TokenVerifier that accepts every token with fixed claims."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def verify(self, token: str) -> dict[str, Any]:
        return dict(self.claims)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder, previous = Recorder(), observe.current()
    observe.install(recorder)
    try:
        yield recorder
    finally:
        observe.install(previous)


def test_the_protector_checks_the_scope_before_the_login_and_counts_the_step_up_refusal(recorder: Recorder) -> None:
    protector = ResourceProtector(Answering({"sub": "alice", "scope": "profile", "acr": "single-factor"}))
    with pytest.raises(InsufficientScope):  # a stronger login would not give the scope
        protector.authenticate(["Bearer t"], scope="admin", step_up=StepUp((MFA,)))
    with pytest.raises(InsufficientUserAuthentication):
        protector.authenticate(["Bearer t"], scope="profile", step_up=StepUp((MFA,)))
    assert protector.authenticate(["Bearer t"], scope="profile", step_up=StepUp(("single-factor",)))["sub"] == "alice"
    assert recorder.verifications == [
        ("valid", "none"),
        ("invalid", "insufficient_user_authentication"),
        ("valid", "none"),
    ]
    assert "insufficient_user_authentication" in observe.REASONS


# -- both integrations over HTTP-like clients -------------------------------------------------------


class Answer:
    """What the tests read of an answer from either framework."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers


Call = Callable[[dict[str, str]], Answer]


def _flask(config: Any) -> tuple[Call, Callable[[], None]]:
    app = Flask(__name__)
    auth = FlaskAuth(config)
    auth.init_app(app)

    @app.get("/refunds")
    @auth.require(scope="orders:write", acr_values=[MFA], max_age=300)
    def refunds() -> dict[str, Any]:
        return {"sub": g.claims["sub"]}

    client = app.test_client()

    def call(headers: dict[str, str]) -> Answer:
        answer = client.get("/refunds", headers=headers)
        return Answer(answer.status_code, answer.get_json(), CaseInsensitiveDict(answer.headers.items()))

    return call, flask_protection(app).jwks.session.close


def _fastapi(config: Any) -> tuple[Call, Callable[[], None]]:
    app = FastAPI()
    FastApiAuth(config).init_app(app)

    @app.get("/refunds")
    def refunds(claims: Annotated[Claims, Depends(REFUNDS)]) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    server = serve_asgi(app)
    base_url = server.__enter__()

    def call(headers: dict[str, str]) -> Answer:
        answer = requests.get(f"{base_url}/refunds", headers=headers, timeout=10)
        return Answer(answer.status_code, answer.json(), answer.headers)

    def close() -> None:
        server.__exit__(None, None, None)
        fastapi_protection(app).jwks.session.close()

    return call, close


@pytest.fixture(params=["flask", "fastapi"])
def refunds(
    request: pytest.FixtureRequest, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[Call]:
    """A route demanding `orders:write`, a multi-factor login and one at most 5 minutes old, in either framework."""
    jwks_server.serve_keys(rsa_key)
    config = orders_config(jwks_server.url, dpop_replay_path=str(tmp_path / "replay.sqlite3"))
    call, close = (_flask if request.param == "flask" else _fastapi)(config)
    yield call
    close()


def _token(rsa_key: rsa.RSAPrivateKey, **claims: Any) -> str:
    claims.setdefault("scope", "orders:write")
    return sign(make_claims(audience=AUDIENCE, **claims), rsa_key)


def _challenge(description: str, scheme: str = "Bearer") -> str:
    value = (
        f'{scheme} realm="jwt-split", error="insufficient_user_authentication", '
        f'error_description="{description}", acr_values="multi-factor", max_age="300", {METADATA}'
    )
    return f"{value}, {ALGS}" if scheme == "DPoP" else value


@pytest.mark.parametrize(
    ("login", "description"),
    [
        ({"acr": "single-factor", "auth_time": 0}, "a login with acr one of multi-factor is required"),
        ({"auth_time": 0}, "the token does not say how the user logged in (no acr)"),
        ({"acr": MFA, "auth_time": -301}, "a more recent login is required: within the last 300 seconds"),
        ({"acr": MFA}, "the token does not say when the user logged in (no auth_time)"),
    ],
)
def test_a_login_short_of_the_routes_demand_is_401_insufficient_user_authentication(
    refunds: Call, rsa_key: rsa.RSAPrivateKey, login: dict[str, Any], description: str
) -> None:
    if "auth_time" in login:
        login = {**login, "auth_time": int(time.time()) + login["auth_time"]}
    answer = refunds({"Authorization": f"Bearer {_token(rsa_key, **login)}"})
    assert answer.status == 401
    assert answer.body == {"error": "insufficient_user_authentication", "error_description": description}
    assert answer.headers["WWW-Authenticate"] == _challenge(description)
    assert answer.headers["Cache-Control"] == "no-store"


def test_a_strong_recent_login_passes_and_a_missing_scope_is_still_403(
    refunds: Call, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    assert refunds({"Authorization": f"Bearer {_token(rsa_key, acr=MFA, auth_time=now - 10)}"}).status == 200
    answer = refunds({"Authorization": f"Bearer {_token(rsa_key, scope='orders:read', acr='single-factor')}"})
    assert (answer.status, answer.body["error"]) == (403, "insufficient_scope")


def test_a_dpop_requests_step_up_challenge_is_dpop_with_the_same_parameters(
    refunds: Call, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = _token(rsa_key, acr="single-factor", auth_time=int(time.time()), cnf={"jkt": thumbprint(ec_key)})
    proof = make_proof(ec_key, "GET", f"{RESOURCE}/refunds", token)
    answer = refunds({"Authorization": f"DPoP {token}", "DPoP": proof})
    assert (answer.status, answer.body["error"]) == (401, "insufficient_user_authentication")
    assert answer.headers["WWW-Authenticate"] == _challenge("a login with acr one of multi-factor is required", "DPoP")
    # The same token and a fresh proof, with a login strong enough, passes.
    strong = _token(rsa_key, acr=MFA, auth_time=int(time.time()), cnf={"jkt": thumbprint(ec_key)})
    proof = make_proof(ec_key, "GET", f"{RESOURCE}/refunds", strong)
    assert refunds({"Authorization": f"DPoP {strong}", "DPoP": proof}).status == 200
