"""The scale-out overlay: three issuer replicas behind HAProxy, on PostgreSQL and Redis.

One overlay for the module (compose.yaml + compose.scale.yaml), in a compose project of its
own on free ports. The balancer is reached on its published port, as users reach it; each
replica directly with `docker compose exec --index N`, which publishes nothing extra.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.support.compose import REPO, ComposeStack
from tests.support.processes import wait_until
from tests.support.traffic import Traffic

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

# Run inside a replica: connect to it, read a refresh token and say so, then present the token
# at the start time read next (shared by every racer); print when it was sent and the answer.
PRESENT_REFRESH = r"""
import http.client, json, sys, time, urllib.parse
form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": sys.stdin.readline().strip()})
connection = http.client.HTTPConnection("127.0.0.1", 8000, timeout=10)
connection.connect()
print("ready", flush=True)
start = float(sys.stdin.readline())
time.sleep(max(0.0, start - time.time()))
sent = time.time()
connection.request("POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
response = connection.getresponse()
print(json.dumps({"sent": sent, "status": response.status, "body": json.loads(response.read())}))
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
    # The traffic test logs in a few hundred times a minute from one address.
    limits = {"ISSUER_LOGIN_RATE_LIMIT": "100000 per minute", "ISSUER_ADDRESS_RATE_LIMIT": "100000 per minute"}
    running = ComposeStack(root, files=[REPO / "compose.scale.yaml"], env=env, issuer_env=limits)
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
    assert response.json()["claims"]["preferred_username"] == "alice"
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


# -- one refresh token at two replicas at once ---------------------------------------------------


def present_at_once(scaled: ComposeStack, indexes: tuple[int, int], refresh_token: str) -> list[dict[str, Any]]:
    """Present one refresh token at the replicas `indexes` (from inside each) at one shared instant."""
    racers = [
        subprocess.Popen(
            scaled.command("exec", "-T", "--index", str(index), "issuer", "python", "-c", PRESENT_REFRESH),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=scaled.env,
        )
        for index in indexes
    ]
    try:
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write(f"{refresh_token}\n")
            racer.stdin.flush()
        for racer in racers:  # every racer is connected to its replica: the start time can be near
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready", racer.communicate(timeout=30)
        start = f"{time.time() + 1}\n"
        for racer in racers:  # to all before waiting for any
            assert racer.stdin is not None
            racer.stdin.write(start)
            racer.stdin.flush()
        outputs = [racer.communicate(timeout=30) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    results = []
    for index, (out, err) in zip(indexes, outputs, strict=True):
        assert out.strip(), f"replica {index}: {err}"
        results.append(json.loads(out.splitlines()[-1]))
    return results


def test_one_refresh_token_at_two_replicas_at_once_gets_one_successor_as_on_one_issuer(
    scaled: ComposeStack,
) -> None:
    """Within the default 30 s reuse grace both presentations get the family's one successor."""
    for indexes in ((1, 1), (1, 2)):  # twice at one replica, then at two replicas: the same outcome
        tokens = scaled.token()
        results = present_at_once(scaled, indexes, tokens["refresh_token"])
        skew = abs(results[0]["sent"] - results[1]["sent"])
        print(f"replicas {indexes}: {[r['status'] for r in results]}, sent {skew * 1000:.1f} ms apart")
        assert [r["status"] for r in results] == [200, 200], results
        assert skew < 0.05, f"the two requests were sent {skew:.3f} s apart: not concurrent"
        successors = {r["body"]["refresh_token"] for r in results}
        assert len(successors) == 1, "two different successors: the token was spent twice"
        # The successor is the family's live token, at whichever replica the balancer picks.
        successor = requests.post(
            f"{scaled.issuer_url}/token",
            data={"grant_type": "refresh_token", "refresh_token": successors.pop()},
            timeout=10,
        )
        assert successor.status_code == 200, successor.text


# -- one replica killed under steady traffic -------------------------------------------------------


def reports_token(scaled: ComposeStack) -> str:
    """Register a client of the reports API and return its access token from the balancer."""
    client, secret = f"reader-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex * 2
    added = scaled.issuer_cli(
        "clients", "add", client, "--grant", "client_credentials", "--audience", "jwt-split-reports",
        "--scope", "reports:read", "--secret-stdin", stdin=secret + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = requests.post(
        f"{scaled.issuer_url}/token",
        data={"grant_type": "client_credentials", "resource": "jwt-split-reports"},
        auth=(client, secret),
        timeout=10,
    )
    assert token.status_code == 200, token.text
    access: str = token.json()["access_token"]
    return access


def all_replicas_healthy(scaled: ComposeStack) -> bool:
    """Return whether every replica's container runs and is healthy."""
    return [replica.get("Health") for replica in replicas(scaled)] == ["healthy"] * REPLICAS


def test_one_replica_killed_under_traffic_fails_only_token_requests_in_flight_on_it(scaled: ComposeStack) -> None:
    traffic = Traffic(scaled.issuer_url, scaled.resource_url, scaled.reports_url, reports_token(scaled))
    threads = [threading.Thread(target=traffic.user) for _ in range(4)]
    threads.append(threading.Thread(target=traffic.reporter))
    victim = next(replica["Name"] for replica in replicas(scaled) if replica["Name"].endswith("-issuer-2"))
    try:
        began = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(6)
        killed = time.monotonic()
        subprocess.run(["docker", "kill", victim], capture_output=True, text=True, timeout=30, check=True)
        kill_returned = time.monotonic()
        time.sleep(max(0.0, 22 - (time.monotonic() - began)))
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join()
    duration = time.monotonic() - began
    subprocess.run(["docker", "start", victim], capture_output=True, text=True, timeout=60, check=True)
    # Back to three for the tests that follow, whatever this one finds.
    wait_until(lambda: all_replicas_healthy(scaled), timeout=60, interval=1, what="the killed replica to be healthy")

    calls = traffic.calls
    failed = [c for c in calls if not c.ok]
    # The balancer never replays a POST that reached a replica (deploy/haproxy.cfg): a token
    # request the killed replica was serving fails, with HAProxy's 502 or, on a kept-alive client
    # connection, with that connection closed unanswered. Nothing else may fail.
    in_flight = [
        c for c in failed if c.kind in ("login", "refresh") and c.started <= kill_returned and c.ended >= killed
    ]
    kinds = ("login", "refresh", "api", "report")
    by_kind = {kind: sum(1 for c in calls if c.kind == kind) for kind in kinds}
    failed_by_kind = {kind: sum(1 for c in failed if c.kind == kind) for kind in kinds}
    after_kill = [c for c in calls if c.started > kill_returned]
    balancer_log = scaled.compose("logs", "--no-color", "--no-log-prefix", "balancer").stdout
    down = re.findall(r"Server issuers/(issuer\d+) is (?:going )?DOWN", balancer_log)
    print(
        f"\n{len(calls)} requests in {duration:.1f} s, {len(after_kill)} sent after the kill; by kind {by_kind}; "
        f"failed {failed_by_kind}, of which token requests in flight on the killed replica: {len(in_flight)}; "
        f"the balancer took {sorted(set(down))} down; `docker kill {victim}` took {kill_returned - killed:.3f} s"
    )
    for call in failed:
        print(
            f"  {call.kind} {call.outcome}: sent {call.started - killed:+.3f} s after the kill began, "
            f"ended {call.ended - killed:+.3f} s"
        )
    # httplog's fields: frontend backend/server timers status bytes cookies termination-state ... "method path"
    aborted = [
        line.strip()
        for line in balancer_log.splitlines()
        if (answer := re.search(r" issuers/(issuer\d+) \S+ (-?\d+) \S+ \S+ \S+ (S\S+) ", line))
        and answer[1] in down
        and answer[2] != "200"
    ]
    for line in aborted:
        print(f"  balancer, the killed replica aborted: {line[:300]}")
    assert duration >= 20
    assert all(by_kind[kind] > 20 for kind in kinds), by_kind
    assert len(after_kill) > 50
    assert [c for c in failed if c.kind in ("api", "report")] == []
    assert [c for c in failed if c not in in_flight] == [], "token requests failed that were not in flight at the kill"
    assert len(in_flight) <= 4  # one request at a time per user thread
    # Each one the balancer's own 502, logged against the killed replica (counted, not guessed),
    # or an answer cut short: a replica killed after its answer's head left has HAProxy forward
    # the head, then close the client's connection mid-body (seen once in CI).
    cut_short = [c for c in in_flight if c.outcome != "502"]
    assert all(c.outcome.startswith(("ChunkedEncodingError", "ConnectionError")) for c in cut_short), in_flight
    assert len(aborted) == len(in_flight) - len(cut_short), aborted
    assert down, "the balancer never took the killed replica out"


# -- PostgreSQL stopped and started again -----------------------------------------------------------


@dataclass
class ApiWatch:
    """Call the profile API with one token every 50 ms from a thread; keep what was not 200."""

    url: str
    token: str
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Call until stopped."""
        with requests.Session() as session:
            while not self.stop.wait(0.05):
                try:
                    headers = {"Authorization": f"Bearer {self.token}"}
                    status = str(session.get(f"{self.url}/api/me", headers=headers, timeout=5).status_code)
                except requests.RequestException as exc:
                    status = type(exc).__name__
                self.calls += 1
                if status != "200":
                    self.failures.append(status)


def assert_unavailable(response: requests.Response) -> None:
    """Assert a 503 that says when to retry and leaks nothing."""
    assert response.status_code == 503, (response.status_code, response.headers, response.text[:500])
    assert int(response.headers["Retry-After"]) > 0, response.headers
    assert response.json()["error"] == "temporarily_unavailable", response.text
    for leak in ("Traceback", "psycopg", "sqlalchemy", "OperationalError", "postgres:5432"):
        assert leak not in response.text


def test_postgres_stopped_gives_503_with_retry_after_while_the_api_verifies_and_recovers_by_itself(
    scaled: ComposeStack,
) -> None:
    before = scaled.token()
    token_url = f"{scaled.issuer_url}/token"
    login = {"grant_type": "password", "username": "alice", "password": "wonderland"}
    watch = ApiWatch(scaled.resource_url, before["access_token"])
    watcher = threading.Thread(target=watch.run)
    watcher.start()
    statuses: Counter[int] = Counter()
    try:
        scaled.compose("stop", "--timeout", "10", "postgres")
        stopped = time.monotonic()
        while time.monotonic() - stopped < 4:  # every replica, in turn, several times
            for form in (login, {"grant_type": "refresh_token", "refresh_token": before["refresh_token"]}):
                response = requests.post(token_url, data=form, timeout=10)
                statuses[response.status_code] += 1
                assert_unavailable(response)
        jwks_status = requests.get(f"{scaled.issuer_url}/.well-known/jwks.json", timeout=10).status_code
        scaled.compose("start", "postgres")
        restarted = time.monotonic()

        def logins_work_everywhere() -> bool:
            """Return whether the last round of logins (two per replica, round robin) all succeeded."""
            answers = [requests.post(token_url, data=login, timeout=10).status_code for _ in range(2 * REPLICAS)]
            statuses.update(answers)
            return answers == [200] * (2 * REPLICAS)

        wait_until(logins_work_everywhere, timeout=30, interval=0.2, what="every replica to issue tokens again")
        recovered = time.monotonic() - restarted
        after = requests.post(
            token_url, data={"grant_type": "refresh_token", "refresh_token": before["refresh_token"]}, timeout=10
        )
    finally:
        watch.stop.set()
        watcher.join()
        scaled.compose("start", "postgres")  # harmless when it runs; the teardown needs it
    print(
        f"\ntoken answers {dict(statuses)}; JWKS during the outage {jwks_status}; issuing again "
        f"{recovered:.2f} s after PostgreSQL started; API calls {watch.calls}, failed {watch.failures}"
    )
    assert 500 not in statuses
    assert jwks_status == 200  # served from each replica's last snapshot of the keys
    assert after.status_code == 200, after.text  # the family outlived the outage
    assert watch.calls > 40
    assert watch.failures == []
