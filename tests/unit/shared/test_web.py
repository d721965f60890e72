"""Unit tests for shared.web: request ids, default security headers and the access log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient

from shared import web


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app() -> Flask:
    """A tiny app wired with the shared plumbing."""
    app = Flask(__name__)
    web.init_app(app)

    @app.get("/ok")
    def ok() -> Response:
        return Response('{"ok": true}', mimetype="application/json")

    @app.get("/page")
    def page() -> Response:
        return Response("<p>hi</p>", mimetype="text/html")

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def access_log() -> Iterator[list[logging.LogRecord]]:
    """Collect the records of the `access` logger."""
    handler = _Records()
    logger = logging.getLogger("access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# -- request ids and headers --------------------------------------------------------------


def test_well_formed_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.get("/ok", headers={"X-Request-ID": "abc-123_x.y"})
    assert response.headers["X-Request-ID"] == "abc-123_x.y"


@pytest.mark.parametrize("supplied", ["", "has space", "x" * 65, "<script>", "a\u00e9"])
def test_malformed_request_id_is_replaced(client: FlaskClient, supplied: str) -> None:
    response = client.get("/ok", headers={"X-Request-ID": supplied})
    generated = response.headers["X-Request-ID"]
    assert generated != supplied
    assert len(generated) == 32
    assert all(c in "0123456789abcdef" for c in generated)


def test_error_responses_carry_a_request_id(client: FlaskClient) -> None:
    assert len(client.get("/missing").headers["X-Request-ID"]) == 32


def test_every_response_gets_nosniff(client: FlaskClient) -> None:
    assert client.get("/ok").headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/missing").headers["X-Content-Type-Options"] == "nosniff"


def test_html_gets_security_headers_and_json_does_not(client: FlaskClient) -> None:
    html = client.get("/page")
    assert "default-src 'none'" in html.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in html.headers["Content-Security-Policy"]
    assert html.headers["X-Frame-Options"] == "DENY"
    # Referrers must not carry paths or query strings (codes) to other origins.
    assert html.headers["Referrer-Policy"] in {"no-referrer", "same-origin"}
    assert "Content-Security-Policy" not in client.get("/ok").headers


def test_default_csp_allows_no_script_and_forms_only_to_self() -> None:
    csp = web.content_security_policy()
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "form-action 'self';" in csp


def test_csp_can_allow_form_targets() -> None:
    csp = web.content_security_policy(("http://localhost:8001",))
    assert "form-action 'self' http://localhost:8001;" in csp


def test_app_config_overrides_the_csp(app: Flask, client: FlaskClient) -> None:
    app.config["CONTENT_SECURITY_POLICY"] = "default-src 'none'"
    assert client.get("/page").headers["Content-Security-Policy"] == "default-src 'none'"


def test_access_log_has_one_line_with_path_but_no_query(
    client: FlaskClient, access_log: list[logging.LogRecord]
) -> None:
    client.get("/ok?code=secret-code", headers={"X-Request-ID": "req-1"})
    assert len(access_log) == 1
    fields = access_log[0].fields  # type: ignore[attr-defined]
    assert fields["path"] == "/ok"
    assert fields["method"] == "GET"
    assert fields["status"] == 200
    assert isinstance(fields["ms"], float)
    assert "secret-code" not in repr(fields)
