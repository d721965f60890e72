"""The resource verifies locally: it survives the issuer going down, hanging or coming late."""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import StackFactory
from tests.support.processes import answers, issuer_process, pids_that_logged, resource_process, wait_until
from tests.support.stack import REPORTS_AUDIENCE, LoopbackStack, reports_registration
from tests.support.tokens import make_claims, new_rsa_key, sign


@pytest.mark.deployment
def test_resource_keeps_verifying_when_the_issuer_is_stopped(make_stack: StackFactory) -> None:
    stack = make_stack().start()
    token = stack.token("bob", "builder")["access_token"]
    stack.stop_issuer()
    assert not answers(f"{stack.issuer_url}/healthz")
    for _ in range(5):
        assert stack.get("/api/me", token).status_code == 200
    assert stack.get("/readyz").status_code == 200


@pytest.mark.deployment
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


@pytest.mark.deployment
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


def test_readyz_is_503_until_every_worker_holds_keys(tmp_path: Path) -> None:
    issuer = issuer_process(tmp_path, data_dir=tmp_path / "issuer")
    resource = resource_process(tmp_path, issuer, workers=3)
    resource.start()
    try:
        resource.wait_answering()
        resource.wait_all_workers("jwks fetch failed; keeping the keys held")  # no issuer yet
        frozen = resource.worker_pids()[0]
        os.kill(frozen, signal.SIGSTOP)  # this worker cannot load keys until it is thawed
        try:
            issuer.start()
            issuer.wait_answering()
            resource.wait_ready(
                lambda: len(pids_that_logged(resource.log(), "jwks loaded")) >= 2, what="the other workers' keys"
            )
            probes = [requests.get(f"{resource.url}/readyz", timeout=5) for _ in range(6)]
            assert {probe.status_code for probe in probes} == {503}
            assert probes[0].json()["reason"] == "1 of 3 workers hold no verification keys yet"
        finally:
            os.kill(frozen, signal.SIGCONT)
        wait_until(lambda: answers(f"{resource.url}/readyz"), what="every worker to hold keys")
        assert len(pids_that_logged(resource.log(), "jwks loaded")) == 3
    finally:
        resource.stop()
        issuer.stop()


def test_every_worker_holds_keys_within_a_second_of_a_late_issuer(make_stack: StackFactory) -> None:
    # A long kid-miss cooldown: it must not be what a worker without keys waits for.
    stack = make_stack(workers=4, resource_env={"RESOURCE_JWKS_COOLDOWN": "60"})
    stack.start_resource()
    time.sleep(3)  # the issuer starts 3 s after the API, as it may under `make run`
    stack.start_issuer()
    answered = time.monotonic()
    wait_until(lambda: stack.get("/readyz").status_code == 200, timeout=10, interval=0.05, what="readiness")
    assert time.monotonic() - answered < 1.5
    token = stack.token("alice", "wonderland")["access_token"]
    # Each request on a connection of its own, so the workers share them: none may refuse.
    assert [stack.get("/api/me", token).status_code for _ in range(40)] == [200] * 40


def test_the_reports_api_is_ready_only_when_every_worker_holds_keys_and_a_service_token(tmp_path: Path) -> None:
    stack = LoopbackStack(tmp_path, workers=2, reports=True)
    try:
        # Registered before the issuer runs (the CLI works on its data), as `make run` does.
        public_url = stack.reports.env["REPORTS_PUBLIC_URL"]
        for command in reports_registration(public_url, f"{stack.reports.url}/client-jwks.json"):
            assert stack.issuer_cli(*command).returncode == 0
        key = new_rsa_key()
        nightly = stack.register_client(key, "--audience", REPORTS_AUDIENCE, "--scope", "reports:read")
        stack.start_resource()
        stack.reports.start().wait_answering()
        stack.reports.wait_all_workers("could not get a service token from the issuer")  # no issuer yet
        stack.start_issuer()
        wait_until(lambda: stack.get_reports("/readyz").status_code == 200, timeout=30, interval=0.05)
        token = stack.service_token(nightly, key, resource=REPORTS_AUDIENCE).json()["access_token"]
        statuses = [stack.get_reports("/api/report", token).status_code for _ in range(10)]
        assert statuses == [200] * 10
    finally:
        stack.close()
