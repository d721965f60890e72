"""Prometheus metrics of the real gunicorn services: known traffic, exact counter deltas by label.

Each service runs three workers; its metrics port is scraped over HTTP, so every count below is
the sum over the workers that happened to answer (prometheus_client's multiprocess mode). The
traffic tests run on both backends: gunicorn processes on loopback, and the compose containers
(marked `container`), whose metrics ports are read inside each container as Prometheus on the
compose network reads them (compose publishes none).
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.compose import ComposeStack
from tests.support.metrics import Samples, delta, deltas, parse, scrape, value
from tests.support.processes import issuer_process, wait_until
from tests.support.stack import LoopbackStack, Stack
from tests.support.tokens import make_claims, new_rsa_key, sign

WORKERS = 3
N_TOKENS = 3
M_GOOD = 7


@pytest.fixture(scope="module", params=[pytest.param("loopback"), pytest.param("compose", marks=pytest.mark.container)])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Run the issuer, the resource and the reports API, three workers each, on one backend."""
    if request.param == "compose":
        request.getfixturevalue("compose_images")
    backend = ComposeStack if request.param == "compose" else LoopbackStack
    started = backend(
        tmp_path_factory.mktemp(f"metrics-{request.param}"),
        issuer_env={"ISSUER_REFRESH_REUSE_GRACE": "0", "ISSUER_LOGIN_RATE_LIMIT": "2 per minute"},
        workers=WORKERS,
        reports=True,
    )
    try:
        yield started.start()
    finally:
        started.close()


def _scrape(stack: Stack, service: str) -> Samples:
    """Return the samples of `service` ("issuer", "resource" or "reports")."""
    if isinstance(stack, ComposeStack):
        return parse(stack.metrics_text(service))
    assert isinstance(stack, LoopbackStack)
    return scrape(getattr(stack, service).metrics_url)


def _issuer(stack: Stack) -> Samples:
    return _scrape(stack, "issuer")


def _resource(stack: Stack) -> Samples:
    return _scrape(stack, "resource")


def test_the_apps_do_not_serve_metrics_on_their_own_ports(stack: Stack) -> None:
    for service, url in (
        ("issuer", stack.issuer_url),
        ("resource", stack.resource_url),
        ("reports", stack.reports_url),
    ):
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 404
        counted = _scrape(stack, service)
        assert value(counted, "jwt_split_http_requests_total", endpoint="unmatched", method="GET", status="404") >= 1


def test_the_metrics_port_is_not_the_app_port(tmp_path: Path) -> None:
    stack = LoopbackStack(tmp_path, workers=1)
    stack.start_issuer()
    try:
        assert stack.issuer.metrics_port != stack.issuer.port
        assert "jwt_split_http_requests_total" in requests.get(stack.issuer.metrics_url, timeout=10).text
    finally:
        stack.stop_issuer()


def test_every_api_worker_counts_its_first_jwks_fetch(stack: Stack) -> None:
    resource = _resource(stack)

    assert value(resource, "jwt_split_jwks_fetches_total", result="ok", cause="initial") == WORKERS
    assert value(resource, "jwt_split_jwks_keys") == 1


def test_tokens_logins_and_token_errors_count_exactly(stack: Stack) -> None:
    before = _issuer(stack)

    for _ in range(N_TOKENS):
        stack.token()
    bad = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "password", "username": "bob", "password": "wrong"},
        timeout=10,
    )
    unsupported = requests.post(f"{stack.issuer_url}/token", data={"grant_type": "magic"}, timeout=10)

    after = _issuer(stack)
    assert (bad.status_code, unsupported.status_code) == (400, 400)
    assert delta(before, after, "jwt_split_tokens_issued_total", grant="password", client_id="cli") == N_TOKENS
    assert deltas(before, after, "jwt_split_tokens_issued_total", "grant") == {"password": N_TOKENS}
    assert deltas(before, after, "jwt_split_logins_total", "result") == {"success": N_TOKENS, "failure": 1}
    assert delta(before, after, "jwt_split_token_errors_total", grant="password", error="invalid_grant") == 1
    assert delta(before, after, "jwt_split_token_errors_total", grant="other", error="unsupported_grant_type") == 1
    assert (
        delta(before, after, "jwt_split_http_requests_total", endpoint="oauth.token", method="POST", status="200")
        == N_TOKENS
    )
    assert (
        delta(before, after, "jwt_split_http_requests_total", endpoint="oauth.token", method="POST", status="400") == 2
    )
    assert delta(before, after, "jwt_split_http_request_duration_seconds_count", endpoint="oauth.token") == N_TOKENS + 2


def test_good_and_forged_api_calls_count_once_each_by_reason(stack: Stack) -> None:
    token = stack.token()["access_token"]
    kid, real_key = stack.active_private_key()
    issuer = stack.public_issuer
    forged = {
        "bad_signature": sign(make_claims(issuer=issuer), new_rsa_key(), kid=kid),
        "expired": sign(make_claims(issuer=issuer, exp=int(time.time()) - 600, iat=int(time.time()) - 900), real_key),
        "wrong_audience": sign(make_claims(issuer=issuer, audience="someone-else"), real_key),
        "wrong_issuer": sign(make_claims(issuer="https://evil.example"), real_key),
        "malformed": "not-a-jwt",
    }
    before = _resource(stack)

    statuses = [stack.get("/api/me", token).status_code for _ in range(M_GOOD)]
    refused = {reason: stack.get("/api/me", bad).status_code for reason, bad in forged.items()}
    missing = stack.get("/api/me").status_code

    after = _resource(stack)
    assert statuses == [200] * M_GOOD
    assert set(refused.values()) == {401}
    assert missing == 401
    assert delta(before, after, "jwt_split_token_verifications_total", result="valid", reason="none") == M_GOOD
    assert deltas(before, after, "jwt_split_token_verifications_total", "reason") == {
        "none": M_GOOD,
        **dict.fromkeys(forged, 1),
    }
    # Every token reaching the verifier is looked up once in its worker's cache, hit or miss.
    cache = deltas(before, after, "jwt_split_verified_token_cache_total", "result")
    assert cache["hit"] + cache["miss"] == M_GOOD + len(forged)
    assert cache["miss"] >= len(forged) + 1
    assert (
        delta(before, after, "jwt_split_http_requests_total", endpoint="api.me", method="GET", status="200") == M_GOOD
    )
    assert (
        delta(before, after, "jwt_split_http_requests_total", endpoint="api.me", method="GET", status="401")
        == len(forged) + 1
    )


def test_an_unknown_kid_costs_one_jwks_fetch_for_an_unknown_kid(stack: Stack) -> None:
    before = _resource(stack)

    response = stack.get("/api/me", sign(make_claims(issuer=stack.public_issuer), new_rsa_key()))

    after = _resource(stack)
    assert response.status_code == 401
    assert delta(before, after, "jwt_split_token_verifications_total", result="invalid", reason="unknown_key") == 1
    assert deltas(before, after, "jwt_split_jwks_fetches_total", "cause") == {"unknown_kid": 1}


def test_a_refresh_reuse_is_counted_once(stack: Stack) -> None:
    refresh_token = stack.token()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    before = _issuer(stack)

    first = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)
    reused = requests.post(f"{stack.issuer_url}/token", data=form, timeout=10)

    after = _issuer(stack)
    assert (first.status_code, reused.status_code) == (200, 400)
    assert delta(before, after, "jwt_split_refresh_reuse_detected_total") == 1
    assert delta(before, after, "jwt_split_tokens_issued_total", grant="refresh_token", client_id="cli") == 1
    assert delta(before, after, "jwt_split_token_errors_total", grant="refresh_token", error="invalid_grant") == 1


def test_a_rate_limited_login_is_counted_by_its_limit(stack: Stack) -> None:
    before = _issuer(stack)

    # One keep-alive connection: one worker, whose in-memory limit counters see all three.
    with requests.Session() as session:
        statuses = [
            session.post(
                f"{stack.issuer_url}/token",
                data={"grant_type": "password", "username": "limited", "password": "wrong"},
                timeout=10,
            ).status_code
            for _ in range(3)
        ]

    after = _issuer(stack)
    assert statuses == [400, 400, 429]
    assert deltas(before, after, "jwt_split_rate_limited_total", "limit") == {"password-account": 1}
    assert deltas(before, after, "jwt_split_logins_total", "result") == {"failure": 2}


def test_a_rotation_shows_in_the_signing_key_gauges(stack: Stack) -> None:
    before = _issuer(stack)
    assert value(before, "jwt_split_signing_keys", state="active") == 1
    assert value(before, "jwt_split_signing_keys", state="next") == 0
    assert 0 <= value(before, "jwt_split_signing_key_age_seconds") < 3600

    rotated = stack.issuer_cli("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=10)  # read fresh by the worker serving it

    after = _issuer(stack)
    assert value(after, "jwt_split_signing_keys", state="next") == 1
    assert value(after, "jwt_split_signing_keys", state="active") == 1


def test_the_reports_api_counts_its_own_requests_and_unmatched_paths_get_one_label(stack: Stack) -> None:
    before = _scrape(stack, "reports")

    refused = stack.get_reports("/api/report", "not-a-jwt")
    unknown = [stack.get_reports(f"/no/such/path/{n}").status_code for n in range(3)]

    after = _scrape(stack, "reports")
    assert refused.status_code == 401
    assert unknown == [404, 404, 404]
    assert deltas(before, after, "jwt_split_token_verifications_total", "reason") == {"malformed": 1}
    assert delta(before, after, "jwt_split_http_requests_total", endpoint="unmatched", method="GET", status="404") == 3
    assert not any("/no/such/path" in str(labels) for _, labels in after)


def _metrics_dir_of(pid: int) -> Path | None:
    """Return the multiprocess directory holding a file of process `pid`, if any."""
    for candidate in (
        *Path("/dev/shm").glob("jwt-split-metrics-*"),
        *Path(tempfile.gettempdir()).glob("jwt-split-metrics-*"),
    ):
        if any(candidate.glob(f"*_{pid}.db")):
            return candidate
    return None


def test_a_stopped_service_removes_its_private_metrics_directory(tmp_path: Path) -> None:
    stack = LoopbackStack(tmp_path, workers=2)
    stack.start_issuer()
    try:
        assert requests.get(f"{stack.issuer_url}/healthz", timeout=10).status_code == 200
        workers = stack.issuer.worker_pids()
        wait_until(lambda: any(map(_metrics_dir_of, workers)), what="a worker to write its metrics")
        directory = next(d for d in map(_metrics_dir_of, workers) if d is not None)
        assert directory.stat().st_mode & 0o777 == 0o700
    finally:
        stack.stop_issuer()
    assert not directory.exists()


def test_a_metrics_port_in_use_stops_the_service_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        issuer = issuer_process(tmp_path, data_dir=tmp_path / "data", env={"ISSUER_METRICS_PORT": str(port)})
        issuer.start()
        assert issuer.proc is not None
        try:
            code = issuer.proc.wait(timeout=30)
        finally:
            issuer.stop()

    output = issuer.log()
    assert code != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in output
    assert "Traceback" not in output
    assert "Booting worker" not in output
