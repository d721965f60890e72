"""Unit tests for shared.metrics: bounded HTTP labels (the route's endpoint, never the path)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from flask import Flask, Response
from prometheus_client import REGISTRY

from shared import web
from shared.metrics import _ExporterServer


@pytest.fixture
def app() -> Flask:
    """A tiny app wired with the shared plumbing (which installs the metrics)."""
    app = Flask(__name__)
    web.init_app(app)

    @app.get("/items/<int:item>")
    def item(item: int) -> Response:
        return Response(str(item))

    return app


def _requests(endpoint: str, method: str, status: str) -> float:
    labels = {"endpoint": endpoint, "method": method, "status": status}
    return REGISTRY.get_sample_value("jwt_split_http_requests_total", labels) or 0.0


def _timed(endpoint: str) -> float:
    return REGISTRY.get_sample_value("jwt_split_http_request_duration_seconds_count", {"endpoint": endpoint}) or 0.0


def test_requests_are_counted_by_endpoint_never_by_path(app: Flask) -> None:
    before = _requests("item", "GET", "200"), _timed("item")

    for n in (1, 2, 3):
        assert app.test_client().get(f"/items/{n}").status_code == 200

    assert (_requests("item", "GET", "200"), _timed("item")) == (before[0] + 3, before[1] + 3)


def test_unmatched_paths_and_unknown_methods_share_fixed_labels(app: Flask) -> None:
    not_found, other = _requests("unmatched", "GET", "404"), _requests("unmatched", "OTHER", "405")

    for n in range(3):
        assert app.test_client().get(f"/random-{n}-path").status_code == 404
    assert app.test_client().open("/items/1", method="BREW").status_code == 405

    assert _requests("unmatched", "GET", "404") == not_found + 3
    assert _requests("unmatched", "OTHER", "405") == other + 1
    sampled = {s.labels.get("endpoint") for m in REGISTRY.collect() for s in m.samples}
    assert not any("random" in str(label) for label in sampled)


def _failing_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    raise RuntimeError("the collector broke")


@pytest.fixture
def exporter() -> Iterator[_ExporterServer]:
    """The exporter's server on a loopback port, serving an app that fails."""
    server = _ExporterServer(("127.0.0.1", 0), socket.AF_INET)
    server.set_app(_failing_app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_failed_scrape_is_one_log_record_not_a_traceback_on_stderr(
    exporter: _ExporterServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.metrics")
    with socket.create_connection(("127.0.0.1", exporter.server_address[1]), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.0 500 ")
    # The client may hang up before the server has written all: a debug record of that may follow.
    records = [r for r in caplog.records if r.name == "shared.metrics" and r.levelno >= logging.INFO]
    assert [(r.levelname, r.getMessage()) for r in records] == [("INFO", "metrics scrape failed")]
    assert records[0].fields == {"error": "RuntimeError: the collector broke"}  # type: ignore[attr-defined]
    assert "Traceback" not in capfd.readouterr().err


def test_a_failed_connection_is_a_debug_record_not_a_traceback_on_stderr(
    exporter: _ExporterServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.metrics")
    try:
        raise TimeoutError("timed out")  # as a stalled client's read raises it in the handler
    except TimeoutError:
        exporter.handle_error(None, ("127.0.0.1", 1))
    records = [r for r in caplog.records if r.name == "shared.metrics"]
    assert [(r.levelname, r.getMessage()) for r in records] == [("DEBUG", "metrics connection failed")]
    assert capfd.readouterr().err == ""
