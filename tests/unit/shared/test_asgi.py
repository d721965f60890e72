"""Unit tests for shared.asgi: a FastAPI service's plumbing, on a real uvicorn on loopback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from prometheus_client import REGISTRY

from shared import asgi, logs, tracing
from shared.errors import ApiError
from tests.support.asgi import serve_asgi


def _build() -> FastAPI:
    app = FastAPI()
    asgi.init_app(app)

    @app.get("/ok", name="ok")
    async def ok() -> dict[str, str]:
        logging.getLogger("test.asgi").info("inside")
        return {"status": "ok"}

    @app.get("/api-error")
    async def api_error() -> None:
        raise ApiError("the thing is wrong", error="invalid_thing", status=422, headers={"X-Why": "because"})

    @app.get("/busy")
    async def busy() -> None:
        raise ApiError("try later", error="temporarily_unavailable", status=503)

    @app.get("/count/{n}")
    async def count(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/trace")
    def trace() -> dict[str, str | None]:
        # A sync route: FastAPI runs it in a worker thread, where the request's context must follow.
        context = tracing.current()
        return {"trace_id": context.trace_id if context else None, "request_id": logs.REQUEST_ID.get()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_asgi(_build()) as url:
        yield url


def _assert_json_error(response: requests.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    return body


def _requests(endpoint: str, status: str) -> float:
    labels = {"endpoint": endpoint, "method": "GET", "status": status}
    return REGISTRY.get_sample_value("jwt_split_http_requests_total", labels) or 0.0


def test_every_answer_has_a_request_id_and_nosniff(base_url: str) -> None:
    response = requests.get(f"{base_url}/ok", timeout=10)
    assert response.status_code == 200
    assert len(response.headers["X-Request-ID"]) == 32
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_sane_request_id_is_kept_and_a_hostile_one_replaced(base_url: str) -> None:
    kept = requests.get(f"{base_url}/ok", headers={"X-Request-ID": "abc-123"}, timeout=10)
    assert kept.headers["X-Request-ID"] == "abc-123"
    replaced = requests.get(f"{base_url}/ok", headers={"X-Request-ID": "a b<script>"}, timeout=10)
    assert replaced.headers["X-Request-ID"] != "a b<script>"


def test_api_error_renders_its_code_status_and_headers(base_url: str) -> None:
    response = requests.get(f"{base_url}/api-error", timeout=10)
    body = _assert_json_error(response, 422, "invalid_thing")
    assert body["error_description"] == "the thing is wrong"
    assert response.headers["X-Why"] == "because"


def test_a_503_says_when_to_retry(base_url: str) -> None:
    response = requests.get(f"{base_url}/busy", timeout=10)
    _assert_json_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_unknown_route_is_404_json(base_url: str) -> None:
    _assert_json_error(requests.get(f"{base_url}/missing", timeout=10), 404, "not_found")


def test_wrong_method_is_405_json_with_allow_header(base_url: str) -> None:
    response = requests.delete(f"{base_url}/ok", timeout=10)
    _assert_json_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_a_request_that_fails_validation_is_400_without_echoing_it(base_url: str) -> None:
    response = requests.get(f"{base_url}/count/<secret>", timeout=10)
    body = _assert_json_error(response, 400, "invalid_request")
    assert "secret" not in response.text
    assert "path.n" in body["error_description"]


def test_unexpected_exception_is_generic_500_without_details(base_url: str) -> None:
    response = requests.get(f"{base_url}/boom", timeout=10)
    body = _assert_json_error(response, 500, "server_error")
    assert body["error_description"] == "The server hit an unexpected error."
    assert "secret internals" not in response.text


def test_requests_are_counted_by_route_name(base_url: str) -> None:
    before_ok, before_unmatched = _requests("ok", "200"), _requests("unmatched", "404")
    requests.get(f"{base_url}/ok", timeout=10)
    requests.get(f"{base_url}/nowhere", timeout=10)
    assert _requests("ok", "200") == before_ok + 1
    assert _requests("unmatched", "404") == before_unmatched + 1


def test_log_lines_of_a_request_carry_its_id(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("test")
    try:
        requests.get(f"{base_url}/ok?code=secret", headers={"X-Request-ID": "req-42"}, timeout=10)
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    inside = [line for line in lines if line["msg"] == "inside"]
    access = [line for line in lines if line["msg"] == "request" and line.get("path") == "/ok"]
    assert inside[0]["request_id"] == "req-42"
    assert access[0]["request_id"] == "req-42"
    assert access[0]["status"] == 200
    assert "secret" not in json.dumps(access)


def test_a_request_continues_the_callers_trace_into_worker_threads(base_url: str) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Request-ID": "req-7"}
    answer = requests.get(f"{base_url}/trace", headers=headers, timeout=10).json()
    assert answer == {"trace_id": trace_id, "request_id": "req-7"}


def test_a_request_without_a_caller_trace_starts_its_own(base_url: str) -> None:
    answer = requests.get(f"{base_url}/trace", timeout=10).json()
    assert answer["trace_id"] is not None
    assert len(answer["trace_id"]) == 32
