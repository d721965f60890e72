"""`make bench`'s table carries the revocation rows (9) and DPoP's rows (10) beside the others."""

from __future__ import annotations

from typing import Any

from bench import micro, report
from tests.unit.bench.test_revocation_rows import _result


def _run(rps: float, ratio: float = 1.0) -> dict[str, Any]:
    return {"rps": rps, "cpu_us_per_request": 1e6 / rps, "ratio_to_plain": ratio, "errors": 0, "p99_ms": 10.0}


def _results() -> dict[str, Any]:
    micro_figures = {
        "rsa_verify_us": 25.0,
        "verify_first_us": 30.0,
        "verify_first_stored_us": 31.0,
        "verify_cached_us": 1.0,
        "mint_us": 800.0,
        "rsa_sign_us": 760.0,
        **dict.fromkeys(micro.COMPARED, 100.0),
    }
    return {
        "date": "2026-12-06 21:00 UTC",
        "machine": "test",
        "python": "3.11",
        "seconds_per_run": 2,
        "rounds": 5,
        "micro": micro_figures,
        "http": {
            "plain": _run(2000),
            "local_repeated": _run(1900, 0.95),
            "local_new": _run(1600, 0.8),
            "introspection": {**_run(300, 0.15), "ratio_local_new_over_introspection": 5.3},
        },
        "issuer_http": {"plain": _run(2000), "refresh": _run(400)},
        "jwks": {"fetches": 4, "workers": 4, "seconds": 70.0, "max_age": 300},
        "rss_mib": {"issuer": [50.0]},
        "revocation": _result([0.5] * 100),
        "dpop": {
            **{"floor_us": 170.0, "dpop_sqlite_us": 260.0, "dpop_memory_us": 200.0},  # a loaded machine's medians
            **{"floor_best_us": 85.0, "dpop_sqlite_best_us": 130.0, "dpop_memory_best_us": 100.0},
            "steps": {
                "raw_rs256_us": 20.0,
                "raw_es256_us": 65.0,
                "request_sqlite_us": 130.0,
                "request_memory_us": 100.0,
            },
        },
    }


def test_the_table_has_the_revocation_and_dpop_rows_with_their_verdicts() -> None:
    rows = {measure: (ratio, target, met) for measure, _, ratio, target, met in report.rows(_results())}
    reach = rows["9. revocation reach, profile API (2 workers, 100 revocations)"]
    assert reach[1:] == ("p99 ≤ 2 s", True)
    # The verdict is on the best single requests against the best single raw verifies.
    sqlite = rows["10. DPoP-bound request, first sight, fresh proof (SQLite replay store)"]
    assert (sqlite[0].split()[0], sqlite[1:]) == ("1.53x", ("≤ 1.25x", False))
    memory = rows["10. DPoP-bound request, first sight, fresh proof (in-process replay store)"]
    assert (memory[0].split()[0], memory[1:]) == ("1.18x", ("≤ 1.25x", True))
    table = report.table(_results())
    assert "| 9. conditional requests to the issuer's status lists, per verifier process |" in table
    assert "**missed**" in table
