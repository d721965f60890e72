"""Rows 8a and 8b set `/api/caller` beside `/healthz` sent the same requests, each with its verdict."""

from __future__ import annotations

from typing import Any

from bench import report


def _run(rps: float, cpu_us: float, ratio: float = 1.0) -> dict[str, Any]:
    return {"rps": rps, "cpu_us_per_request": cpu_us, "ratio_to_plain": ratio}


def test_each_protected_row_is_compared_with_healthz_sent_the_same_requests() -> None:
    measured = {
        "settings": "-k shared.asgi_worker.AsgiWorker -w4",
        "plain": _run(2000, 500),
        "plain_repeated": _run(1900, 520, 0.95),
        "protected_repeated": _run(1800, 600, 0.92),
        "plain_new": _run(1500, 650, 0.75),
        "protected_new": _run(1050, 800, 0.70),
        "protected_new_over_bare": 0.52,
    }
    rows = {
        measure: (figure, ratio, target, met) for measure, figure, ratio, target, met in report.reports_rows(measured)
    }
    assert rows["8. reports `/healthz`, sent the repeated token"][1:] == ("1.00 (0.95 of no token)", "floor", None)
    assert rows["8. reports `/healthz`, sent a new token every request"][1:] == (
        "1.00 (0.75 of no token)",
        "floor",
        None,
    )
    # CPU ratios are to the floor of the same requests: 520/600 and 650/800, not to the bare 500.
    assert rows["8a. reports `/api/caller` (protected), repeated token"][1:] == ("0.92 (CPU: 0.87)", "≥ 0.9", True)
    assert rows["8b. reports `/api/caller`, new token every request"][1:] == ("0.70 (CPU: 0.81)", "≥ 0.75", False)
