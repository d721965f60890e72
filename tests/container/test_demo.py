"""`make demo` runs its narrated walk-through against a compose stack and proves every step."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.compose import REPO, ComposeStack

pytestmark = pytest.mark.container


def test_demo_proves_each_step_of_the_argument(compose_images: None, tmp_path: Path) -> None:
    stack = ComposeStack(tmp_path)
    try:
        stack.start()
        result = subprocess.run(
            [str(REPO / "scripts" / "demo")],
            env={
                **stack.env,
                "DEMO_COMPOSE_PROJECT": stack.project,
                "TERM": "dumb",
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        stack.close()
    assert result.returncode == 0, result.stdout + result.stderr
    proved = [line for line in result.stdout.splitlines() if line.startswith("PROVED:")]
    assert len(proved) == 6, result.stdout
    for claim in ("RS256", "answered 200", "only public keys", "refused with 401", "issuer down", "both tokens"):
        assert any(claim in line for line in proved), (claim, proved)
    assert "6 steps, 6 proved." in result.stdout
    assert "wonderland" not in result.stderr
