"""The revocation rows of `make bench`: percentiles by nearest rank, and each verdict against its target."""

from __future__ import annotations

from typing import Any

from bench import revocation


def _result(reach: list[float], *, missed: int = 0, lists: int = 100, index: int = 0) -> dict[str, Any]:
    seconds = 100.0
    return {
        "count": len(reach),
        "seconds": seconds,
        "target_s": 2.0,
        "first_sight": {
            "plain_us": 30.0,
            "status_us": 31.0,
            "plain_best_us": 28.0,
            "status_best_us": 29.0,
            "ratio": 1.0,
        },
        "apis": {
            "profile API": {
                "workers": 2,
                "refusals": len(reach),
                "missed": missed,
                **revocation._summary(reach),
                "accept_probes_median": 4,
            }
        },
        "fetches": {
            "processes": 1,
            "list_requests": lists,
            "not_modified": 0,
            "distinct_lists": 1,
            "index_requests": index,
            "per_process_per_second": lists / seconds,
            "index_per_process_per_second": index / seconds,
            "target": 1.0,
        },
    }


def test_p99_is_the_nearest_rank() -> None:
    values = [i / 100 for i in range(1, 201)]  # 0.01 .. 2.00
    summary = revocation._summary(values)
    assert summary["p99_s"] == 1.98
    assert summary["max_s"] == 2.0
    assert revocation._summary([0.5])["p99_s"] == 0.5


def test_the_reach_verdict_follows_p99_and_misses() -> None:
    fast = revocation.rows(_result([0.5] * 99 + [1.9]))
    assert fast[0][4] is True
    slow = revocation.rows(_result([0.5] * 98 + [2.5, 2.5]))
    assert slow[0][4] is False
    never = revocation.rows(_result([0.5] * 100, missed=1))
    assert never[0][4] is False
    assert "never refused" in never[0][1]


def test_index_reads_count_toward_the_one_per_second_target() -> None:
    within = revocation.rows(_result([0.5], lists=90, index=10))
    assert within[-1][4] is True
    over = revocation.rows(_result([0.5], lists=100, index=20))
    assert over[-1][4] is False
    assert "1.20/s" in over[-1][2]


def test_first_sight_is_judged_on_the_best_rounds() -> None:
    row = next(r for r in revocation.rows(_result([0.5])) if "first sight" in r[0])
    assert row[4] is True  # 29 over 28 is +3.6%
    result = _result([0.5])
    result["first_sight"]["status_best_us"] = 30.0  # +7.1%
    assert next(r for r in revocation.rows(result) if "first sight" in r[0])[4] is False


def _refresh(with_rps: float, without_rps: float, ratio: float, errors: int = 0) -> dict[str, Any]:
    return {
        "rounds": 3,
        "seconds": 2.0,
        "with": {"rps": with_rps, "rps_rounds": [with_rps] * 3, "errors": errors},
        "without": {"rps": without_rps, "rps_rounds": [without_rps] * 3, "errors": 0},
        "ratio": ratio,
        "target_fall": 0.10,
        "families_had_an_index": True,
    }


def test_the_refresh_row_is_met_at_a_fall_of_ten_percent_at_most_and_without_errors() -> None:
    def verdict(refresh: dict[str, Any]) -> bool | None:
        rows = revocation.rows({**_result([0.5] * 100), "refresh": refresh})
        (row,) = [r for r in rows if "refresh grant" in r[0]]
        return row[4]

    assert verdict(_refresh(380, 400, 0.95)) is True
    assert verdict(_refresh(360, 400, 0.90)) is True
    assert verdict(_refresh(340, 400, 0.85)) is False
    assert verdict(_refresh(390, 400, 0.97, errors=3)) is False
