"""Unit tests for shared.worker's reading of request heads (the worker itself: tests/integration/test_slow_clients.py)."""

from __future__ import annotations

import pytest

from shared.worker import MAX_BUFFERED_BODY, header_timeout, request_bytes_needed

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /token HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
SPACED = b"POST /token HTTP/1.1\r\ncontent-length:  5 \r\n\r\n"
CHUNKED = b"POST /token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
EXPECTING = b"POST /token HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
TWO_LENGTHS = b"POST /token HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
LARGE = b"POST /token HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BUFFERED_BODY + 1)


@pytest.mark.parametrize(
    ("buffered", "needed"),
    [
        (b"", None),
        (b"GET /healthz HT", None),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", None),
        (GET, len(GET)),
        (GET + GET, len(GET)),  # pipelined: the first request only
        (b"GET / HTTP/1.0\n\n", 16),  # a bare LF: the parser judges it
        (POST + b"ab", len(POST) + 5),  # the body is awaited
        (SPACED, len(SPACED) + 5),
        (CHUNKED, len(CHUNKED)),  # chunked: the thread reads it
        (EXPECTING, len(EXPECTING)),  # the client waits for "100 Continue", which the thread sends
        (TWO_LENGTHS, len(TWO_LENGTHS)),  # the parser refuses it
        (LARGE, len(LARGE)),  # the app refuses it
    ],
)
def test_request_bytes_needed_counts_the_head_and_a_small_body_of_known_length(
    buffered: bytes, needed: int | None
) -> None:
    assert request_bytes_needed(buffered) == needed


@pytest.mark.parametrize(("value", "seconds"), [("", 5.0), ("1.5", 1.5), ("300", 300.0)])
def test_header_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv("GUNICORN_HEADER_TIMEOUT", value)
    assert header_timeout() == seconds


@pytest.mark.parametrize("value", ["0", "-1", "301", "soon", "nan"])
def test_header_timeout_refuses_what_cannot_work(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GUNICORN_HEADER_TIMEOUT", value)
    with pytest.raises(SystemExit, match="GUNICORN_HEADER_TIMEOUT"):
        header_timeout()
