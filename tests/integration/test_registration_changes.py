"""Which token, for which API and scope, after which registration change, on a running stack.

The operator changes registrations with the CLI while the issuer serves; the next grant and
the next refresh follow them. Each test registers clients and users of its own.
"""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import requests

from tests.support.stack import REPORTS_AUDIENCE, Stack

PUBLIC_GRANTS = ("--grant", "password", "--grant", "refresh_token")


def _public_client(stack: Stack, *args: str) -> str:
    client_id = f"app-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("clients", "add", client_id, *PUBLIC_GRANTS, *args)
    assert added.returncode == 0, added.stderr
    return client_id


def _post(stack: Stack, **form: str) -> requests.Response:
    return requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)


def _scope(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    scope: str = claims["scope"]
    return scope


def test_a_client_narrowed_and_moved_to_another_api_no_longer_refreshes_admin_tokens(stack: Stack) -> None:
    client_id = _public_client(stack)
    first = stack.token(client_id=client_id)
    assert first["scope"] == "admin profile"
    replaced = stack.issuer_cli(
        "clients", "add", client_id, *PUBLIC_GRANTS, "--scope", "profile", "--audience", REPORTS_AUDIENCE, "--replace"
    )
    assert replaced.returncode == 0, replaced.stderr
    refresh = _post(stack, grant_type="refresh_token", client_id=client_id, refresh_token=first["refresh_token"])
    assert (refresh.status_code, refresh.json()["error"]) == (400, "invalid_grant")


def test_a_client_narrowed_refreshes_to_its_new_scopes(stack: Stack) -> None:
    client_id = _public_client(stack)
    first = stack.token(client_id=client_id)
    replaced = stack.issuer_cli("clients", "add", client_id, *PUBLIC_GRANTS, "--scope", "profile", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    refresh = _post(stack, grant_type="refresh_token", client_id=client_id, refresh_token=first["refresh_token"])
    assert _scope(refresh) == "profile"


def test_a_user_narrowed_refreshes_to_their_new_scopes_and_with_none_left_not_at_all(stack: Stack) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("users", "add", name, "--scope", "profile admin", stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    first = stack.token(name, "correct horse battery")
    assert stack.issuer_cli("users", "update", name, "--scope", "profile").returncode == 0
    second = _post(stack, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert _scope(second) == "profile"
    assert stack.issuer_cli("users", "update", name, "--scope", "reports:read").returncode == 0
    third = _post(stack, grant_type="refresh_token", refresh_token=second.json()["refresh_token"])
    assert (third.status_code, third.json()["error"]) == (400, "invalid_grant")


def test_a_client_with_none_of_the_apis_scopes_gets_no_token_for_it(stack: Stack) -> None:
    client_id = _public_client(stack, "--scope", "reports:read")
    refused = _post(stack, grant_type="password", client_id=client_id, username="alice", password="wonderland")
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")


def test_a_client_deleted_and_registered_again_inherits_none_of_its_grants(stack: Stack) -> None:
    # The same id, registered again (another owner, say): the earlier refresh tokens are revoked.
    client_id = _public_client(stack)
    first = stack.token(client_id=client_id)
    deleted = stack.issuer_cli("clients", "delete", client_id)
    assert deleted.returncode == 0, deleted.stderr
    again = stack.issuer_cli("clients", "add", client_id, *PUBLIC_GRANTS)
    assert again.returncode == 0, again.stderr
    refresh = _post(stack, grant_type="refresh_token", client_id=client_id, refresh_token=first["refresh_token"])
    assert (refresh.status_code, refresh.json()["error"]) == (400, "invalid_grant")
    assert '"token.revoked"' in deleted.stdout + deleted.stderr
