"""The alert rules of deploy/prometheus/ checked and unit-tested by promtool (Debian's prometheus package).

`promtool test rules` runs alerts.test.yml: each alert fires on the series it is about and stays
silent on a harmless one. To show those tests have teeth, each alert is also replaced by one
that never fires and by one that always fires: promtool must then fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
ALERTS = (
    "JwtSplitRefreshTokenReuse",
    "JwtSplitJwksFetchFailing",
    "JwtSplitSigningKeyTooOld",
    "JwtSplitHigh5xxRate",
    "JwtSplitLoginFailureSpike",
)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (never skip) when it is not installed."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: `make services` installs Debian's prometheus package", pytrace=False)
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def exported_names() -> set[str]:
    """Return every sample name the services export (shared.metrics)."""
    names: set[str] = set()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def with_expr(rules: str, alert: str, expr: str) -> str:
    """Return `rules` with the (possibly multi-line) expression of `alert` replaced by `expr`."""
    lines = rules.splitlines()
    start = lines.index(f"      - alert: {alert}")
    at = next(n for n in range(start, len(lines)) if lines[n].startswith("        expr:"))
    end = at + 1
    while lines[end].startswith("          "):  # the lines of a block scalar
        end += 1
    return "\n".join([*lines[:at], f"        expr: {expr}", *lines[end:]]) + "\n"


def test_promtool_accepts_the_rules_and_the_scrape_configuration() -> None:
    rules = promtool("check", "rules", RULES.name)
    config = promtool("check", "config", "prometheus.yml")

    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_on_its_input_and_stays_silent_otherwise() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)

    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert set(re.findall(r"- alert: (\w+)", RULES.read_text())) == tested == set(ALERTS)


@pytest.mark.parametrize("alert", ALERTS)
@pytest.mark.parametrize("expr", ["vector(0) > 1", "vector(1)"], ids=["never", "always"])
def test_the_rule_tests_fail_for_an_alert_that_never_or_always_fires(alert: str, expr: str, tmp_path: Path) -> None:
    (tmp_path / RULES.name).write_text(with_expr(RULES.read_text(), alert, expr))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)

    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)

    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_the_rules_use_only_metrics_the_services_export() -> None:
    used = set(re.findall(r"(?<![\w:])jwt_split_\w+", RULES.read_text()))
    exported = exported_names()

    assert used, "no metric found in the rules"
    assert used <= exported, f"not exported by shared.metrics: {sorted(used - exported)}"
    assert {"jwt_split_refresh_reuse_detected_total", "jwt_split_signing_key_age_seconds"} <= used
