"""Two issuer replicas on one PostgreSQL (and one Redis): they behave as one issuer, and losing one loses nothing.

Every test starts real gunicorn issuers (one worker each, to keep the module quick on two
cores) on a database of its own; the load-balancer tests put HAProxy in front of them
(tests/support/haproxy.py), the way the compose overlay does.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from issuer.clients import Client, ClientStore, builtin_clients
from issuer.db import Database
from tests.support import databases
from tests.support.haproxy import Balancer, haproxy
from tests.support.processes import GunicornService, NotStarted, free_port, issuer_process, resource_process, wait_until
from tests.support.traffic import Traffic

# Cheap password hashing and no lockouts: the traffic here is many logins from one address.
REPLICA_ENV = {
    "ISSUER_ARGON2_TIME_COST": "1",
    "ISSUER_ARGON2_MEMORY_KIB": "8192",
    "ISSUER_LOGIN_RATE_LIMIT": "100000 per minute",
    "ISSUER_ADDRESS_RATE_LIMIT": "100000 per minute",
}


def _kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass
class Replicas:
    """Issuer replicas sharing a database, a key-encryption key, a session secret and Redis."""

    root: Path
    env: dict[str, str]
    public_url: str
    services: list[GunicornService] = field(default_factory=list)

    def add(self, *, workers: int = 1) -> GunicornService:
        """Prepare one more replica (not started)."""
        index = len(self.services)
        log_dir = self.root / f"replica{index}"
        log_dir.mkdir(parents=True, exist_ok=True)
        service = issuer_process(
            log_dir, public_url=self.public_url, data_dir=log_dir / "data", env=self.env, workers=workers, threads=4
        )
        self.services.append(service)
        return service

    def start(self) -> None:
        """Start every replica at once (they migrate the database in turns) and wait until each answers."""
        for service in self.services:
            service.start()
        for service in self.services:
            service.wait_answering(timeout=40)

    def cli(self, service: GunicornService, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `python -m issuer ARGS` with one replica's settings, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "issuer", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **service.env},
            timeout=60,
            check=False,
        )

    def close(self) -> None:
        """Stop every replica."""
        for service in self.services:
            service.stop()


@pytest.fixture
def make_replicas(tmp_path: Path, redis_server: str) -> Iterator[Callable[..., Replicas]]:
    """Build replica sets on a database URL; all are stopped after the test."""
    made: list[Replicas] = []

    def factory(database_url: str, *, count: int = 2, public_url: str | None = None, **env: str) -> Replicas:
        replicas = Replicas(
            tmp_path / f"set{len(made)}",
            {
                "ISSUER_DATABASE_URL": database_url,
                "ISSUER_KEY_ENCRYPTION_KEY": _kek(),
                "ISSUER_SESSION_SECRET": secrets.token_urlsafe(48),
                "ISSUER_RATE_LIMIT_STORAGE": redis_server,
                **REPLICA_ENV,
                **env,
            },
            public_url or f"http://localhost:{free_port()}",
        )
        made.append(replicas)
        for _ in range(count):
            replicas.add()
        return replicas

    yield factory
    for replicas in made:
        replicas.close()


# -- HTTP helpers --------------------------------------------------------------------------------


def password_grant(base: str, session: requests.Session | None = None, *, timeout: float = 10) -> requests.Response:
    """Log bob in at `base` with the password grant."""
    form = {"grant_type": "password", "username": "bob", "password": "builder"}
    return (session or requests).post(f"{base}/token", data=form, timeout=timeout)


def refresh_grant(
    base: str, token: str, session: requests.Session | None = None, *, timeout: float = 10
) -> requests.Response:
    """Spend a refresh token at `base`."""
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return (session or requests).post(f"{base}/token", data=form, timeout=timeout)


def tokens_from(base: str) -> dict[str, Any]:
    """Return bob's tokens from a password grant at `base`."""
    response = password_grant(base)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def race(bases: tuple[str, str], refresh_token: str) -> list[requests.Response]:
    """Present one refresh token at both `bases` at the same instant (a barrier, one thread each)."""
    barrier = threading.Barrier(len(bases))

    def present(base: str) -> requests.Response:
        with requests.Session() as session:
            session.get(f"{base}/healthz", timeout=10)  # connect first: the barrier then releases two sends
            barrier.wait(timeout=10)
            return refresh_grant(base, refresh_token, session)

    with ThreadPoolExecutor(max_workers=len(bases)) as pool:
        return list(pool.map(present, bases))


def assert_unavailable(response: requests.Response) -> None:
    """Assert a 503 that tells the client when to retry and leaks nothing."""
    assert response.status_code == 503, (response.status_code, response.text[:500])
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"] == "temporarily_unavailable"
    for leak in ("Traceback", "psycopg", "sqlalchemy", "OperationalError", "127.0.0.1"):
        assert leak not in response.text


# -- 1. one refresh token at two replicas at once ----------------------------------------------


def _race_outcome(bases: tuple[str, str]) -> tuple[list[int], list[str], str | None]:
    """Race one fresh refresh token at `bases`; return the statuses, errors and the winners' successor."""
    first = tokens_from(bases[0])
    answers = race(bases, first["refresh_token"])
    statuses = sorted(a.status_code for a in answers)
    errors = [a.json()["error"] for a in answers if a.status_code != 200]
    successors = {a.json()["refresh_token"] for a in answers if a.status_code == 200}
    assert len(successors) <= 1, "two different successors: the token was spent twice"
    return statuses, errors, successors.pop() if successors else None


def test_concurrent_refresh_at_two_replicas_gets_one_successor_within_the_grace(
    postgres_url: str, make_replicas: Callable[..., Replicas]
) -> None:
    replicas = make_replicas(postgres_url)
    replicas.start()
    a, b = (service.url for service in replicas.services)
    for bases in ((a, a), (a, b)):  # on one issuer, then on two replicas: the same outcome
        statuses, errors, successor = _race_outcome(bases)
        assert (statuses, errors) == ([200, 200], []), bases
        assert successor is not None
        # The successor is the family's one live token, at either replica.
        assert refresh_grant(b, successor).status_code == 200


def test_concurrent_refresh_at_two_replicas_without_grace_has_one_winner_and_revokes_the_family(
    postgres_url: str, make_replicas: Callable[..., Replicas]
) -> None:
    replicas = make_replicas(postgres_url, ISSUER_REFRESH_REUSE_GRACE="0")
    replicas.start()
    a, b = (service.url for service in replicas.services)
    for bases in ((a, a), (a, b)):
        statuses, errors, successor = _race_outcome(bases)
        assert (statuses, errors) == ([200, 400], ["invalid_grant"]), bases
        assert successor is not None
        # The loser presented a spent token: reuse, so the winner's successor is revoked with the family.
        for base in (a, b):
            refused = refresh_grant(base, successor)
            assert refused.status_code == 400
            assert refused.json()["error"] == "invalid_grant"


def test_replicas_seeding_the_builtin_clients_at_once_all_start(postgres_url: str) -> None:
    stores = [ClientStore(Database(postgres_url)) for _ in range(4)]  # one engine per replica
    try:
        stores[0].database.upgrade()
        builtins = builtin_clients(("http://localhost:8001/callback",))
        for _ in range(5):  # replicas starting together, a few times over
            barrier = threading.Barrier(len(stores))
            with ThreadPoolExecutor(max_workers=len(stores)) as pool:
                # list() re-raises what a replica's seeding raised.
                list(pool.map(functools.partial(_seed_after, barrier, builtins=builtins), stores))
        assert {client.client_id for client in builtins} <= {client.client_id for client in stores[0].list()}
    finally:
        for store in stores:
            store.database.dispose()


def _seed_after(barrier: threading.Barrier, store: ClientStore, builtins: list[Client]) -> None:
    barrier.wait(timeout=10)
    store.seed(builtins)


# -- 2. keys rotate --now through one replica --------------------------------------------------


def test_rotate_now_through_one_replica_reaches_every_replica_within_a_second(
    postgres_url: str, make_replicas: Callable[..., Replicas]
) -> None:
    replicas = make_replicas(postgres_url)
    replicas.start()
    a, b = replicas.services
    old_kid = kid_of(tokens_from(a.url)["access_token"])
    assert kid_of(tokens_from(b.url)["access_token"]) == old_kid

    result = replicas.cli(a, "keys", "rotate", "--now")
    assert result.returncode == 0, result.stderr
    rotated = time.monotonic()
    new_kid = result.stdout.split()[0]
    assert new_kid != old_kid

    switched: dict[str, float] = {}
    while len(switched) < 2 and time.monotonic() - rotated < 5:
        for service in (a, b):
            if service.url not in switched and kid_of(tokens_from(service.url)["access_token"]) == new_kid:
                switched[service.url] = time.monotonic() - rotated
        time.sleep(0.05)
    print(f"\nnew key {new_kid[:12]} signing at each replica after: {sorted(round(s, 2) for s in switched.values())} s")
    assert len(switched) == 2, f"a replica never signed with {new_kid}"
    # The key store re-reads the key states every second; allow for the request in flight.
    assert max(switched.values()) <= 1.5, switched

    documents = [requests.get(f"{s.url}/.well-known/jwks.json", timeout=10).json() for s in (a, b)]
    assert documents[0] == documents[1]
    assert {key["kid"] for key in documents[0]["keys"]} >= {old_kid, new_kid}


# -- 3. PostgreSQL stopped and started again ---------------------------------------------------


@pytest.fixture
def postgres_cluster() -> Iterator[databases.PostgresCluster]:
    """A private PostgreSQL of the test's own, which it may stop and start again."""
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(databases.postgres_cluster())
        except NotStarted as exc:
            pytest.fail(str(exc), pytrace=False)
        yield cluster


@dataclass
class ApiWatch:
    """Call the API with one token every 50 ms from a thread; count what was not 200."""

    url: str
    token: str
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.wait(0.05):
                try:
                    response = session.get(
                        f"{self.url}/api/me", headers={"Authorization": f"Bearer {self.token}"}, timeout=5
                    )
                    status = str(response.status_code)
                except requests.RequestException as exc:
                    status = type(exc).__name__
                self.calls += 1
                if status != "200":
                    self.failures.append(status)


def test_postgres_stopped_gives_503_with_retry_after_and_recovers_by_itself(
    tmp_path: Path, postgres_cluster: databases.PostgresCluster, make_replicas: Callable[..., Replicas]
) -> None:
    with databases.fresh_database(postgres_cluster.url) as database_url:
        _postgres_outage(tmp_path, postgres_cluster, database_url, make_replicas)


def _postgres_outage(
    tmp_path: Path,
    cluster: databases.PostgresCluster,
    database_url: str,
    make_replicas: Callable[..., Replicas],
) -> None:
    balancer_port = free_port()
    replicas = make_replicas(database_url, public_url=f"http://localhost:{balancer_port}")
    replicas.start()
    with haproxy(tmp_path / "haproxy", [s.url for s in replicas.services], port=balancer_port) as balancer:
        resource = _resource(tmp_path, replicas, balancer)
        try:
            before = tokens_from(balancer.url)
            jwks_before = requests.get(f"{balancer.url}/.well-known/jwks.json", timeout=10).json()
            watch = ApiWatch(resource.url, before["access_token"])
            watcher = threading.Thread(target=watch.run)
            watcher.start()
            try:
                cluster.stop()
                stopped = time.monotonic()
                bases = [s.url for s in replicas.services]
                for base in bases:
                    assert_unavailable(password_grant(base))
                    assert_unavailable(refresh_grant(base, before["refresh_token"]))
                    # The JWKS comes from the key store's snapshot: verifiers can still refresh.
                    jwks = requests.get(f"{base}/.well-known/jwks.json", timeout=10)
                    assert jwks.status_code == 200, jwks.text
                    assert jwks.json() == jwks_before
                    # Liveness stays cheap and true; readiness says the database is gone.
                    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
                    assert_unavailable(requests.get(f"{base}/readyz", timeout=10))
                # Through the balancer once it has seen no replica is ready: the same answers.
                wait_until(
                    lambda: "issuers_ready has no server available" in balancer.log(),
                    timeout=10,
                    what="haproxy to find no replica ready",
                )
                assert_unavailable(password_grant(balancer.url))
                assert requests.get(f"{balancer.url}/.well-known/jwks.json", timeout=10).json() == jwks_before
                time.sleep(max(0.0, 3 - (time.monotonic() - stopped)))  # a few seconds of outage for the watcher

                cluster.start()
                restarted = time.monotonic()
                wait_until(
                    lambda: all(password_grant(base).status_code == 200 for base in bases),
                    timeout=20,
                    what="both replicas to serve logins again",
                )
                recovered = time.monotonic() - restarted
                wait_until(lambda: password_grant(balancer.url).status_code == 200, timeout=10, what="the balancer")
                after = refresh_grant(balancer.url, before["refresh_token"])
                assert after.status_code == 200, after.text
                assert requests.get(f"{bases[0]}/readyz", timeout=10).status_code == 200
            finally:
                watch.stop.set()
                watcher.join()
                if not cluster.running:
                    cluster.start()  # the test failed during the outage: the teardown needs the server
            print(
                f"\nrecovered {recovered:.2f} s after PostgreSQL returned; API calls {watch.calls}, failed {watch.failures}"
            )
            assert watch.calls > 20
            assert watch.failures == []
        finally:
            resource.stop()


def _resource(tmp_path: Path, replicas: Replicas, balancer: Balancer) -> GunicornService:
    """Start a resource that reaches the issuers through the balancer and wait until it holds keys."""
    resource = resource_process(
        tmp_path,
        replicas.services[0],
        env={"RESOURCE_ISSUER_INTERNAL_URL": balancer.url, "RESOURCE_JWKS_COOLDOWN": "1"},
        workers=1,
    )
    resource.start().wait_answering("/readyz", timeout=30)
    return resource


# -- 4. one replica killed under steady traffic ------------------------------------------------


def test_one_replica_killed_under_traffic_fails_only_requests_in_flight_on_it(
    tmp_path: Path, postgres_url: str, make_replicas: Callable[..., Replicas]
) -> None:
    balancer_port = free_port()
    replicas = make_replicas(postgres_url, public_url=f"http://localhost:{balancer_port}")
    replicas.start()
    victim = replicas.services[0]
    with haproxy(tmp_path / "haproxy", [s.url for s in replicas.services], port=balancer_port) as balancer:
        resource = _resource(tmp_path, replicas, balancer)
        traffic = Traffic(balancer.url, resource.url)
        users = [threading.Thread(target=traffic.user) for _ in range(4)]
        try:
            began = time.monotonic()
            for thread in users:
                thread.start()
            time.sleep(6)
            workers = victim.worker_pids()
            assert workers
            killed = time.monotonic()
            victim.signal(signal.SIGKILL)  # the master and its workers: one process group
            assert victim.proc is not None
            victim.proc.wait(timeout=5)
            # Dying takes milliseconds, and until the last worker is gone the port still accepts.
            wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=5, interval=0.001)
            dead = time.monotonic()
            time.sleep(max(0.0, 21 - (time.monotonic() - began)))
        finally:
            traffic.stop.set()
            for thread in users:
                thread.join()
            resource.stop()
        duration = time.monotonic() - began

    calls = traffic.calls
    failed = [c for c in calls if not c.ok]
    # In flight on the killed replica: HAProxy sent it there and logged it cut short (a request
    # it retried on the survivor is logged there, and succeeded).
    aborted_on_victim = _aborted(balancer.log(), "replica0")
    in_flight = [c for c in failed if c.kind != "api"]
    after_kill = [c for c in calls if c.started > killed]
    by_kind = {kind: sum(1 for c in calls if c.kind == kind) for kind in ("login", "refresh", "api")}
    print(
        f"\n{len(calls)} requests in {duration:.1f} s ({by_kind}), {len(after_kill)} after the kill; "
        f"failed: {len(failed)}, of which in flight on the killed replica: {len(in_flight)} "
        f"(haproxy logged {aborted_on_victim} aborted there); retried by haproxy: {balancer.log().count('/+1 ')}; "
        f"the kill took {1000 * (dead - killed):.0f} ms"
    )
    for call in failed:
        print(
            f"  {call.kind} {call.outcome}: sent {call.started - killed:+.3f} s after the kill, ended {call.ended - killed:+.3f} s"
        )
    assert duration >= 20
    assert min(by_kind.values()) > 50
    assert len(after_kill) > 50
    assert [c for c in failed if c.kind == "api"] == []
    assert len(in_flight) == aborted_on_victim <= len(users)  # at most one request per user was in flight
    assert all(killed <= c.ended and c.started <= dead + 0.1 for c in in_flight), "a failure away from the kill"
    # The survivor served everything after the kill.
    assert "replica0 is DOWN" in balancer.log()


def _aborted(haproxy_log: str, server: str) -> int:
    """Return how many of the users' requests HAProxy logged as cut short (or failed) on `server`.

    The APIs' own background reads (status lists, each a second and often 304; JWKS) are not the
    users' requests: a 304 is no failure, and one cut short by the kill is retried a second later.
    """
    count = 0
    for line in haproxy_log.splitlines():
        if " /statuslists" in line or " /.well-known/" in line:
            continue
        fields = line.split()
        # client [date] frontend backend/server timers status bytes - - termination-state ...
        if len(fields) > 9 and fields[3].endswith(f"/{server}") and (fields[5] != "200" or fields[9] != "----"):
            count += 1
    return count


def _alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie (a zombie has closed its sockets)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
