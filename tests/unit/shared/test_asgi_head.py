"""Unit tests for shared.asgi_head: HEAD answered as GET without the body, on a real uvicorn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from shared.asgi_head import HeadAsGet
from tests.support.asgi import serve_asgi


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = FastAPI()
    app.add_middleware(HeadAsGet)

    @app.get("/thing", name="thing")
    async def thing() -> JSONResponse:
        return JSONResponse({"thing": "x" * 100}, headers={"X-Thing": "yes"})

    @app.post("/form")
    async def form() -> dict[str, str]:
        return {}

    with serve_asgi(app) as base:
        yield base


def test_head_on_a_get_route_has_the_status_and_headers_of_get_and_no_body(url: str) -> None:
    got = requests.get(f"{url}/thing", timeout=10)
    head = requests.head(f"{url}/thing", timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["X-Thing"] == got.headers["X-Thing"] == "yes"
    assert head.headers["Content-Length"] == got.headers["Content-Length"]


def test_head_on_a_route_without_get_is_still_405(url: str) -> None:
    assert requests.head(f"{url}/form", timeout=10).status_code == 405


def test_other_methods_pass_through(url: str) -> None:
    assert requests.post(f"{url}/form", timeout=10).json() == {}
