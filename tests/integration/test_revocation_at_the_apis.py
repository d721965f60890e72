"""A revocation reaches the APIs' local verifiers through the issuer's status lists, not per request.

The issuer sets a token's bit (issuer.statuslist); each API worker holds the lists and re-reads
them conditionally about once a second (jwt_verifier.status), so a revoked token is refused by
every worker of both APIs within seconds, while the issuer is never asked about a token.
How fast, as a distribution, is `make bench`'s business; these tests bound it loosely.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from tests.conftest import StackFactory
from tests.support.stack import REPORTS_AUDIENCE, Stack
from tests.support.tokens import new_rsa_key

# Several requests on fresh connections, so that each of an API's workers answers some.
PROBES = 12
DEADLINE = 5.0


Get = Callable[..., requests.Response]


def _answers(get: Get, path: str, token: str) -> list[requests.Response]:
    return [get(path, token, headers={"Connection": "close"}) for _ in range(PROBES)]


def _wait_refused(get: Get, path: str, token: str) -> float:
    """Return the seconds until `path` refuses `token`; fail past DEADLINE."""
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        if get(path, token).status_code == 401:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{path} still accepts the revoked token after {DEADLINE} s")


@pytest.mark.deployment
def test_a_revoked_user_token_is_refused_by_every_worker_of_the_profile_api(stack: Stack) -> None:
    body = stack.token()
    token = body["access_token"]
    assert all(r.status_code == 200 for r in _answers(stack.get, "/api/me", token))
    revoked = requests.post(
        f"{stack.issuer_url}/revoke", data={"token": body["refresh_token"], "client_id": "cli"}, timeout=10
    )
    assert revoked.status_code == 200, revoked.text
    _wait_refused(stack.get, "/api/me", token)
    time.sleep(1.5)  # one refresh interval more: every worker has re-read the list by now
    for response in _answers(stack.get, "/api/me", token):
        assert response.status_code == 401, response.text
        challenge = response.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in challenge
        assert "revoked" in challenge


def test_a_revoked_service_token_is_refused_by_the_reports_api(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = stack.register_client(key, "--audience", REPORTS_AUDIENCE, "--scope", "reports:read", prefix="rev")
    answer = stack.service_token(client_id, key, resource=REPORTS_AUDIENCE)
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert stack.get_reports("/api/caller", token).status_code == 200
    deleted = stack.issuer_cli("clients", "delete", client_id)
    assert deleted.returncode == 0, deleted.stderr
    _wait_refused(stack.get_reports, "/api/caller", token)
    time.sleep(1.5)
    for response in _answers(stack.get_reports, "/api/caller", token):
        assert response.status_code == 401, response.text
        assert "revoked" in response.headers["WWW-Authenticate"]


@pytest.mark.deployment
def test_held_lists_keep_the_apis_answering_while_the_issuer_is_down(make_stack: StackFactory) -> None:
    stack = make_stack(reports=True).start()
    user = stack.token()["access_token"]
    key = new_rsa_key()
    client_id = stack.register_client(key, "--audience", REPORTS_AUDIENCE, "--scope", "reports:read", prefix="down")
    service = stack.service_token(client_id, key, resource=REPORTS_AUDIENCE).json()["access_token"]
    # A token minted just before the outage names a list the APIs hold from the issuer's index.
    time.sleep(1.5)
    stack.stop_issuer()
    for _ in range(PROBES):
        assert stack.get("/api/me", user, headers={"Connection": "close"}).status_code == 200
        caller = stack.get_reports("/api/caller", service, headers={"Connection": "close"})
        assert caller.status_code == 200, caller.text
        # The reports API's own call to the profile API, with its own service token, works too.
        report = stack.get_reports("/api/report", service, headers={"Connection": "close"})
        assert report.status_code == 200, report.text


def test_past_the_stale_window_a_token_with_status_gets_503_not_500(make_stack: StackFactory) -> None:
    stack = make_stack(resource_env={"RESOURCE_STATUS_STALE_SECONDS": "1"}).start()
    token = stack.token()["access_token"]
    assert stack.get("/api/me", token).status_code == 200
    stack.stop_issuer()
    started = time.monotonic()
    while time.monotonic() - started < 15:
        response = stack.get("/api/me", token)
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert response.json()["error"] == "temporarily_unavailable"
            assert "Retry-After" in response.headers
            return
        time.sleep(0.2)
    raise AssertionError("the stale list was used past its window")
