"""Attacks on "a change of a registration or a user ends every access token it no longer permits".

Found from outside, against running services (the issuer CLI as the operator, the reports API
as the API that must refuse): each test makes a change an operator makes, then shows a token
the new registration does not permit that the reports API still accepts seconds later, or that
a worker still issues. Each failed on the code they were found in (an attacker's pass, 2026-12-07),
and passes since its fix.

RFC 6749 sections 3.3 and 6, RFC 9700 section 2.3 (least privilege), RFC 9449 (DPoP),
draft-ietf-oauth-status-list (an API refuses a token whose bit is set within about 2 s).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests

from tests.conftest import StackFactory
from tests.support.stack import REPORTS_AUDIENCE, LoopbackStack, Stack
from tests.support.tokens import new_rsa_key

PASSWORD = "correct horse battery staple 42"
REVOCATION_REACHES_THE_APIS = 4.0  # seconds: status lists re-read every second, plus a busy machine
CACHE_TTL = 5.0  # ISSUER_REGISTRY_CACHE_TTL allows 0-60: a worker's copy of a registration lives this long


def _reports_api(stack: Stack, scope: str, *options: str) -> None:
    """Register the reports API again with these scopes (its public URL kept, as an operator would)."""
    assert isinstance(stack, LoopbackStack)
    public_url = stack.reports.env["REPORTS_PUBLIC_URL"]
    stack.issuer_cli_ok(
        "apis", "add", REPORTS_AUDIENCE, "--scope", scope, "--resource-uri", public_url, "--replace", *options
    )


def _token(stack: Stack, form: dict[str, str]) -> dict[str, Any]:
    response = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refused_in_time(stack: Stack, access_token: str) -> bool:
    """Return whether the reports API refuses the token (401) within the time a revocation takes."""
    deadline = time.monotonic() + REVOCATION_REACHES_THE_APIS
    while time.monotonic() < deadline:
        if stack.get_reports("/api/caller", access_token).status_code == 401:
            return True
        time.sleep(0.25)
    return False


def test_a_token_of_a_family_refreshed_narrower_then_wider_ends_when_its_scope_is_taken_away(
    make_stack: StackFactory,
) -> None:
    """The family's status-list row records the scope of the token that created it, not what the family holds.

    A narrowing ends a family's row and forgets it; the family's next token writes a new row
    with *that token's* scope. Refreshed once with `scope=reports:write`, the row says
    `reports:write`; the next refresh without `scope` gets `reports:read reports:write` on the
    same index. Taking `reports:read` away from the user then ends nothing (the row permits
    it), and the reports API keeps accepting the `reports:read` token for its lifetime.
    """
    stack = make_stack(reports=True).start()
    _reports_api(stack, "reports:read reports:write reports:extra")
    user = f"u{uuid.uuid4().hex[:8]}"
    stack.issuer_cli_ok(
        "users", "add", user, "--scope", "reports:read reports:write reports:extra", stdin=PASSWORD + "\n"
    )
    app = f"app-{uuid.uuid4().hex[:8]}"
    stack.issuer_cli_ok("clients", "add", app, "--grant", "password", "--grant", "refresh_token")
    login = {"grant_type": "password", "client_id": app, "username": user, "password": PASSWORD}
    refresh_token = _token(stack, {**login, "resource": REPORTS_AUDIENCE})["refresh_token"]

    stack.issuer_cli_ok("users", "update", user, "--scope", "reports:read reports:write")  # ends the family's row
    refresh = {"grant_type": "refresh_token", "client_id": app}
    narrow = _token(stack, {**refresh, "refresh_token": refresh_token, "scope": "reports:write"})
    assert narrow["scope"] == "reports:write"
    wide = _token(stack, {**refresh, "refresh_token": narrow["refresh_token"]})
    assert wide["scope"] == "reports:read reports:write"
    assert stack.get_reports("/api/caller", wide["access_token"]).status_code == 200

    stack.issuer_cli_ok("users", "update", user, "--scope", "reports:write")  # reports:read taken away
    assert _refused_in_time(stack, wide["access_token"]), "a reports:read token outlived the user's reports:read"


def test_a_client_deleted_and_registered_again_gives_its_old_key_no_token_from_a_workers_older_copy(
    make_stack: StackFactory,
) -> None:
    """`revision` starts again at 0 for a registration made anew: a worker's copy of the deleted one passes the check.

    The client is deleted and registered again under its id with another key and another
    scope (a new owner: RFC 9700 section 4.14, "inherits no earlier grant"). A worker that read
    the old registration less than ISSUER_REGISTRY_CACHE_TTL ago authenticates the OLD key and
    grants the OLD scope; the grant's write checks the client's revision, which is 0 again, and
    passes. docs/configuration.md promises such a grant gets no token (503 or invalid_client).
    """
    stack = make_stack(reports=True, issuer_env={"ISSUER_REGISTRY_CACHE_TTL": str(CACHE_TTL)}).start()
    old_key, new_key = new_rsa_key(), new_rsa_key()
    client_id = stack.register_client(old_key, "--scope", "reports:read")
    for _ in range(8):  # both workers read the registration now
        assert stack.service_token(client_id, old_key, resource=REPORTS_AUDIENCE).status_code == 200
    started = time.monotonic()
    stack.issuer_cli_ok("clients", "delete", client_id)
    stack.register_client(new_key, "--scope", "profile", client_id=client_id)
    answers = [stack.service_token(client_id, old_key, resource=REPORTS_AUDIENCE) for _ in range(8)]
    assert time.monotonic() - started < CACHE_TTL, "too slow to show it: the workers' copies expired meanwhile"
    issued = [answer.json()["access_token"] for answer in answers if answer.status_code == 200]
    assert issued == [], f"the deleted registration's key got {len(issued)} tokens after the id was registered again"


def test_an_api_deleted_and_registered_again_narrower_gets_no_token_of_its_old_scopes(
    make_stack: StackFactory,
) -> None:
    """The same for an API: `apis delete` then `apis add` with fewer scopes starts again at revision 0.

    A worker's copy of the old registration (both scopes) grants both, and the grant's write
    finds the API at the revision it read (0), so the token carries the scope the API no longer
    defines. An API registered once and never changed is at revision 0: the common case.
    """
    stack = make_stack(issuer_env={"ISSUER_REGISTRY_CACHE_TTL": str(CACHE_TTL)}).start()
    audience = f"api-{uuid.uuid4().hex[:8]}"
    stack.issuer_cli_ok("apis", "add", audience, "--scope", "x:read x:write")
    key = new_rsa_key()
    client_id = stack.register_client(key, "--scope", "x:read x:write")
    for _ in range(8):  # both workers read the registration now
        assert stack.service_token(client_id, key, resource=audience).status_code == 200
    started = time.monotonic()
    stack.issuer_cli_ok("apis", "delete", audience)
    stack.issuer_cli_ok("apis", "add", audience, "--scope", "x:write")
    answers = [stack.service_token(client_id, key, resource=audience) for _ in range(8)]
    assert time.monotonic() - started < CACHE_TTL, "too slow to show it: the workers' copies expired meanwhile"
    scopes = [answer.json()["scope"] for answer in answers if answer.status_code == 200]
    assert "x:read x:write" not in scopes, f"tokens of the deleted registration's scopes: {scopes}"


def _bearer_token_of_a_new_client(stack: Stack, key: Any) -> tuple[str, str]:
    """Register a client of `reports:read` with `key`; return its id and a bearer token it got for the reports API."""
    client_id = stack.register_client(key, "--scope", "reports:read")
    answer = stack.service_token(client_id, key, resource=REPORTS_AUDIENCE)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer"
    return client_id, str(answer.json()["access_token"])


def test_bearer_tokens_for_an_api_made_dpop_only_end(make_stack: StackFactory) -> None:
    """`apis add --replace --require-dpop` refuses new bearer tokens, and ends those already issued.

    The API's registration now permits DPoP-bound tokens only (RFC 9449); a narrowing that
    ended grants by scope alone left a bearer token issued a moment before accepted by the
    reports API for its whole lifetime.
    """
    stack = make_stack(reports=True).start()
    key = new_rsa_key()
    client_id, token = _bearer_token_of_a_new_client(stack, key)
    assert stack.get_reports("/api/caller", token).status_code == 200

    _reports_api(stack, "reports:read", "--require-dpop")
    assert stack.service_token(client_id, key, resource=REPORTS_AUDIENCE).status_code == 400  # no new bearer token
    assert _refused_in_time(stack, token), "a bearer token outlived its API's DPoP-only registration"


def test_bearer_tokens_of_a_client_made_dpop_only_end(make_stack: StackFactory) -> None:
    """`clients add --replace --require-dpop` (RFC 9449 `dpop_bound_access_tokens`): its bearer tokens end."""
    stack = make_stack(reports=True).start()
    key = new_rsa_key()
    client_id, token = _bearer_token_of_a_new_client(stack, key)

    stack.register_client(key, "--scope", "reports:read", "--require-dpop", "--replace", client_id=client_id)
    assert stack.service_token(client_id, key, resource=REPORTS_AUDIENCE).status_code == 400  # no new bearer token
    assert _refused_in_time(stack, token), "a bearer token outlived its client's DPoP-only registration"


def test_tokens_for_a_deleted_api_end(make_stack: StackFactory) -> None:
    """`apis delete` ends the tokens issued for the API: a deleted API permits none.

    They stayed good until they expired (the CLI's help said so), and opened an API registered
    again under the name.
    """
    stack = make_stack(reports=True).start()
    key = new_rsa_key()
    client_id, token = _bearer_token_of_a_new_client(stack, key)

    stack.issuer_cli_ok("apis", "delete", REPORTS_AUDIENCE)
    refused = stack.service_token(client_id, key, resource=REPORTS_AUDIENCE)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target")
    assert _refused_in_time(stack, token), "a token outlived the deletion of its API"
