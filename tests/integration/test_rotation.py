"""Key rotation is a non-event: traffic keeps flowing with zero failed requests for valid tokens.

New tokens are minted and used continuously, and recent tokens are used again, while the
operator stages a rotation, makes an emergency rotation and retires the oldest key. Timings are
shortened (JWKS max-age 2 s, activation delay 3 s) so the whole lifecycle fits in a test.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import jwt
import pytest
import requests

from tests.conftest import StackFactory
from tests.support.processes import log_events, wait_until
from tests.support.schema import audit_schema, errors
from tests.support.stack import Stack

FAST_LIFECYCLE = {
    "ISSUER_JWKS_MAX_AGE": "2",
    "ISSUER_KEY_ACTIVATION_DELAY": "3",
    "ISSUER_LOGIN_RATE_LIMIT": "100000 per minute",
    "ISSUER_ADDRESS_RATE_LIMIT": "100000 per minute",
}
FAST_CACHE = {"RESOURCE_JWKS_MIN_TTL": "1", "RESOURCE_JWKS_COOLDOWN": "1"}


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


@dataclass
class Traffic:
    """Mint a token and use it, and use a few recent ones again, until stopped."""

    stack: Stack
    withdrawn: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    requests_made: int = 0
    kids_seen: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        recent: deque[str] = deque(maxlen=5)
        session = requests.Session()
        while not self.stop.is_set():
            response = session.post(
                f"{self.stack.issuer_url}/token",
                data={"grant_type": "password", "username": "bob", "password": "builder"},
                timeout=10,
            )
            if response.status_code != 200:
                self.failures.append(f"token endpoint answered {response.status_code}: {response.text[:200]}")
                continue
            token = response.json()["access_token"]
            if not self.kids_seen or self.kids_seen[-1] != kid_of(token):
                self.kids_seen.append(kid_of(token))
            recent.append(token)
            for candidate in list(recent):
                answer = session.get(
                    f"{self.stack.resource_url}/api/me", headers={"Authorization": f"Bearer {candidate}"}, timeout=10
                )
                self.requests_made += 1
                if answer.status_code != 200 and kid_of(candidate) not in self.withdrawn:
                    self.failures.append(
                        f"{answer.status_code} for a token of {kid_of(candidate)}: {answer.text[:200]}"
                    )


@pytest.mark.deployment
def test_rotation_staged_emergency_and_retirement_fail_no_request(make_stack: StackFactory) -> None:
    stack = make_stack(issuer_env=FAST_LIFECYCLE, resource_env=FAST_CACHE).start()
    traffic = Traffic(stack)
    worker = threading.Thread(target=traffic.run, daemon=True)
    worker.start()
    try:
        wait_until(lambda: traffic.requests_made > 10, what="traffic to flow")
        first = traffic.kids_seen[-1]

        # The key is staged as it is made; asking `keys list` afterwards races the activation delay.
        staged, state = stack.issuer_cli_ok("keys", "rotate").split()[:2]
        assert state == "next"
        wait_until(lambda: traffic.kids_seen[-1] == staged, timeout=30, what="the staged key to sign")
        assert f"{first}  retiring" in stack.issuer_cli_ok("keys", "list")
        time.sleep(1.5)

        emergency = stack.issuer_cli_ok("keys", "rotate", "--now").split()[0]
        wait_until(lambda: traffic.kids_seen[-1] == emergency, timeout=30, what="the emergency key to sign")
        time.sleep(1.5)

        traffic.withdrawn.add(first)  # retiring it withdraws it at once: its tokens die by design
        stack.issuer_cli_ok("keys", "retire", first)
        time.sleep(3)
    finally:
        traffic.stop.set()
        worker.join(timeout=30)

    states = {line.split()[0]: line.split()[1] for line in stack.issuer_cli_ok("keys", "list").splitlines()}
    assert states == {first: "retired", staged: "retiring", emergency: "active"}
    assert traffic.kids_seen == [first, staged, emergency]
    assert traffic.requests_made > 50
    assert traffic.failures == []


@pytest.mark.sqlite_only  # a 30 s wait; the key steps on PostgreSQL: the test above
def test_retiring_key_is_withdrawn_once_its_tokens_have_expired(make_stack: StackFactory) -> None:
    stack = make_stack(
        issuer_env={**FAST_LIFECYCLE, "ISSUER_ACCESS_TOKEN_TTL": "30", "ISSUER_KEY_RETIRE_GRACE": "0"},
        resource_env=FAST_CACHE,
    ).start()
    old = kid_of(stack.token("bob", "builder")["access_token"])
    new = stack.issuer_cli_ok("keys", "rotate", "--now").split()[0]

    def published() -> set[str]:
        keys = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=10).json()["keys"]
        return {key["kid"] for key in keys}

    # Each issuer worker re-reads the key states within a second.
    wait_until(lambda: published() == {old, new}, what="both keys to be published")
    wait_until(lambda: published() == {new}, timeout=45, interval=1, what="the retiring key to be withdrawn")
    states = {line.split()[0]: line.split()[1] for line in stack.issuer_cli_ok("keys", "list").splitlines()}
    assert states == {old: "retired", new: "active"}
    # The retirement fell due: the issuer's audit trail says the system made it, not a request.
    trail = [entry for entry in log_events(stack.issuer_logs()) if entry.get("audit") is True]
    assert all(errors(entry, audit_schema()) == [] for entry in trail)
    retired = [entry for entry in trail if entry["event"] == "key.retired" and entry.get("kid") == old]
    assert [entry["source"] for entry in retired] == ["system"], retired
    assert all("address" not in entry for entry in retired)
