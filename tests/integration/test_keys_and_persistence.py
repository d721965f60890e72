"""Operator actions on a running stack: emergency rotation and issuer restarts."""

from __future__ import annotations

import jwt
import pytest
import requests

from tests.conftest import StackFactory
from tests.support.processes import wait_until


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def test_emergency_rotation_is_accepted_without_restarting_the_resource(make_stack: StackFactory) -> None:
    # Polling for the new key mints many tokens: lift the per-account limit.
    stack = make_stack(issuer_env={"ISSUER_LOGIN_RATE_LIMIT": "1000 per minute"}).start()
    old = stack.token("alice", "wonderland")["access_token"]

    rotated = stack.issuer_cli("keys", "rotate", "--now")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split()[0]
    assert " active " in rotated.stdout

    # Every issuer worker picks the new key up within its reload interval (one second).
    minted: list[str] = []

    def signs_with_new_key() -> bool:
        minted.append(stack.token("alice", "wonderland")["access_token"])
        return _kid(minted[-1]) == new_kid

    wait_until(signs_with_new_key, interval=0.3, what="the new signing key")
    new = minted[-1]
    assert _kid(new) != _kid(old)
    assert stack.get("/api/me", new).status_code == 200
    assert stack.get("/api/me", old).status_code == 200  # the retiring key is still published

    listing = stack.issuer_cli("keys", "list").stdout
    states = {line.split()[0]: line.split()[1] for line in listing.splitlines()}
    assert states == {new_kid: "active", _kid(old): "retiring"}


@pytest.mark.deployment
def test_issuer_restart_keeps_keys_and_users(make_stack: StackFactory) -> None:
    stack = make_stack().start()
    added = stack.issuer_cli("users", "add", "carol", "--scope", "profile", stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    before = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=10).json()
    token = stack.token("carol", "correct horse battery")["access_token"]

    stack.stop_issuer()
    stack.start_issuer()

    after = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=10).json()
    assert after == before
    again = stack.token("carol", "correct horse battery")["access_token"]
    assert _kid(again) == _kid(token)
    assert stack.get("/api/me", token).status_code == 200
    assert stack.get("/api/me", again).json()["claims"]["preferred_username"] == "carol"
