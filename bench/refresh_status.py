"""What Token Status Lists cost the issuer's refresh grant: refresh grants per second with them and without.

Two issuer processes with the same settings (SQLite, `WORKERS` gunicorn workers x `THREADS`
threads, on 127.0.0.1) but for `ISSUER_STATUS_LISTS`: `true` (the default: each refresh family
gets an index in a list, its first refresh allocates it, and every access token carries the
`status` claim) and `false` (no `status` claim, no index). wrk sends the refresh grant to each in
turn, `rounds` interleaved rounds of `seconds` (the order alternating, so drift on a shared
machine falls on both), each request spending a refresh token nobody has used (minted in the
issuer's database beforehand). The figure is each side's median rps and the median of the
per-round ratios (with / without); the target is a fall of at most 10% (issue 22 item 3).

Before timing, one refresh at each checks that the switch does what it says: a `status` claim
from the one, none from the other.

`python -m bench.refresh_status` prints the row (about a minute, most of it minting);
`--first-refresh` measures families issued before status lists were on, whose first refresh
allocates their index.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import requests

from bench import scale
from bench.load import wrk
from issuer.settings import IssuerSettings
from issuer.statuslist import StatusLists, registered
from issuer.users import UserStore
from tests.support.processes import GunicornService

WORKERS, THREADS = scale.WORKERS, scale.THREADS  # the issuers are started by bench.scale
TOKENS_PER_RUN = 1200  # more than a 2 s run spends on 2 cores (wrk stops early if they run out)
FALL_TARGET = 0.10  # issue 22 item 3: the refresh grant's throughput falls by at most 10%


def say(text: str) -> None:
    """Report progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def mint_refresh_tokens(issuer: GunicornService, count: int, *, allocate: bool = True) -> list[str]:
    """Create `count` refresh tokens for alice in the issuer's database, as its password grant does.

    The tokens are `bench.scale`'s. With status lists on, each token's family then gets its
    index as the password grant's access token gives it: a refresh then finds it, as it does in
    service. (A family issued before status lists were turned on allocates its index at its
    first refresh instead: that costs a write transaction more: `allocate=False`, `--first-refresh`.)
    """
    tokens = scale.mint_refresh_tokens(issuer, count)
    settings = IssuerSettings.from_env(issuer.env)
    if not (settings.status_lists and allocate):
        return tokens
    database = settings.database()
    user = UserStore(database, settings.password_hasher()).get("alice")
    assert user is not None, "the bench issuers seed the demo user alice"
    lists = StatusLists(
        database,
        settings.key_store(database, settings.load_kek()),
        settings.url,
        capacity=settings.status_list_capacity,
        validity=settings.status_list_validity,
        ttl=settings.status_list_ttl,
        access_token_ttl=settings.access_token_ttl,
    )
    seeded = registered(database, "cli", settings.audience)  # the built-in client and the default API
    for token in tokens:
        lists.for_family(
            token,
            client_id="cli",
            user_id=user.id,
            audience=settings.audience,
            scope=scale.SCOPE,
            registered=seeded,
        )
    database.dispose()
    return tokens


def _claims_of_a_refresh(issuer: GunicornService, refresh_token: str) -> dict[str, Any]:
    response = requests.post(
        f"{issuer.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "cli"},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"the refresh grant answered {response.status_code}: {response.text[:200]}")
    claims: dict[str, Any] = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    return claims


def run(run_dir: Path | None = None, *, rounds: int = 3, seconds: float = 2.0, allocate: bool = True) -> dict[str, Any]:
    """Return the refresh grant's rps with status lists and without, and the median per-round ratio."""
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="bench-refresh-status-"))
    issuers: dict[str, GunicornService] = {}
    runs: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    try:
        for name, value in (("with", "true"), ("without", "false")):
            env = {"ISSUER_STATUS_LISTS": value, "ISSUER_ADDRESS_RATE_LIMIT": "1000000 per second"}
            (issuers[name],) = scale.start_issuers(run_dir, name, 1, env)
        say("refresh grant with and without status lists: minting refresh tokens")
        files: dict[str, list[Path]] = {}
        for name, issuer in issuers.items():
            tokens = mint_refresh_tokens(issuer, rounds * TOKENS_PER_RUN + 1, allocate=allocate)
            check = _claims_of_a_refresh(issuer, tokens.pop())
            if ("status" in check) != (name == "with"):
                raise RuntimeError(f"the issuer {name} status lists answered with claims {sorted(check)}")
            files[name] = []
            for round_no in range(rounds):
                path = run_dir / name / f"refresh-{round_no}.txt"
                path.write_text("\n".join(tokens[round_no * TOKENS_PER_RUN : (round_no + 1) * TOKENS_PER_RUN]) + "\n")
                files[name].append(path)
        wrk(f"{issuers['with'].url}/healthz", seconds=1)  # warm both up
        wrk(f"{issuers['without'].url}/healthz", seconds=1)
        for round_no in range(rounds):
            say(f"refresh grant with and without status lists: round {round_no + 1}/{rounds}")
            order = ["with", "without"] if round_no % 2 == 0 else ["without", "with"]
            for name in order:
                result = wrk(
                    issuers[name].url,
                    seconds=seconds,
                    script="tokens.lua",
                    script_args=(str(files[name][round_no]), "refresh"),
                )
                runs[name].append({"rps": result.rps, "errors": float(result.errors), "p99_ms": result.p99_ms})
    finally:
        for issuer in issuers.values():
            issuer.stop()
    ratios = [w["rps"] / wo["rps"] for w, wo in zip(runs["with"], runs["without"], strict=True) if wo["rps"]]
    return {
        "rounds": rounds,
        "seconds": seconds,
        "workers": WORKERS,
        "threads": THREADS,
        **{
            name: {
                "rps": statistics.median(r["rps"] for r in done),
                "rps_rounds": [r["rps"] for r in done],
                "errors": int(sum(r["errors"] for r in done)),
            }
            for name, done in runs.items()
        },
        "ratio": statistics.median(ratios) if ratios else float("nan"),
        "target_fall": FALL_TARGET,
        "families_had_an_index": allocate,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    """Return the (measure, figure, ratio, target, met) row, as bench/report.py prints it."""
    with_, without = result["with"], result["without"]
    errors = with_["errors"] + without["errors"]
    fall = 1 - result["ratio"]
    return [
        (
            f"9. issuer `/token`, refresh grant, status lists on vs off ({result['rounds']} interleaved rounds)",
            f"{with_['rps']:,.0f} rps with, {without['rps']:,.0f} rps without"
            + (f"; {errors} errors" if errors else ""),
            f"{result['ratio']:.2f} ({-fall:+.1%})",
            f"fall ≤ {result['target_fall']:.0%}",
            errors == 0 and fall <= result["target_fall"],
        )
    ]


def main() -> int:
    """Run the comparison and print the row."""
    first_refresh = "--first-refresh" in sys.argv[1:]  # families without an index: each refresh allocates one
    for measure, figure, ratio, target, met in rows(run(allocate=not first_refresh)):
        print(f"{measure:62s} {figure:50s} {ratio:18s} {target:10s} {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
