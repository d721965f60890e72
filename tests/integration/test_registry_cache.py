"""The registration cache on a running stack: the CLI's changes reach every worker within its TTL.

Each worker answers token requests from the clients and APIs it read less than
ISSUER_REGISTRY_CACHE_TTL seconds ago (issuer.cache). The CLI is another process: its
change is seen once the entries read before it have expired, so at most TTL seconds later,
whichever worker answers.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable

import requests

from tests.conftest import StackFactory
from tests.support.stack import Stack

TTL = 1.0
MARGIN = 0.3  # seconds for the request itself on a busy machine
ASKS = 8  # requests after the TTL: both workers answer some
PUBLIC_GRANTS = ("--grant", "password", "--grant", "refresh_token")


def _password_grant(stack: Stack, client_id: str, **form: str) -> requests.Response:
    data = {"grant_type": "password", "client_id": client_id, "username": "alice", "password": "wonderland", **form}
    return requests.post(f"{stack.issuer_url}/token", data=data, timeout=10)


def _answer(response: requests.Response) -> tuple[int, str]:
    body = response.json()
    return response.status_code, body.get("error") or body["scope"]


def _seen_within_the_ttl(
    change: Callable[[], object], ask: Callable[[], requests.Response], expected: tuple[int, str]
) -> None:
    """Make `change` once the workers cached the registration; every answer a TTL later is `expected`."""
    for _ in range(ASKS):
        assert ask().status_code == 200  # cached by whichever workers answered
    change()
    time.sleep(TTL + MARGIN)
    assert [_answer(ask()) for _ in range(ASKS)] == [expected] * ASKS


def test_the_clis_registration_changes_are_seen_within_the_cache_ttl(make_stack: StackFactory) -> None:
    stack = make_stack(issuer_env={"ISSUER_REGISTRY_CACHE_TTL": str(TTL)}).start()
    client_id = f"app-{uuid.uuid4().hex[:8]}"
    stack.issuer_cli_ok("clients", "add", client_id, *PUBLIC_GRANTS)

    # A client's scopes narrowed.
    narrow = functools.partial(
        stack.issuer_cli_ok, "clients", "add", client_id, *PUBLIC_GRANTS, "--scope", "profile", "--replace"
    )
    _seen_within_the_ttl(narrow, functools.partial(_password_grant, stack, client_id), (200, "profile"))

    # An API removed.
    audience = f"api-{uuid.uuid4().hex[:8]}"
    stack.issuer_cli_ok("apis", "add", audience, "--scope", "profile")
    remove = functools.partial(stack.issuer_cli_ok, "apis", "delete", audience)
    ask = functools.partial(_password_grant, stack, client_id, resource=audience)
    _seen_within_the_ttl(remove, ask, (400, "invalid_target"))

    # A client deleted.
    delete = functools.partial(stack.issuer_cli_ok, "clients", "delete", client_id)
    _seen_within_the_ttl(delete, functools.partial(_password_grant, stack, client_id), (401, "invalid_client"))
