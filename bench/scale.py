"""The issuer's `/token` scaled out: the password and refresh grants on SQLite, on PostgreSQL, and on replicas.

Three setups, one after the other, each driven by wrk on 127.0.0.1:

- one issuer on its embedded SQLite database (the default);
- one issuer on PostgreSQL (a private server this part starts from Debian's packages);
- three issuer replicas on one PostgreSQL database and one Redis (rate-limit counters) behind
  HAProxy, as the compose overlay runs them (tests/support/haproxy.py has the configuration).

Every request of the refresh runs spends a refresh token that nobody has used: the tokens are
created beforehand directly in the setup's database, with the issuer's own store. The password
grant runs at the default argon2id cost, as a deployment would. For every run this part counts
the CPU seconds each kind of process spent per request (issuer workers, PostgreSQL's server
processes, HAProxy, Redis), and on PostgreSQL what the database itself counted in
`pg_stat_database` (commits, rows inserted, updated and deleted) per request. On a shared
2-core machine the point is the cost per request, not the throughput: three replicas on two
cores cannot go faster than one issuer.

`python -m bench.scale` runs only this part (about a minute) and prints its table.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jwt
import psycopg
import redis
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

from bench.load import wrk
from bench.services import cpu_seconds, parent_pid, tree_cpu_seconds
from issuer.db import PING_IDLE_AFTER
from issuer.settings import IssuerSettings
from issuer.tokens import Grant, RefreshTokens
from issuer.users import UserStore
from tests.support import databases
from tests.support.haproxy import haproxy, haproxy_binary
from tests.support.processes import GunicornService, NotStarted, count_events, issuer_process

ISSUER_URL = "http://localhost:8000"
REPLICAS = 3
WORKERS, THREADS = 2, 4  # per issuer process: one gthread worker per core
SCOPE = "profile admin"  # of the refresh tokens minted for alice
GRANTS = ("password", "refresh", "client_credentials")
SERVICE = "bench-svc"  # a private_key_jwt client: each request a new assertion (its jti spent once)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Failed passwords only count towards the limits; these stay out of the way all the same. The
# registrations cache runs at its default, as a deployment runs it (the test helpers turn it off).
ISSUER_ENV = {
    "ISSUER_ADDRESS_RATE_LIMIT": "1000000 per second",
    "ISSUER_LOGIN_RATE_LIMIT": "1000000 per second",
    "ISSUER_REGISTRY_CACHE_TTL": str(IssuerSettings.from_env({}).registry_cache_ttl),
}
T = TypeVar("T")
# The password grant's argon2id keeps a worker thread busy for tens of milliseconds: as many
# connections as the issuer has threads, not a queue of 32 behind them.
PASSWORD_CONNECTIONS = WORKERS * THREADS
# Less than this much CPU in half a second: the issuers have finished what wrk left in flight.
IDLE_CPU_SECONDS = 0.05
COUNTERS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted")


class ScaleUnavailable(RuntimeError):
    """A server this part needs (PostgreSQL, Redis, HAProxy) is missing or does not start."""


def say(text: str) -> None:
    """Report progress on stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Setup:
    """Issuers under test, where wrk sends its requests, and the processes whose CPU time is counted."""

    name: str
    url: str
    env: dict[str, str]
    issuers: list[GunicornService]
    database_url: str | None = None  # PostgreSQL: read pg_stat_database there
    processes: dict[str, Callable[[], float]] = field(default_factory=dict)
    idle_commits_per_second: float = 0.0

    def cpu(self) -> dict[str, float]:
        """Return the CPU seconds used so far by each kind of process."""
        return {"issuer": sum(cpu_seconds(issuer) for issuer in self.issuers)} | {
            name: read() for name, read in self.processes.items()
        }


def check_available() -> None:
    """Fail at once, with what to run, if PostgreSQL, Redis or HAProxy is not installed."""
    try:
        databases.postgres_bin_dir()
        databases.redis_server_binary()
        haproxy_binary()
    except NotStarted as exc:
        raise ScaleUnavailable(f"the scale-out runs need PostgreSQL, Redis and HAProxy: {exc}") from None


def _enter(stack: ExitStack, what: str, context: AbstractContextManager[T]) -> T:
    """Enter a server's context on `stack`, turning a failed start into a clear ScaleUnavailable."""
    try:
        return stack.enter_context(context)
    except NotStarted as exc:
        raise ScaleUnavailable(f"the bench could not start its private {what}: {exc}") from None


def _kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def start_issuers(run_dir: Path, name: str, count: int, env: dict[str, str]) -> list[GunicornService]:
    """Start `count` issuer processes with the same settings, together (they migrate in turns)."""
    issuers = []
    for index in range(count):
        log_dir = run_dir / name / f"issuer{index}"
        log_dir.mkdir(parents=True)
        issuers.append(
            issuer_process(
                log_dir,
                public_url=ISSUER_URL,
                data_dir=log_dir / "data",
                env=env,
                workers=WORKERS,
                threads=THREADS,
            )
        )
    try:
        for issuer in issuers:
            issuer.start()
        for issuer in issuers:
            issuer.wait_answering(timeout=90)
    except BaseException:
        for issuer in issuers:
            issuer.stop()
        raise
    return issuers


def mint_refresh_tokens(issuer: GunicornService, count: int) -> list[str]:
    """Create `count` refresh tokens for alice in the issuer's database, with the issuer's own store."""
    settings = IssuerSettings.from_env(issuer.env)
    database = settings.database()
    user = UserStore(database, settings.password_hasher()).get("alice")
    assert user is not None, "the bench issuers seed the demo user alice"
    store = RefreshTokens(
        database,
        ttl=settings.refresh_token_ttl,
        family_ttl=settings.refresh_family_ttl,
        reuse_grace=settings.refresh_reuse_grace,
        successor_key=b"issuing needs no successor key",
    )
    grant = Grant(user.id, user.username, "cli", SCOPE)
    with database.transaction():
        tokens = [store.issue(grant) for _ in range(count)]
    database.dispose()
    return tokens


def client_assertions(issuer: GunicornService, count: int) -> list[str]:
    """Register the private_key_jwt client `SERVICE` (its key's JWKS) and sign `count` assertions for it, one jti each."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwks = log_dir_file(issuer, "bench-svc.jwks.json")
    jwks.write_text(json.dumps({"keys": [jwk | {"kid": "bench", "use": "sig", "alg": "RS256"}]}))
    command = [sys.executable, "-m", "issuer", "clients", "add", SERVICE, "--grant", "client_credentials"]
    command += ["--jwks-file", str(jwks), "--scope", "profile"]
    subprocess.run(command, env={**os.environ, **issuer.env}, check=True, capture_output=True, timeout=60)
    now = int(time.time())
    claims = {"iss": SERVICE, "sub": SERVICE, "aud": ISSUER_URL, "iat": now, "exp": now + 240}  # at most 300 s ahead
    return [
        jwt.encode(claims | {"jti": secrets.token_hex(16)}, key, algorithm="RS256", headers={"kid": "bench"})
        for _ in range(count)
    ]


def log_dir_file(issuer: GunicornService, name: str) -> Path:
    """Return a path beside the issuer's log."""
    return issuer.log_path.parent / name


def floors(rounds: int = 200) -> dict[str, float]:
    """Return the floors of the grants, µs, measured in this process: a raw RSA-2048 sign, an argon2id check at the default cost."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    started = time.process_time()
    for index in range(rounds):
        key.sign(index.to_bytes(4, "big"), padding.PKCS1v15(), hashes.SHA256())
    sign_us = (time.process_time() - started) / rounds * 1e6
    hasher = IssuerSettings.from_env({}).password_hasher()  # the default cost, as the issuers run
    stored = hasher.hash("wonderland")
    started = time.process_time()
    for _ in range(10):
        hasher.verify(stored, "wonderland")
    return {"rsa_sign_us": sign_us, "argon2_verify_us": (time.process_time() - started) / 10 * 1e6}


def counters(database_url: str) -> dict[str, int]:
    """Return the database's own counters (pg_stat_database), read on a new connection."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT {', '.join(COUNTERS)} FROM pg_stat_database WHERE datname = current_database()"  # noqa: S608
        ).fetchone()
    assert row is not None
    return dict(zip(COUNTERS, (int(value) for value in row), strict=True))


def flushed_counters(database_url: str, *, timeout: float = 15.0) -> dict[str, int]:
    """Return the counters with everything the issuers' sessions did so far in them.

    A PostgreSQL backend publishes its counts at most once a second, and one that goes idle
    soon after publishing waits ten seconds more; one that exits publishes at once. So the
    issuers' sessions on the database are ended (their pools reconnect on the next checkout,
    pool_pre_ping) and the counters read once they are gone. The reconnections fall into
    the next run: a few per worker, against hundreds of requests.
    """
    others = "datname = current_database() AND pid <> pg_backend_pid()"
    with psycopg.connect(database_url, autocommit=True) as conn:
        sessions = conn.execute(f"SELECT pid FROM pg_stat_activity WHERE {others}").fetchall()  # noqa: S608
        ended = [pid for (pid,) in sessions]
        for pid in ended:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + timeout
        while ended and time.monotonic() < deadline:
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)).fetchone()
            if left is None or left[0] == 0:
                break
            time.sleep(0.1)
    # A pooled connection is checked before use only once it sat idle a second (issuer.db): let
    # every one the issuers hold go that long, so that the next run's first requests reconnect
    # instead of failing on a connection the server just ended (as after a restart).
    time.sleep(PING_IDLE_AFTER + 0.2)
    return counters(database_url)


def settled_cpu(setup: Setup, *, timeout: float = 60.0) -> dict[str, float]:
    """Return the CPU seconds used once the requests still queued when wrk stopped are done.

    wrk stops with up to 32 requests in flight; the issuer works on them afterwards, and
    that work belongs to this run, not to the next.
    """
    deadline = time.monotonic() + timeout
    last = setup.cpu()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = setup.cpu()
        if sum(now.values()) - sum(last.values()) < IDLE_CPU_SECONDS:
            return now
        last = now
    return last


def issued(setup: Setup) -> int:
    """Return how many access tokens the setup's issuers have logged issuing."""
    return sum(count_events(issuer.log(), "issued access token") for issuer in setup.issuers)


def idle_commit_rate(database_url: str, seconds: float = 3.0) -> float:
    """Return the commits per second the idle issuers make (their key store reloads once a second)."""
    before, started = counters(database_url), time.monotonic()
    time.sleep(seconds)
    return (counters(database_url)["xact_commit"] - before["xact_commit"]) / (time.monotonic() - started)


def measure(setup: Setup, grant: str, seconds: float, tokens_file: Path | None) -> dict[str, Any]:
    """Run one grant against a setup; return wrk's figures, CPU µs and database counts per token issued.

    Per token the issuers logged issuing, not per answer wrk counted: the answers still in
    flight when wrk stops are issued (and their CPU spent) after it has stopped counting.
    """
    if setup.database_url:
        before_db, db_started = flushed_counters(setup.database_url), time.monotonic()
    before, before_issued = setup.cpu(), issued(setup)
    if grant == "password":
        result = wrk(f"{setup.url}/token", seconds=seconds, script="password.lua", connections=PASSWORD_CONNECTIONS)
    else:
        assert tokens_file is not None
        mode = "refresh" if grant == "refresh" else "assertion"
        result = wrk(setup.url, seconds=seconds, script="tokens.lua", script_args=(str(tokens_file), mode))
    after = settled_cpu(setup)
    done = max(issued(setup) - before_issued, 1)
    run: dict[str, Any] = asdict(result) | {
        "issued": done,
        "cpu_us_per_request": {name: (after[name] - before[name]) / done * 1e6 for name in after},
    }
    if setup.database_url:
        after_db = flushed_counters(setup.database_url)
        background = setup.idle_commits_per_second * (time.monotonic() - db_started)
        delta = {name: after_db[name] - before_db[name] for name in COUNTERS}
        delta["xact_commit"] -= round(background)
        run["db_per_request"] = {name: value / done for name, value in delta.items()}
        run["db_background_commits"] = round(background)
    return run


def run_setup(setup: Setup, seconds: float, run_dir: Path, tokens: int) -> dict[str, Any]:
    """Run both grants against a setup, refresh tokens minted beforehand."""
    say(f"{setup.name}: minting {tokens} refresh tokens in its database")
    tokens_file = run_dir / f"refresh-{setup.name.split()[0]}.txt"
    tokens_file.write_text("\n".join(mint_refresh_tokens(setup.issuers[0], tokens)) + "\n")
    answer = requests.post(
        f"{setup.url}/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland"},
        timeout=30,
    )
    answer.raise_for_status()  # every part answers before anything is timed
    if setup.database_url:
        setup.idle_commits_per_second = idle_commit_rate(setup.database_url)
    say(f"{setup.name}: registering {SERVICE} and signing {tokens} client assertions")
    assertions_file = run_dir / f"assertions-{setup.name.split()[0]}.txt"
    assertions_file.write_text("\n".join(client_assertions(setup.issuers[0], tokens)) + "\n")
    runs = {}
    for grant in GRANTS:
        say(f"{setup.name}: {grant} grant, {seconds:g} s")
        runs[grant] = measure(setup, grant, seconds, assertions_file if grant == "client_credentials" else tokens_file)
    runs["refresh"]["tokens_minted"] = tokens
    runs["client_credentials"]["tokens_minted"] = tokens
    return {"name": setup.name, "issuers": len(setup.issuers), "runs": runs}


def run(run_dir: Path, seconds: float, *, replicas: bool = True) -> dict[str, Any]:
    """Run the three setups one after the other (the first two without `replicas`); return their figures."""
    check_available()
    tokens = max(2000, int(seconds * 1500))
    results: list[dict[str, Any]] = []
    say("scale-out: the floors (a raw RSA-2048 sign, an argon2id check)")
    floor = floors()
    with ExitStack() as stack:
        say("scale-out: one issuer on SQLite")
        env = ISSUER_ENV | {"ISSUER_SESSION_SECRET": secrets.token_urlsafe(48)}
        issuers = start_issuers(run_dir, "sqlite", 1, env)
        try:
            setup = Setup("1 issuer, SQLite", issuers[0].url, env, issuers)
            results.append(run_setup(setup, seconds, run_dir, tokens))
        finally:
            issuers[0].stop()

        say("scale-out: starting a private PostgreSQL and Redis")
        server_url = _enter(stack, "PostgreSQL", databases.postgres_server())
        redis_url = _enter(stack, "Redis", databases.redis_server())
        with psycopg.connect(server_url) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        postmaster = parent_pid(int(backend[0]))

        def postgres_cpu() -> float:
            return tree_cpu_seconds(postmaster)

        say("scale-out: one issuer on PostgreSQL")
        database_url = stack.enter_context(databases.fresh_database(server_url))
        env = ISSUER_ENV | {
            "ISSUER_DATABASE_URL": database_url,
            "ISSUER_KEY_ENCRYPTION_KEY": _kek(),
            "ISSUER_SESSION_SECRET": secrets.token_urlsafe(48),
        }
        issuers = start_issuers(run_dir, "postgres", 1, env)
        try:
            setup = Setup(
                "1 issuer, PostgreSQL", issuers[0].url, env, issuers, database_url, {"postgres": postgres_cpu}
            )
            results.append(run_setup(setup, seconds, run_dir, tokens))
        finally:
            issuers[0].stop()

        if not replicas:
            return {"setups": results, "workers": WORKERS, "threads": THREADS, "seconds_per_run": seconds} | floor
        say(f"scale-out: {REPLICAS} issuer replicas on PostgreSQL and Redis behind HAProxy")
        database_url = stack.enter_context(databases.fresh_database(server_url))
        env = ISSUER_ENV | {
            "ISSUER_DATABASE_URL": database_url,
            "ISSUER_KEY_ENCRYPTION_KEY": _kek(),
            "ISSUER_SESSION_SECRET": secrets.token_urlsafe(48),
            "ISSUER_RATE_LIMIT_STORAGE": redis_url,
            "ISSUER_TRUSTED_PROXIES": "127.0.0.1/32",
        }
        issuers = start_issuers(run_dir, "replicas", REPLICAS, env)
        try:
            balancer = _enter(stack, "HAProxy", haproxy(run_dir / "haproxy", [issuer.url for issuer in issuers]))
            assert balancer.process.proc is not None
            haproxy_pid = balancer.process.proc.pid
            redis_pid = _listening_pid(redis_url)
            setup = Setup(
                f"{REPLICAS} replicas, PostgreSQL, HAProxy",
                balancer.url,
                env,
                issuers,
                database_url,
                {
                    "postgres": postgres_cpu,
                    "haproxy": lambda: tree_cpu_seconds(haproxy_pid),
                    "redis": lambda: tree_cpu_seconds(redis_pid) if redis_pid else 0.0,
                },
            )
            results.append(run_setup(setup, seconds, run_dir, tokens))
        finally:
            for issuer in issuers:
                issuer.stop()
    return {"setups": results, "workers": WORKERS, "threads": THREADS, "seconds_per_run": seconds} | floor


def _listening_pid(redis_url: str) -> int:
    """Return the pid of the Redis server at `redis_url` (it says so itself)."""
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
    finally:
        client.close()
    return int(info.get("process_id", 0))


def main() -> int:
    """Run only the scale-out part and print its table."""
    from bench import report

    run_dir = Path(__file__).resolve().parents[1] / "var" / "bench" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    seconds = 2 * float(os.environ.get("BENCH_SECONDS", "2"))
    try:
        check_available()
        run_dir.mkdir(parents=True)
        results = run(run_dir, seconds, replicas="--single" not in sys.argv[1:])
    except ScaleUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(report.scale_table(results))
    say(f"results in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
