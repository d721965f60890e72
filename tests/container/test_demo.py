"""`make demo` runs its narrated walk-through against a compose stack and proves every step.

When it cannot start the stack, it says why and what to do instead of only "it failed".
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.compose import REPO, ComposeStack, compose_available
from tests.support.processes import free_port

pytestmark = pytest.mark.container

DEMO = REPO / "scripts" / "demo"
MISSING_BASE = "jwt-split-no-such-base:missing"


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run scripts/demo with the given environment and capture what it says."""
    return subprocess.run([str(DEMO)], env=env, capture_output=True, text=True, timeout=300, check=False)


def demo_env(**overrides: str) -> dict[str, str]:
    """Return an environment for a demo of its own: a fresh project on free ports (nothing answers there)."""
    return {
        **os.environ,
        "DEMO_COMPOSE_PROJECT": f"jwtsplit-demo-{uuid.uuid4().hex[:8]}",
        "ISSUER_PORT": str(free_port()),
        "RESOURCE_PORT": str(free_port()),
        "REPORTS_PORT": str(free_port()),
        "TERM": "dumb",
        **overrides,
    }


def test_demo_proves_each_step_of_the_argument(compose_images: None, tmp_path: Path) -> None:
    stack = ComposeStack(tmp_path, reports=True)
    try:
        stack.start()
        result = run_demo({**stack.env, "DEMO_COMPOSE_PROJECT": stack.project, "TERM": "dumb"})
    finally:
        stack.close()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    proved = [line for line in out.splitlines() if line.startswith("PROVED:")]
    assert len(proved) == 11, out
    claims = (
        "RS256",
        "answered 200",
        "minted an admin token",
        "only public keys",
        "refused with 401",
        "401 invalid_token, both ways",
        "its own private_key_jwt token (sub reports-api)",
        "service-to-service call still works",
        "both tokens",
        "a stolen copy is worth nothing without the client's private key",
        "within 2 s, at every worker, while the issuer was asked only for status lists",
    )
    for claim in claims:
        assert any(claim in line for line in proved), (claim, proved)
    assert "11 steps, 11 proved." in out
    assert "wonderland" not in result.stderr
    # HS256: the API is sound against a guessed secret, and falls to the one stolen from its own files.
    assert "bob (scope profile) GET /api/admin -> 403" in out
    assert "signed with a guessed secret -> 401" in out
    assert '{"path": "/api/admin", "sub": "mallory", "scope": "profile admin"}' in out
    # RS256: nothing to steal, and every forgery with what the resource holds is refused.
    assert "no SECRET, PASSWORD or KEY variable in the resource's environment" in out
    assert "no private key anywhere in the resource container" in out
    forgeries = [line for line in out.splitlines() if line.startswith("forged with ")]
    assert {line.split()[2].split(":")[0] for line in forgeries} == {"jwk", "modulus", "jwks-document", "alg-none"}
    assert all(line.endswith("-> 401") for line in forgeries), forgeries
    # Audience isolation: a registered API's token is refused with invalid_token, the default API's accepted.
    assert re.search(
        r"^jwt-split-reports\s+reports:read\s+resource URIs: http://localhost:\d+\s+dpop_bound_access_tokens_required: (true|false)$",
        out,
        re.MULTILINE,
    ), out
    assert "at jwt-split-reports: token for jwt-split-api -> 401" in out
    # Service to service: the job's token is for the reports API; the profile API saw the reports API.
    assert '"sub":"nightly-report"' in out
    assert '"profile_api":{"aud":"jwt-split-api","scope":"profile","sub":"reports-api"}' in out
    assert '"aud":"jwt-split-reports"' in out
    assert 'error="invalid_token"' in out.split("== 6.")[1].split("== 7.")[0]
    assert "at jwt-split-api: token for jwt-split-reports -> 401, token for jwt-split-api -> 200" in out
    # DPoP: the stolen bound token is refused as Bearer, with the replayed proof and with another key's proof.
    dpop = out.split("== 10.")[1].split("== 11.")[0]
    assert "the client, with its key -> 200" in dpop
    for attempt, error in (
        ("as a Bearer token -> 401", 'error="invalid_token"'),
        ("with the captured proof, replayed -> 401", "the DPoP proof was already used"),
        ("with a proof signed by the thief's key -> 401", "not signed by the key the access token is bound to"),
    ):
        at = dpop.index(attempt)
        assert dpop[at:].splitlines()[1].startswith("  WWW-Authenticate: DPoP "), dpop
        assert error in dpop[at:].splitlines()[1], dpop
    # Logout: both APIs accepted, the issuer saw no per-request call, both refused within 2 s at every worker.
    logout = out.split("== 11.")[1]
    assert re.search(r"^GET http://127\.0\.0\.1:\d+/api/me -> 200$", logout, re.M), logout
    assert re.search(r"^GET http://127\.0\.0\.1:\d+/api/caller -> 200$", logout, re.M), logout
    assert "  issuer introspect.introspect during the calls: 0" in logout
    assert "  issuer oidc.userinfo during the calls: 0" in logout
    assert re.search(r"^  issuer statuslist\.status_list answered (200|304): \d+$", logout, re.M), logout
    for name in ("profile API", "reports API"):
        timed = re.search(rf"^{name}: first 401 after (\d+\.\d\d) s", logout, re.M)
        assert timed is not None, logout
        assert float(timed.group(1)) < 2.0, logout
    assert len(re.findall(r"^  then 12/12 calls on fresh connections -> 401; .*revoked", logout, re.M)) == 2, logout
    # The HS256 pair ran on loopback ports and was stopped when the demo ended.
    urls = re.search(r"^HS256 issuer: (http://127\.0\.0\.1:\d+), HS256 API: (http://127\.0\.0\.1:\d+)$", out, re.M)
    assert urls is not None, out
    for url in urls.groups():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()


def test_demo_without_a_docker_engine_says_to_set_one_up(tmp_path: Path) -> None:
    env = demo_env(DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    result = run_demo(env)
    assert result.returncode != 0, result.stdout
    assert "no Docker engine" in result.stderr, result.stderr
    assert "make docker" in result.stderr, result.stderr
    assert "scripts/docker-setup" in result.stderr, result.stderr


def test_demo_without_its_base_image_says_how_to_build_without_a_registry() -> None:
    problem = compose_available()
    assert problem is None, problem
    # The base must be absent so that the build has to pull it; with no registry the pull fails at once.
    absent = subprocess.run(["docker", "image", "inspect", MISSING_BASE], capture_output=True, check=False)
    assert absent.returncode != 0, f"{MISSING_BASE} exists locally; remove it"
    env = demo_env(PYTHON_IMAGE=MISSING_BASE)
    try:
        result = run_demo(env)
    finally:
        compose = ["docker", "compose", "-p", env["DEMO_COMPOSE_PROJECT"], "-f", str(REPO / "compose.yaml")]
        subprocess.run(
            [*compose, "down", "-v", "--remove-orphans", "--timeout", "5"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert result.returncode != 0, result.stdout
    message = result.stderr
    assert f"base image {MISSING_BASE}" in message, message
    assert "scripts/docker-setup" in message, message
    assert "jwt-split-python:bookworm" in message, message
    assert "PYTHON_IMAGE" in message, message
    assert "docs/containers.md" in message, message
