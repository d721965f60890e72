"""Unit tests for shared.metrics: bounded HTTP labels (the route's endpoint, never the path)."""

from __future__ import annotations

import pytest
from flask import Flask, Response
from prometheus_client import REGISTRY

from shared import web


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
