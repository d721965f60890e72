"""Token Status Lists on a running stack: the lists the issuer serves, and the revocations that reach them.

Each test uses users and clients of its own (or alice's fresh logins), so the shared stack is
left as it was found. The issuer's workers allocate indexes concurrently, on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
import requests

from issuer.statuslist import bit, decode
from jwt_verifier.jose import load_verification_key
from tests.support.stack import Stack
from tests.support.tokens import new_rsa_key

PUBLIC_GRANTS = ("--grant", "password", "--grant", "refresh_token")


def _reference(access_token: str) -> dict[str, Any]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    reference: dict[str, Any] = claims["status"]["status_list"]
    return reference


def _url(stack: Stack, uri: str) -> str:
    assert uri.startswith(f"{stack.public_issuer}/statuslists/")
    return stack.issuer_url + uri.removeprefix(stack.public_issuer)


def _list_claims(stack: Stack, uri: str) -> dict[str, Any]:
    """Fetch a list and verify it with the issuer's JWKS, as an API does."""
    response = requests.get(_url(stack, uri), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/statuslist+jwt"
    header = jwt.get_unverified_header(response.text)
    assert header["typ"] == "statuslist+jwt"
    jwks = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=10).json()["keys"]
    keys = dict(load_verification_key(jwk) for jwk in jwks)
    claims: dict[str, Any] = jwt.decode(
        response.text, keys[header["kid"]], algorithms=["RS256"], issuer=stack.public_issuer
    )
    assert claims["sub"] == uri
    return claims


def _status(stack: Stack, access_token: str) -> int:
    reference = _reference(access_token)
    return bit(decode(_list_claims(stack, reference["uri"])["status_list"]["lst"]), reference["idx"])


def _post(stack: Stack, path: str, **form: str) -> requests.Response:
    return requests.post(f"{stack.issuer_url}{path}", data=form, timeout=10)


@pytest.mark.deployment
def test_a_token_refers_to_a_signed_list_served_with_an_etag(stack: Stack) -> None:
    body = stack.token()
    reference = _reference(body["access_token"])
    claims = _list_claims(stack, reference["uri"])
    assert claims["status_list"]["bits"] == 1
    assert claims["ttl"] >= 1
    assert bit(decode(claims["status_list"]["lst"]), reference["idx"]) == 0
    first = requests.get(_url(stack, reference["uri"]), timeout=10)
    again = requests.get(_url(stack, reference["uri"]), headers={"If-None-Match": first.headers["ETag"]}, timeout=10)
    assert again.status_code == 304
    assert again.headers["ETag"] == first.headers["ETag"]
    aggregation = requests.get(f"{stack.issuer_url}/statuslists", timeout=10).json()
    assert reference["uri"] in aggregation["status_lists"]
    metadata = requests.get(f"{stack.issuer_url}/.well-known/oauth-authorization-server", timeout=10).json()
    assert metadata["status_list_aggregation_endpoint"] == f"{stack.public_issuer}/statuslists"


def test_an_unknown_list_is_404(stack: Stack) -> None:
    for list_id in ("0" * 32, "nope"):
        response = requests.get(f"{stack.issuer_url}/statuslists/{list_id}", timeout=10)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_revoking_a_refresh_token_sets_the_bit_of_its_familys_access_tokens(stack: Stack) -> None:
    body = stack.token()
    refreshed = _post(stack, "/token", grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
    assert _reference(refreshed["access_token"]) == _reference(body["access_token"])
    assert _status(stack, body["access_token"]) == 0
    assert _post(stack, "/revoke", token=refreshed["refresh_token"], client_id="cli").status_code == 200
    assert _status(stack, body["access_token"]) == 1
    assert _status(stack, refreshed["access_token"]) == 1


def test_revoking_an_access_token_sets_its_bit(stack: Stack) -> None:
    body = stack.token()
    assert _post(stack, "/revoke", token=body["access_token"], client_id="cli").status_code == 200
    assert _status(stack, body["access_token"]) == 1


def _login(stack: Stack) -> dict[str, Any]:
    """Log alice in with the password grant, waiting out a 429 as a client should.

    The password limits charge each attempt before its check and refund it after (so their bounds
    hold under any concurrency): eight logins of one account at once may briefly exceed the
    per-account bound, and the surplus is told to retry.
    """
    form = {"grant_type": "password", "username": "alice", "password": "wonderland"}
    for _ in range(20):
        response = _post(stack, "/token", **form)
        if response.status_code != 429:
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError("still rate limited after 20 tries")


def test_parallel_logins_get_distinct_indexes_and_parallel_refreshes_share_theirs(stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        logins = list(pool.map(lambda _: _login(stack), range(24)))
        slots = [tuple(_reference(body["access_token"]).values()) for body in logins]
        assert len(set(slots)) == len(slots)
        first = logins[0]
        refreshes = list(
            pool.map(
                lambda body: _post(stack, "/token", grant_type="refresh_token", refresh_token=body["refresh_token"]),
                logins[:8],
            )
        )
    for login, refreshed in zip(logins[:8], refreshes, strict=True):
        assert refreshed.status_code == 200, refreshed.text
        assert _reference(refreshed.json()["access_token"]) == _reference(login["access_token"])
    assert _status(stack, first["access_token"]) == 0


def test_service_tokens_get_an_index_each_and_deleting_the_client_sets_them(stack: Stack) -> None:
    key = new_rsa_key()
    client_id = stack.register_client(key, "--scope", "profile")
    tokens = [stack.service_token(client_id, key).json()["access_token"] for _ in range(2)]
    assert _reference(tokens[0]) != _reference(tokens[1])
    deleted = stack.issuer_cli("clients", "delete", client_id)
    assert deleted.returncode == 0, deleted.stderr
    assert [_status(stack, token) for token in tokens] == [1, 1]


def test_narrowing_a_client_from_the_cli_sets_the_bits_of_what_it_no_longer_permits(stack: Stack) -> None:
    client_id = f"app-{uuid.uuid4().hex[:8]}"
    assert stack.issuer_cli("clients", "add", client_id, *PUBLIC_GRANTS).returncode == 0
    admin = stack.token(client_id=client_id)
    profile = stack.token(client_id=client_id, scope="profile")
    replaced = stack.issuer_cli("clients", "add", client_id, *PUBLIC_GRANTS, "--scope", "profile", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert _status(stack, admin["access_token"]) == 1
    assert _status(stack, profile["access_token"]) == 0


@pytest.mark.deployment
def test_deleting_a_user_from_the_cli_sets_the_bits_of_their_tokens(stack: Stack) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("users", "add", name, "--scope", "profile", stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    body = stack.token(name, "correct horse battery")
    assert stack.issuer_cli("users", "delete", name).returncode == 0
    assert _status(stack, body["access_token"]) == 1


def test_narrowing_a_user_from_the_cli_sets_the_bits_of_what_they_no_longer_have(stack: Stack) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("users", "add", name, "--scope", "profile admin", stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    admin = stack.token(name, "correct horse battery")
    profile = stack.token(name, "correct horse battery", scope="profile")
    updated = stack.issuer_cli("users", "update", name, "--scope", "profile")
    assert updated.returncode == 0, updated.stderr
    assert _status(stack, admin["access_token"]) == 1
    assert _status(stack, profile["access_token"]) == 0
    refreshed = _post(stack, "/token", grant_type="refresh_token", refresh_token=admin["refresh_token"]).json()
    assert refreshed["scope"] == "profile"
    assert _status(stack, refreshed["access_token"]) == 0


def test_narrowing_an_api_from_the_cli_sets_the_bits_of_what_it_no_longer_has(stack: Stack) -> None:
    audience = f"api-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("apis", "add", audience, "--scope", "profile admin")
    assert added.returncode == 0, added.stderr
    admin = stack.token(resource=audience)
    profile = stack.token(resource=audience, scope="profile")
    other = stack.token()  # alice's token for the default API
    replaced = stack.issuer_cli("apis", "add", audience, "--scope", "profile", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert [_status(stack, body["access_token"]) for body in (admin, profile, other)] == [1, 0, 0]
    refreshed = _post(stack, "/token", grant_type="refresh_token", refresh_token=admin["refresh_token"]).json()
    assert (refreshed["scope"], _status(stack, refreshed["access_token"])) == ("profile", 0)
