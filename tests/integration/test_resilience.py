"""The resource verifies locally: it survives the issuer going down, hanging or coming late."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import StackFactory
from tests.support.processes import answers, wait_until
from tests.support.tokens import make_claims, new_rsa_key, sign


def test_resource_keeps_verifying_when_the_issuer_is_stopped(make_stack: StackFactory) -> None:
    stack = make_stack().start()
    token = stack.token("bob", "builder")["access_token"]
    stack.stop_issuer()
    assert not answers(f"{stack.issuer_url}/healthz")
    for _ in range(5):
        assert stack.get("/api/me", token).status_code == 200
    assert stack.get("/readyz").status_code == 200


def test_resource_keeps_verifying_when_the_issuer_hangs(make_stack: StackFactory) -> None:
    stack = make_stack(resource_env={"RESOURCE_JWKS_TIMEOUT": "0.5"}).start()
    token = stack.token("bob", "builder")["access_token"]
    stack.freeze_issuer()
    try:
        assert stack.get("/api/me", token).status_code == 200
        # A new kid makes the resource ask the hung issuer: it gives up quickly and says no.
        started = time.monotonic()
        stranger = sign(make_claims(issuer=stack.public_issuer), new_rsa_key(), kid="new-kid")
        response = stack.get("/api/me", stranger)
        assert response.status_code == 401
        assert time.monotonic() - started < 5
        assert stack.get("/api/me", token).status_code == 200
    finally:
        stack.thaw_issuer()


def test_burst_of_unknown_kids_fetches_the_jwks_at_most_twice_per_cooldown(make_stack: StackFactory) -> None:
    cooldown = 2.0
    workers = 2
    stack = make_stack(resource_env={"RESOURCE_JWKS_COOLDOWN": str(cooldown)}, workers=workers).start()
    time.sleep(cooldown)  # let the fetches made at start-up leave their cooldown window
    before = stack.jwks_fetches()
    key = new_rsa_key()
    tokens = [sign(make_claims(issuer=stack.public_issuer), key, kid=uuid.uuid4().hex) for _ in range(300)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda t: stack.get("/api/me", t).status_code, tokens))
    elapsed = time.monotonic() - started
    assert set(statuses) == {401}
    fetches = stack.jwks_fetches() - before
    windows = int(elapsed // cooldown) + 1
    # Per worker and window: the first unknown kid's fetch, and one follow-up shared by the
    # requests that waited on it (its answer may predate their key).
    assert 1 <= fetches <= 2 * workers * windows, (fetches, elapsed)


def test_resource_started_before_the_issuer_becomes_ready_when_it_appears(make_stack: StackFactory) -> None:
    stack = make_stack()
    stack.start_resource()
    assert stack.get("/readyz").status_code == 503
    waiting = stack.get("/api/me", sign(make_claims(issuer=stack.public_issuer), new_rsa_key()))
    assert waiting.status_code == 503
    assert waiting.json()["error"] == "temporarily_unavailable"
    assert "Retry-After" in waiting.headers

    stack.start_issuer()
    wait_until(lambda: stack.get("/readyz").status_code == 200, what="the resource to load keys")
    # Each worker retries on its own (once per cooldown); wait until every one holds keys.
    wait_until(stack.all_workers_hold_keys, what="every resource worker to load keys")
    token = stack.token("alice", "wonderland")["access_token"]
    assert stack.get("/api/me", token).status_code == 200
