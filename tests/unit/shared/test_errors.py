"""Unit tests for shared.errors: every failure leaves as `{"error", "error_description"}` JSON."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Response, abort, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from jwt_verifier.errors import KeysUnavailable, TokenExpired
from shared import errors
from shared.errors import ApiError, error_response


@pytest.fixture
def app() -> Flask:
    """A tiny app with JSON errors and routes that fail in each way."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64
    errors.init_app(app)

    @app.get("/ok")
    def ok() -> Response:
        return Response("{}", mimetype="application/json")

    @app.get("/api-error")
    def api_error() -> Response:
        raise ApiError("the thing is wrong", error="invalid_thing", status=422, headers={"X-Why": "because"})

    @app.get("/default-api-error")
    def default_api_error() -> Response:
        raise ApiError("plain")

    @app.get("/forbidden")
    def forbidden() -> Response:
        abort(403)

    @app.get("/teapot")
    def teapot() -> Response:
        abort(418)

    @app.get("/boom")
    def boom() -> Response:
        raise RuntimeError("secret internals")

    @app.post("/upload")
    def upload() -> Response:
        return Response(str(len(request.form)))

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _assert_json_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    return body


def test_api_error_renders_its_code_status_and_headers(client: FlaskClient) -> None:
    response = client.get("/api-error")
    body = _assert_json_error(response, 422, "invalid_thing")
    assert body["error_description"] == "the thing is wrong"
    assert response.headers["X-Why"] == "because"


def test_api_error_defaults_to_400_invalid_request(client: FlaskClient) -> None:
    _assert_json_error(client.get("/default-api-error"), 400, "invalid_request")


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    _assert_json_error(client.get("/missing"), 404, "not_found")


def test_wrong_method_is_405_json_with_allow_header(client: FlaskClient) -> None:
    response = client.delete("/ok")
    _assert_json_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_aborted_request_is_rendered_with_its_code(client: FlaskClient) -> None:
    _assert_json_error(client.get("/forbidden"), 403, "forbidden")


def test_unmapped_client_error_falls_back_to_invalid_request(client: FlaskClient) -> None:
    _assert_json_error(client.get("/teapot"), 418, "invalid_request")


def test_oversized_body_is_413_json(client: FlaskClient) -> None:
    _assert_json_error(client.post("/upload", data={"x": "y" * 200}), 413, "request_too_large")


def test_unexpected_exception_is_generic_500_without_details(client: FlaskClient) -> None:
    response = client.get("/boom")
    body = _assert_json_error(response, 500, "server_error")
    assert body["error_description"] == "The server hit an unexpected error."
    assert "secret internals" not in response.get_data(as_text=True)


def test_error_response_is_never_cached_even_if_caller_says_otherwise(app: Flask) -> None:
    with app.app_context():
        response = error_response(400, "x", "y", {"Cache-Control": "public, max-age=60", "X-Extra": "1"})
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Extra"] == "1"


def test_api_error_keeps_its_description_as_message() -> None:
    error = ApiError("why it failed", error="invalid_grant")
    assert str(error) == "why it failed"
    assert (error.status, error.error, error.headers) == (400, "invalid_grant", {})


def test_every_error_of_the_hierarchy_renders_as_json(app: Flask) -> None:
    @app.get("/expired")
    def expired() -> Response:
        raise TokenExpired("the token has expired")

    @app.get("/unavailable")
    def unavailable() -> Response:
        raise KeysUnavailable("no keys")

    client = app.test_client()
    response = client.get("/expired")
    body = _assert_json_error(response, 401, "invalid_token")
    assert body["error_description"] == "the token has expired"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="jwt-split", error="invalid_token"')
    response = client.get("/unavailable")
    _assert_json_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"
