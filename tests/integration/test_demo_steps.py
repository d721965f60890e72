"""`make demo`'s DPoP and logout steps (scripts/demo_steps.py) prove what they say against real services.

scripts/demo runs them against the compose stack; here they run against the loopback stack,
registered as scripts/demo registers them, and their narration is checked line by line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.compose import REPO
from tests.support.stack import LoopbackStack

STEPS = REPO / "scripts" / "demo_steps.py"
PASSWORD = "a demo password for carol"
REDIRECT_URI = "http://127.0.0.1/callback"


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    """A loopback stack with the user and the client scripts/demo registers for its logout step."""
    stack = LoopbackStack(tmp_path_factory.mktemp("demo-steps"), reports=True)
    try:
        stack.start()
        added = stack.issuer_cli("users", "add", "carol", "--scope", "profile reports:read", stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        client = stack.issuer_cli(
            *("clients", "add", "demo-app", "--grant", "authorization_code", "--redirect-uri", REDIRECT_URI),
            *("--audience", "jwt-split-api", "--audience", "jwt-split-reports", "--replace"),
        )
        assert client.returncode == 0, client.stderr
        yield stack
    finally:
        stack.close()


def run_steps(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEMO_PASSWORD": PASSWORD}
    return subprocess.run(
        [sys.executable, str(STEPS), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_dpop_step_shows_a_stolen_bound_token_refused_three_ways(demo_stack: LoopbackStack) -> None:
    result = run_steps("dpop", "--username", "carol", demo_stack.issuer_url, demo_stack.resource_url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert 'token_type: DPoP, cnf: {"jkt": ' in out
    assert "the client, with its key -> 200" in out
    lines = out.splitlines()
    for label, error in (
        ("the stolen token as a Bearer token -> 401", 'error="invalid_token"'),
        ("the stolen token with the captured proof, replayed -> 401", 'error="invalid_dpop_proof"'),
        ("the stolen token with a proof signed by the thief's key -> 401", 'error="invalid_dpop_proof"'),
    ):
        at = lines.index(label)
        assert lines[at + 1].startswith("  WWW-Authenticate: DPoP "), lines[at + 1]
        assert error in lines[at + 1], lines[at + 1]
    assert "the DPoP proof was already used" in out
    assert "the DPoP proof was not signed by the key the access token is bound to" in out
    assert re.search(r"^PROVED: a DPoP-bound token is refused \(401\) as a bearer token", out, re.M), out
    assert PASSWORD not in out + result.stderr


def test_revocation_step_times_a_logout_at_both_apis_without_per_request_calls(demo_stack: LoopbackStack) -> None:
    result = run_steps(
        *("revocation", "--username", "carol", "--client-id", "demo-app"),
        *("--redirect-uri", REDIRECT_URI, "--issuer-metrics", demo_stack.issuer.metrics_url),
        *(demo_stack.issuer_url, demo_stack.resource_url, demo_stack.reports_url),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(
        r"^profile API token: aud \[\"jwt-split-api\", \".*/userinfo\"\], scope 'openid profile'", out, re.M
    )
    assert re.search(r"^reports API token: aud \"jwt-split-reports\", scope 'reports:read'", out, re.M), out
    assert f"GET {demo_stack.resource_url}/api/me -> 200" in out
    assert f"GET {demo_stack.reports_url}/api/caller -> 200" in out
    # While the APIs verified 100 calls, the issuer answered status lists only (first reads, then 304s
    # once a second: how many of each depends on how fast the calls went).
    assert "  issuer introspect.introspect during the calls: 0" in out
    assert "  issuer oidc.userinfo during the calls: 0" in out
    asked = re.search(r"^100 API calls in \d+\.\d s, (\d+) issuer requests: each API worker", out, re.M)
    assert asked is not None, out
    assert int(asked.group(1)) < 100, out
    assert re.search(r"^  issuer statuslist\.status_list answered (200|304): \d+$", out, re.M), out
    for name in ("profile API", "reports API"):
        timed = re.search(rf"^{name}: first 401 after (\d+\.\d\d) s", out, re.M)
        assert timed is not None, out
        assert float(timed.group(1)) < 2.0, out
    refused = re.findall(r"^  then 12/12 calls on fresh connections -> 401; .*revoked", out, re.M)
    assert len(refused) == 2, out
    assert "PROVED: after a logout both APIs refused its access tokens within 2 s, at every worker" in out
    assert PASSWORD not in out + result.stderr


def test_steps_without_a_password_say_where_it_goes(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != "DEMO_PASSWORD"}
    result = subprocess.run(
        [sys.executable, str(STEPS), "dpop", "http://127.0.0.1:9", "http://127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "DEMO_PASSWORD" in result.stderr
