"""`make demo` runs its narrated walk-through against a compose stack and proves every step.

When it cannot start the stack, it says why and what to do instead of only "it failed".
"""

from __future__ import annotations

import os
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
        "TERM": "dumb",
        **overrides,
    }


def test_demo_proves_each_step_of_the_argument(compose_images: None, tmp_path: Path) -> None:
    stack = ComposeStack(tmp_path)
    try:
        stack.start()
        result = run_demo({**stack.env, "DEMO_COMPOSE_PROJECT": stack.project, "TERM": "dumb"})
    finally:
        stack.close()
    assert result.returncode == 0, result.stdout + result.stderr
    proved = [line for line in result.stdout.splitlines() if line.startswith("PROVED:")]
    assert len(proved) == 6, result.stdout
    for claim in ("RS256", "answered 200", "only public keys", "refused with 401", "issuer down", "both tokens"):
        assert any(claim in line for line in proved), (claim, proved)
    assert "6 steps, 6 proved." in result.stdout
    assert "wonderland" not in result.stderr


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
