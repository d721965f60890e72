"""The observability overlay: Prometheus scraping the compose stack, with the alert rules loaded.

One overlay for the module (compose.yaml + compose.observability.yaml) in a compose project of
its own on free ports; Prometheus is asked over its HTTP API on its published loopback port,
as an operator's browser asks it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.test_alert_rules import ALERTS
from tests.support.compose import REPO, ComposeStack
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.container

JOBS = {"prometheus", "issuer", "resource", "reports"}
N_TOKENS = 4
M_GOOD = 6
# Prometheus scrapes and evaluates every 5 s (deploy/prometheus/prometheus.yml).
SCRAPED = 40.0


@pytest.fixture(scope="module")
def observed(compose_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """Run the stack with the observability overlay."""
    running = ComposeStack(
        tmp_path_factory.mktemp("observability"),
        files=[REPO / "compose.observability.yaml"],
        env={"PROMETHEUS_PORT": str(free_port())},
        issuer_env={"ISSUER_REFRESH_REUSE_GRACE": "0"},
        reports=True,
    )
    try:
        running.up()
        wait_until(running.all_workers_hold_keys, timeout=60, what="every resource worker to load keys")
        wait_until(lambda: _ready(running), timeout=60, what="Prometheus to be ready")
    except BaseException:
        running.close()
        raise
    yield running
    running.close()


def _prometheus(stack: ComposeStack) -> str:
    return f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}"


def _ready(stack: ComposeStack) -> bool:
    try:
        return requests.get(f"{_prometheus(stack)}/-/ready", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def _api(stack: ComposeStack, path: str, **params: str) -> Any:
    """Return the `data` of a Prometheus HTTP API answer."""
    response = requests.get(f"{_prometheus(stack)}/api/v1/{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def _query(stack: ComposeStack, expr: str) -> float:
    """Return the value of an instant query with one result, 0 when it has none."""
    result = _api(stack, "query", query=expr)["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else 0.0


def _targets_up(stack: ComposeStack) -> dict[str, str]:
    return {target["labels"]["job"]: target["health"] for target in _api(stack, "targets")["activeTargets"]}


def test_every_service_and_prometheus_itself_are_scraped(observed: ComposeStack) -> None:
    wait_until(lambda: set(_targets_up(observed).values()) == {"up"}, timeout=SCRAPED, what="every target up")

    assert _targets_up(observed) == dict.fromkeys(JOBS, "up")
    assert _query(observed, "count(up == 1)") == len(JOBS)


def test_the_alert_rules_are_loaded_and_none_fires_at_start(observed: ComposeStack) -> None:
    groups = _api(observed, "rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    wait_until(
        lambda: all(rule["health"] == "ok" for group in _api(observed, "rules")["groups"] for rule in group["rules"]),
        timeout=SCRAPED,
        what="every rule evaluated",
    )

    assert {group["name"] for group in groups} == {"jwt-split-recording", "jwt-split-alerts"}
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == set(ALERTS)
    # At `up` the resource may start before the issuer answers: its first JWKS fetch fails and
    # JwtSplitJwksFetchFailing is pending, as it should be, but never fires for one failure.
    assert [alert for alert in _api(observed, "alerts")["alerts"] if alert["state"] == "firing"] == []


def test_known_traffic_shows_in_queries(observed: ComposeStack) -> None:
    issued = 'sum(jwt_split_tokens_issued_total{grant="password"})'
    valid = 'sum(jwt_split_token_verifications_total{job="resource",result="valid"})'
    forged = 'sum(jwt_split_token_verifications_total{job="resource",reason="malformed"})'
    wait_until(lambda: _query(observed, "count(up == 1)") == len(JOBS), timeout=SCRAPED, what="every target up")
    before = {expr: _query(observed, expr) for expr in (issued, valid, forged)}

    token = ""
    for _ in range(N_TOKENS):
        token = observed.token()["access_token"]
    statuses = [observed.get("/api/me", token).status_code for _ in range(M_GOOD)]
    refused = observed.get("/api/me", "not-a-jwt").status_code

    expected = {issued: before[issued] + N_TOKENS, valid: before[valid] + M_GOOD, forged: before[forged] + 1}
    assert statuses == [200] * M_GOOD
    assert refused == 401
    wait_until(
        lambda: all(_query(observed, expr) == want for expr, want in expected.items()),
        timeout=SCRAPED,
        what=f"Prometheus to see {expected}",
    )


def test_a_refresh_reuse_fires_its_alert(observed: ComposeStack) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": observed.token()["refresh_token"]}

    first = requests.post(f"{observed.issuer_url}/token", data=form, timeout=10)
    reused = requests.post(f"{observed.issuer_url}/token", data=form, timeout=10)

    assert (first.status_code, reused.status_code) == (200, 400)

    def firing() -> list[dict[str, Any]]:
        return [alert for alert in _api(observed, "alerts")["alerts"] if alert["state"] == "firing"]

    wait_until(lambda: firing(), timeout=SCRAPED, what="the refresh reuse alert to fire")
    assert [(alert["labels"]["alertname"], alert["labels"]["job"]) for alert in firing()] == [
        ("JwtSplitRefreshTokenReuse", "issuer")
    ]


def test_only_prometheus_is_published_and_on_loopback_only(observed: ComposeStack) -> None:
    published = observed.compose("port", "prometheus", "9090").stdout.strip()

    assert published == f"127.0.0.1:{observed.env['PROMETHEUS_PORT']}"
    for service, port in (("issuer", 9100), ("resource", 9101), ("reports", 9102)):
        assert observed.compose("port", service, str(port), check=False).stdout.strip() in {"", ":0"}
