"""Run the whole benchmark: `python -m bench` (what `make bench` does). Only 127.0.0.1 is loaded.

Figures and their floors are measured side by side in the same run; see
docs/performance.md for what each row means. BENCH_SECONDS sets the length of each HTTP run.
`python -m bench.micro` runs only the in-process part (verification side by side with PyJWT,
authlib and joserfc, and signing) in a few seconds; `python -m bench.scale` only the issuer's
`/token` on SQLite, on PostgreSQL and on three replicas behind HAProxy (about a minute);
`python -m bench.revocation --count 10` only how fast a revocation reaches every API worker
(BENCH_REVOCATIONS, 100 by default, sets the count here); `python -m bench.dpop` only DPoP's cost.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import requests

from bench import dpop, micro, report, revocation, scale
from bench.load import wrk
from bench.services import ISSUER_URL, bench_issuer, cpu_seconds, label, reports_service, worker_rss_mib
from issuer.db import Database
from issuer.settings import IssuerSettings
from issuer.tokens import Grant, RefreshTokens, mint_access_token
from issuer.users import UserStore
from tests.support.processes import (
    REPORTS_WORKER,
    GunicornService,
    count_events,
    resource_process,
)

REPO = Path(__file__).resolve().parents[1]
AUDIENCE = "jwt-split-api"
REPORTS_AUDIENCE = "jwt-split-reports"
REPORTS_WORKERS = 4
JWKS_MAX_AGE = 300
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
REVOCATIONS = int(os.environ.get("BENCH_REVOCATIONS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
MAIN_SETTINGS = ("shared.worker.HeadFirstWorker", 4, 4)  # shared/src/shared/gunicorn_conf.py's defaults
COMPARED_SETTINGS = [("sync", 2, 1), ("sync", 4, 1), ("gthread", 2, 4), ("gthread", 4, 4), ("gthread", 8, 2)]


def say(text: str) -> None:
    """Report progress on stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _alice(settings: IssuerSettings, database: Database, scope: str = "profile admin") -> Grant:
    user = UserStore(database, settings.password_hasher()).get("alice")
    assert user is not None, "the bench issuer seeds the demo user alice"
    return Grant(user.id, user.username, "cli", scope)


def _mint_batch(args: tuple[str, int, str, str]) -> list[str]:
    data_dir, count, audience, scope = args
    settings = IssuerSettings(data_dir=Path(data_dir))
    database = settings.database()
    signing = settings.key_store(database, settings.load_kek()).signing_key()
    grant = _alice(settings, database, scope)
    database.dispose()
    return [mint_access_token(signing, grant, issuer=ISSUER_URL, audience=audience, ttl=600)[0] for _ in range(count)]


def mint_tokens(data_dir: Path, count: int, audience: str = AUDIENCE, scope: str = "profile admin") -> list[str]:
    """Sign `count` access tokens for `audience` with the issuer's active key and code, on both cores."""
    half = (count + 1) // 2
    jobs = [(str(data_dir), half, audience, scope)] * 2
    with ProcessPoolExecutor(2, mp_context=get_context("fork")) as pool:
        return [token for batch in pool.map(_mint_batch, jobs) for token in batch]


def issue_refresh_tokens(data_dir: Path, count: int) -> list[str]:
    """Create refresh tokens for alice directly in the issuer's database, as the issuer does."""
    settings = IssuerSettings(data_dir=data_dir)
    database = settings.database()
    store = RefreshTokens(
        database,
        ttl=settings.refresh_token_ttl,
        family_ttl=settings.refresh_family_ttl,
        reuse_grace=settings.refresh_reuse_grace,
        successor_key=b"issuing needs no successor key",
    )
    grant = _alice(settings, database)
    with database.transaction():
        tokens = [store.issue(grant) for _ in range(count)]
    database.dispose()
    return tokens


def write_lines(path: Path, lines: list[str]) -> Path:
    """Write one item per line."""
    path.write_text("\n".join(lines) + "\n")
    return path


def measured(url: str, services: list[GunicornService], **options: Any) -> dict[str, Any]:
    """Run wrk and also count the CPU time the services spent per request (robust to noise)."""
    before = sum(cpu_seconds(service) for service in services)
    result = wrk(url, seconds=options.pop("seconds", SECONDS), **options)
    spent = sum(cpu_seconds(service) for service in services) - before
    return {**asdict(result), "cpu_us_per_request": spent / result.requests * 1e6 if result.requests else 0.0}


def combine(runs: list[dict[str, Any]], plain: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Combine rounds of one kind of run: medians, summed requests and errors.

    With `plain`, also the median of per-round ratios to the plain run of the same round,
    which cancels most of the drift a shared machine adds between rounds.
    """
    combined: dict[str, Any] = {
        "rps": statistics.median(r["rps"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
        "rounds": [round(r["rps"]) for r in runs],
    }
    if plain is not None:
        combined["ratio_to_plain"] = statistics.median(r["rps"] / p["rps"] for r, p in zip(runs, plain, strict=True))
    return combined


def resource(
    name: str, run_dir: Path, issuer: GunicornService, settings: tuple[str, int, int], **env: str
) -> GunicornService:
    """Prepare a resource service of the given worker settings."""
    worker_class, workers, threads = settings
    return resource_process(
        run_dir, issuer, name=name, env=env, workers=workers, threads=threads, worker_class=worker_class
    )


def prepare_services(run_dir: Path, data_dir: Path) -> tuple[GunicornService, GunicornService, GunicornService]:
    """Prepare the issuer and two resources (local verification, introspection), logs in `run_dir`."""
    secret = secrets.token_urlsafe(32)
    issuer = bench_issuer(
        run_dir,
        data_dir,
        env={"ISSUER_JWKS_MAX_AGE": str(JWKS_MAX_AGE), "ISSUER_INTROSPECTION_SECRET": secret},
        workers=MAIN_SETTINGS[1],
        threads=MAIN_SETTINGS[2],
    )
    local = resource("resource-local", run_dir, issuer, MAIN_SETTINGS)
    asking = resource(
        "resource-introspection",
        run_dir,
        issuer,
        MAIN_SETTINGS,
        RESOURCE_VERIFICATION="introspection",
        RESOURCE_INTROSPECTION_SECRET=secret,
        RESOURCE_JWKS_PREFETCH="false",
    )
    return issuer, local, asking


def start_services(
    issuer: GunicornService, local: GunicornService, asking: GunicornService
) -> tuple[dict[str, str], float]:
    """Start the services and check both resources accept alice's token.

    Returns the token's bearer header and when the local resource started (`time.monotonic()`).
    """
    say("starting the issuer and two resources (local verification, introspection) under gunicorn")
    issuer.start().wait_answering(timeout=60)
    local_started = time.monotonic()
    local.start()
    asking.start()
    local.wait_all_workers("jwks loaded", timeout=60)
    asking.wait_answering(timeout=60)
    response = requests.post(
        f"{issuer.url}/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland"},
        timeout=10,
    )
    response.raise_for_status()
    bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
    for service in (local, asking):
        answer = requests.get(f"{service.url}/api/me", headers=bearer, timeout=5)
        if answer.status_code != 200:
            raise RuntimeError(f"{service.name} refused a fresh token: {answer.status_code} {answer.text[:200]}")
    return bearer, local_started


def reports_http(reports: GunicornService, data_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Measure the reports API's unprotected `/healthz` and protected `/api/caller` in interleaved rounds.

    Each protected run is compared with `/healthz` sent the same requests by the same wrk
    invocation: the repeated token as a header, and the new tokens through `tokens.lua` (a Lua
    call per request costs wrk, on the same two cores, more than its fixed request: `/healthz`
    alone read 0.77-1.07 of its bare figure with it). `/healthz` ignores the token. The bare
    `/healthz` (no token) is still measured, for reference.
    """
    reports.start()
    reports.wait_all_workers("jwks loaded", timeout=60)
    minted = mint_tokens(data_dir, 1, REPORTS_AUDIENCE, "reports:read")
    bearer = {"Authorization": f"Bearer {minted[0]}"}
    url, plain_url = f"{reports.url}/api/caller", f"{reports.url}/healthz"
    for warm_up, headers in ((plain_url, None), (url, bearer)):
        wrk(warm_up, seconds=1, headers=headers)
    fastest = max(wrk(target, seconds=SECONDS, headers=bearer).rps for target in (url, plain_url))
    per_run = int(fastest * SECONDS * 1.3) + 500
    fresh = mint_tokens(data_dir, ROUNDS * per_run, REPORTS_AUDIENCE, "reports:read")
    files = [
        write_lines(run_dir / f"reports-tokens-{i}.txt", fresh[i * per_run : (i + 1) * per_run]) for i in range(ROUNDS)
    ]
    names = ("plain", "plain_repeated", "protected_repeated", "plain_new", "protected_new")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_no in range(ROUNDS):
        say(f"reports round {round_no + 1}/{ROUNDS}: /healthz and /api/caller (no token, repeated, new tokens)")
        # /healthz never verifies, so it may be sent the tokens the protected run sees first.
        new_tokens = {"script": "tokens.lua", "script_args": (str(files[round_no]),)}
        runs["plain"].append(measured(plain_url, [reports]))
        runs["plain_repeated"].append(measured(plain_url, [reports], headers=bearer))
        runs["protected_repeated"].append(measured(url, [reports], headers=bearer))
        runs["plain_new"].append(measured(plain_url, [reports], **new_tokens))
        runs["protected_new"].append(measured(url, [reports], **new_tokens))
    reports.stop()
    return {
        "settings": f"-k {REPORTS_WORKER} -w{REPORTS_WORKERS}",
        "plain": combine(runs["plain"]),
        "plain_repeated": combine(runs["plain_repeated"], runs["plain"]),
        "plain_new": combine(runs["plain_new"], runs["plain"]),
        "protected_repeated": combine(runs["protected_repeated"], runs["plain_repeated"]),
        "protected_new": combine(runs["protected_new"], runs["plain_new"]),
        # Against the bare /healthz, as this row was measured before 2026-12-06 (for comparison only).
        "protected_new_over_bare": combine(runs["protected_new"], runs["plain"])["ratio_to_plain"],
    }


def main() -> int:
    """Run everything and print the table."""
    started = time.time()
    try:
        scale.check_available()
    except scale.ScaleUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    run_dir = REPO / "var" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": report.machine(),
        "python": platform.python_version(),
        "seconds_per_run": SECONDS,
        "rounds": ROUNDS,
    }

    say("micro-benchmarks: verify (ours, PyJWT, authlib, joserfc) and sign, side by side with raw cryptography")
    results["micro"] = micro.run().as_dict()
    say("DPoP: a bound request with a fresh proof, side by side with the raw RS256 + ES256 verifies")
    results["dpop"] = dpop.run()

    data_dir = run_dir / "issuer"
    issuer, local, asking = prepare_services(run_dir, data_dir)
    services = [issuer, local, asking]
    try:
        bearer, local_started = start_services(issuer, local, asking)

        say("warming up every endpoint")
        for url, headers in ((f"{local.url}/healthz", None), (f"{local.url}/api/me", bearer)):
            wrk(url, seconds=1, headers=headers)
        wrk(f"{asking.url}/api/me", seconds=1, headers=bearer)

        runs: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ("plain", "local_repeated", "local_new", "introspection")
        }
        probe = wrk(f"{local.url}/api/me", seconds=SECONDS, headers=bearer)
        per_run = int(probe.rps * SECONDS * 1.3) + 500
        say(f"minting {ROUNDS * per_run} access tokens with the issuer's key (a new token on every request)")
        fresh = mint_tokens(data_dir, ROUNDS * per_run)
        token_files = [
            write_lines(run_dir / f"tokens-{i}.txt", fresh[i * per_run : (i + 1) * per_run]) for i in range(ROUNDS)
        ]
        for round_no in range(ROUNDS):
            say(f"HTTP round {round_no + 1}/{ROUNDS}: plain, local (repeated, new tokens), introspection")
            runs["plain"].append(measured(f"{local.url}/healthz", [local]))
            runs["local_repeated"].append(measured(f"{local.url}/api/me", [local], headers=bearer))
            runs["local_new"].append(
                measured(f"{local.url}/api/me", [local], script="tokens.lua", script_args=(str(token_files[round_no]),))
            )
            runs["introspection"].append(measured(f"{asking.url}/api/me", [asking, issuer], headers=bearer))
        results["http"] = {"plain": combine(runs["plain"])} | {
            name: combine(done, runs["plain"]) for name, done in runs.items() if name != "plain"
        }
        results["http"]["local_new"]["tokens_per_round"] = per_run
        results["http"]["introspection"]["ratio_local_new_over_introspection"] = statistics.median(
            n["rps"] / i["rps"] for n, i in zip(runs["local_new"], runs["introspection"], strict=True)
        )

        say("issuer: plain endpoint and the refresh grant")
        refresh_file = write_lines(run_dir / "refresh.txt", issue_refresh_tokens(data_dir, 6000))
        results["issuer_http"] = {
            "plain": measured(f"{issuer.url}/healthz", [issuer], seconds=2 * SECONDS),
            "refresh": measured(
                issuer.url,
                [issuer],
                seconds=2 * SECONDS,
                script="tokens.lua",
                script_args=(str(refresh_file), "refresh"),
            ),
        }

        results["jwks"] = {
            "fetches": count_events(issuer.log(), "request", "/.well-known/jwks.json"),
            "workers": local.workers,
            "seconds": time.monotonic() - local_started,
            "max_age": JWKS_MAX_AGE,
        }
        results["rss_mib"] = {
            "issuer": worker_rss_mib(issuer),
            "resource (local)": worker_rss_mib(local),
            "resource (introspection)": worker_rss_mib(asking),
        }
        local.stop()
        asking.stop()

        say("gunicorn worker settings compared on the local resource (plain, new token every request)")
        compared = []
        for settings in COMPARED_SETTINGS:
            candidate = resource(f"resource-{settings[0]}-{settings[1]}x{settings[2]}", run_dir, issuer, settings)
            services.append(candidate)
            candidate.start()
            candidate.wait_all_workers("jwks loaded", timeout=60)
            wrk(f"{candidate.url}/healthz", seconds=1)
            plain_runs, new_runs = [], []
            for round_no in range(2):
                plain_runs.append(measured(f"{candidate.url}/healthz", [candidate]))
                new_runs.append(
                    measured(
                        f"{candidate.url}/api/me",
                        [candidate],
                        script="tokens.lua",
                        script_args=(str(token_files[round_no]),),
                    )
                )
            compared.append(
                {"settings": label(candidate), "plain": combine(plain_runs), "local_new": combine(new_runs, plain_runs)}
            )
            candidate.stop()
        results["gunicorn"] = compared

        say("reports API (FastAPI, uvicorn workers): /healthz beside the protected /api/caller")
        reports = reports_service(run_dir, issuer, workers=REPORTS_WORKERS)
        services.append(reports)
        results["reports_http"] = reports_http(reports, data_dir, run_dir)
    finally:
        for service in services:
            service.stop()

    say(f"revocation: {REVOCATIONS} revocations, each until every worker of both APIs refuses the token")
    results["revocation"] = revocation.run(REVOCATIONS, run_dir / "revocation")

    say("scale-out: the password and refresh grants on SQLite, on PostgreSQL and on three replicas")
    try:
        results["scale"] = scale.run(run_dir / "scale", 2 * SECONDS)
    except scale.ScaleUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    results["elapsed_s"] = time.time() - started
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = report.table(results)
    (run_dir / "table.md").write_text(table)
    plot = report.plot(results, REPO / "docs" / "bench-throughput.png")
    latest = REPO / "var" / "bench" / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(run_dir.name)
    print(table)
    say(f"results in {run_dir.relative_to(REPO)}; plot {plot.relative_to(REPO)}; {results['elapsed_s']:.0f} s")
    return 0  # the bench reports figures and verdicts; a missed target is not a crash


if __name__ == "__main__":
    sys.exit(main())
