"""Unit tests for shared.httpread: a peer's whole answer within a total deadline and a size limit."""

from __future__ import annotations

import time

import pytest
import requests

from shared.httpread import deadline, read_within
from tests.support.fakes import JwksServer, finishes_within


def test_read_within_returns_the_status_headers_and_body(jwks_server: JwksServer) -> None:
    jwks_server.answer(201, b'{"ok": true}', {"Content-Type": "application/json", "X-Test": "yes"})
    answer = read_within(requests.Session(), "GET", jwks_server.url, timeout=2.0, max_bytes=100)
    assert (answer.status, answer.headers["X-Test"], answer.body) == (201, "yes", b'{"ok": true}')


def test_a_body_over_the_limit_is_none(jwks_server: JwksServer) -> None:
    jwks_server.answer(200, b"x" * 101)
    assert read_within(requests.Session(), "GET", jwks_server.url, timeout=2.0, max_bytes=100).body is None


def test_a_redirect_is_returned_not_followed(jwks_server: JwksServer) -> None:
    jwks_server.answer(302, b"", {"Location": "/elsewhere"})
    assert read_within(requests.Session(), "GET", jwks_server.url, timeout=2.0, max_bytes=100).status == 302
    assert jwks_server.paths == [jwks_server.path]


@pytest.mark.parametrize("part", ["headers", "body"])
def test_an_answer_trickling_in_ends_at_the_deadline(jwks_server: JwksServer, part: str) -> None:
    jwks_server.answer(200, b"x" * 200)
    jwks_server.trickle_in(part, interval=0.2)
    session = requests.Session()
    started = time.monotonic()
    with pytest.raises(requests.RequestException):
        finishes_within(
            3, jwks_server, lambda: read_within(session, "GET", jwks_server.url, timeout=0.8, max_bytes=1000)
        )
    assert time.monotonic() - started >= 0.8  # each byte came in time: only the deadline ended it


def test_nested_deadlines_keep_the_earlier_one() -> None:
    with deadline(10) as outer, deadline(60) as inner:
        assert inner == outer
