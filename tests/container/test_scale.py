"""The scale-out overlay: three issuer replicas behind HAProxy, on PostgreSQL and Redis.

One overlay for the module (compose.yaml + compose.scale.yaml), in a compose project of its
own on free ports. The balancer is reached on its published port, as users reach it; each
replica directly with `docker compose exec --index N`, which publishes nothing extra.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.support.compose import REPO, ComposeStack
from tests.support.processes import wait_until

pytestmark = pytest.mark.container

REPLICAS = 3
# The key store re-reads the database when its snapshot is a second old (KeyPolicy.reload_interval).
RELOAD_SECONDS = 1.0

# Run inside a replica: print the kid its tokens carry (ready), then ask it for tokens until
# 2.5 s after the rotation time it reads on stdin; print every (time sent, kid) and its JWKS.
WATCH_KIDS = r"""
import base64, json, select, sys, time, urllib.parse, urllib.request as u
opener = u.build_opener(u.ProxyHandler({}))
form = urllib.parse.urlencode({"grant_type": "password", "username": "alice", "password": "wonderland"}).encode()
def kid():
    with opener.open("http://127.0.0.1:8000/token", form, timeout=10) as response:
        header = json.load(response)["access_token"].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
print(kid(), flush=True)
seen, until, told = [], time.time() + 60, False
while time.time() < until:
    if not told and select.select([sys.stdin], [], [], 0)[0]:
        until, told = float(sys.stdin.readline()) + 2.5, True
    sent = time.time()
    seen.append((sent, kid()))
    time.sleep(0.02)
with opener.open("http://127.0.0.1:8000/.well-known/jwks.json", timeout=10) as response:
    jwks = json.load(response)
print(json.dumps({"seen": seen, "jwks": jwks}))
"""

# `python -m issuer keys rotate --now`, in process, then the time it returned: no earlier than
# the rotation's commit, and later by a few milliseconds only (not the interpreter's exit).
ROTATE_NOW = """
import time
from issuer.cli import main
main(["keys", "rotate", "--now"], standalone_mode=False)
print(time.time())
"""


@pytest.fixture(scope="module")
def scaled(compose_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    root = tmp_path_factory.mktemp("scale")
    env = {"SCALE_SECRETS_DIR": str(root / "secrets")}
    made = subprocess.run(
        [str(REPO / "scripts" / "scale"), "secrets"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    running = ComposeStack(root, files=[REPO / "compose.scale.yaml"], env=env)
    try:
        running.up()
        wait_until(running.all_workers_hold_keys, timeout=60, what="every resource worker to load keys")
    except BaseException:
        running.close()
        raise
    yield running
    running.close()


def replicas(scaled: ComposeStack) -> list[dict[str, Any]]:
    """Return `docker compose ps` of the issuer's containers."""
    listing = scaled.compose("ps", "--format", "json", "issuer").stdout
    return [json.loads(line) for line in listing.splitlines() if line.strip()]


def replicas_that_served(scaled: ComposeStack, path: str) -> Counter[str]:
    """Return how many requests for `path` each replica logged, by its compose prefix (issuer-N)."""
    served: Counter[str] = Counter()
    for line in scaled.compose("logs", "--no-color", "issuer").stdout.splitlines():
        prefix, _, text = line.partition("|")
        text = text.strip()
        if text.startswith("{"):
            event = json.loads(text)
            if event.get("msg") == "request" and event.get("path") == path:
                served[prefix.strip()] += 1
    return served


def kid_of(token: str) -> str:
    """Return the kid in a JWT's header."""
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def test_the_shared_secrets_are_private_and_ignored_by_git(scaled: ComposeStack) -> None:
    secrets = Path(scaled.env["SCALE_SECRETS_DIR"])
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name in ("issuer.env", "postgres.env"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600, name
    ignored = subprocess.run(["git", "check-ignore", "-q", "var/scale/issuer.env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, "the default secrets file var/scale/issuer.env is not git-ignored"
    shared = dict(line.split("=", 1) for line in (secrets / "issuer.env").read_text().splitlines())
    assert set(shared) == {"ISSUER_DATABASE_URL", "ISSUER_KEY_ENCRYPTION_KEY", "ISSUER_SESSION_SECRET"}
    resource_env = scaled.compose("exec", "-T", "resource", "env").stdout
    assert not any(value in resource_env for value in shared.values())


def test_three_healthy_replicas_take_turns_behind_the_balancer(scaled: ComposeStack) -> None:
    running = replicas(scaled)
    assert len(running) == REPLICAS, running
    assert [replica["Health"] for replica in running] == ["healthy"] * REPLICAS, running
    names = {f"issuer-{index}" for index in range(1, REPLICAS + 1)}
    probe = f"/scale-probe-{uuid.uuid4().hex}"

    def every_replica_served() -> bool:
        for _ in range(REPLICAS):
            assert requests.get(f"{scaled.issuer_url}{probe}", timeout=10).status_code == 404
        return set(replicas_that_served(scaled, probe)) == names

    wait_until(every_replica_served, timeout=30, interval=0.5, what="the balancer to send requests to every replica")


def test_a_token_from_the_balancer_verifies_at_the_resource(scaled: ComposeStack) -> None:
    tokens = scaled.token()
    response = scaled.get("/api/me", tokens["access_token"])
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"
    # The resource fetched the public keys through the balancer: it calls http://issuer:8000.
    balancer_log = scaled.compose("logs", "--no-color", "--no-log-prefix", "balancer").stdout
    assert "GET /.well-known/jwks.json" in balancer_log, balancer_log[-2000:]


def test_a_rotation_through_one_replica_reaches_every_replica_within_a_second(scaled: ComposeStack) -> None:
    watchers = [
        subprocess.Popen(
            scaled.command("exec", "-T", "--index", str(index), "issuer", "python", "-c", WATCH_KIDS),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=scaled.env,
        )
        for index in range(1, REPLICAS + 1)
    ]
    try:
        before = {watcher.stdout.readline().strip() for watcher in watchers if watcher.stdout is not None}
        assert len(before) == 1, before  # every replica signed with the same key before
        rotated = scaled.compose("exec", "-T", "--index", "1", "issuer", "python", "-c", ROTATE_NOW)
        described, committed_text = rotated.stdout.strip().splitlines()
        outputs = [watcher.communicate(f"{committed_text}\n", timeout=90) for watcher in watchers]
    finally:
        for watcher in watchers:
            watcher.kill()
    new, state = described.split()[:2]
    committed = float(committed_text)
    assert state == "active", described
    assert new not in before
    first_seen, documents = [], []
    for index, (out, err) in enumerate(outputs, start=1):
        assert out.strip(), f"replica {index}: {err}"
        result = json.loads(out.splitlines()[-1])
        seen = [(float(sent), str(kid)) for sent, kid in result["seen"]]
        late = {kid for sent, kid in seen if sent >= committed + RELOAD_SECONDS}
        assert late == {new}, f"replica {index}, a second after the rotation, signed with {late}, not {new}"
        first_seen.append(round(min(sent for sent, kid in seen if kid == new) - committed, 3))
        documents.append(result["jwks"])
        assert new in {key["kid"] for key in result["jwks"]["keys"]}, result["jwks"]
    assert all(document == documents[0] for document in documents), documents
    print(f"first token request answered with the new kid, seconds after the rotation: {first_seen}")
    # The resource, which has never seen the new key, accepts a token it signed from the balancer.
    token = scaled.token()["access_token"]
    assert kid_of(token) == new
    wait_until(
        lambda: scaled.get("/api/me", token).status_code == 200, timeout=5, what="the resource to accept the new key"
    )


def test_the_reports_api_calls_the_profile_api_through_the_balancer(scaled: ComposeStack) -> None:
    """Registration on PostgreSQL, a service token from any replica, client keys fetched by every replica."""
    secret = uuid.uuid4().hex * 2
    added = scaled.issuer_cli(
        "clients", "add", "nightly", "--grant", "client_credentials", "--audience", "jwt-split-reports",
        "--scope", "reports:read", "--secret-stdin", "--replace", stdin=secret + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    for _ in range(2 * REPLICAS):  # the reports API's own token comes from whichever replica answers
        token = requests.post(
            f"{scaled.issuer_url}/token",
            data={"grant_type": "client_credentials", "resource": "jwt-split-reports"},
            auth=("nightly", secret),
            timeout=10,
        )
        assert token.status_code == 200, token.text
        report = scaled.get_reports("/api/report", token.json()["access_token"])
        assert report.status_code == 200, report.text
        assert report.json()["profile_api"]["sub"] == "reports-api"
