"""Unit tests for shared.worker's reading of request heads (the worker itself: tests/integration/test_slow_clients.py)."""

from __future__ import annotations

import json

import pytest

from shared.worker import MAX_BUFFERED_BODY, header_timeout, read_head, request_bytes_needed

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /token HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
SPACED = b"POST /token HTTP/1.1\r\ncontent-length:  5 \r\n\r\n"
CHUNKED = b"POST /token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
EXPECTING = b"POST /token HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
TWO_LENGTHS = b"POST /token HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
ZEROS = b"POST /token HTTP/1.1\r\nContent-Length: 00000000000000000005\r\n\r\n"
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
        (EXPECTING, len(EXPECTING) + 5),  # the loop sends "100 Continue" and awaits the body
        (TWO_LENGTHS, len(TWO_LENGTHS)),  # the parser refuses it
        (ZEROS, len(ZEROS) + 5),  # as long as the parser reads it
    ],
)
def test_request_bytes_needed_counts_the_head_and_a_small_body_of_known_length(
    buffered: bytes, needed: int | None
) -> None:
    assert request_bytes_needed(buffered) == needed


@pytest.mark.parametrize(
    ("buffered", "status"),
    [
        (CHUNKED, 411),
        (b"POST /token HTTP/1.1\r\ntransfer-encoding : xchunked\r\n\r\n", 411),
        (b"GET / HTTP/1.1\nTransfer-Encoding: gzip, chunked\n\n", 411),
        (LARGE, 413),
        (b"POST /token HTTP/1.1\r\nContent-Length: 000%d\r\n\r\n" % (MAX_BUFFERED_BODY + 1), 413),
        (b"POST /token HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
    ],
)
def test_bodies_no_thread_may_read_are_refused_with_json(buffered: bytes, status: int) -> None:
    head = read_head(buffered)
    assert head is not None
    assert head.refusal is not None
    answer_head, _, body = head.refusal.partition(b"\r\n\r\n")
    assert answer_head.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nContent-Type: application/json\r\n" in answer_head
    assert b"\r\nConnection: close" in answer_head
    assert b"\r\nContent-Length: %d" % len(body) in answer_head
    assert json.loads(body)["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("buffered", "expects"),
    [
        (EXPECTING, True),
        (b"POST /token HTTP/1.1\r\nexpect:  100-Continue \r\nContent-Length: 5\r\n\r\n", True),
        (b"POST /token HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", False),  # RFC 9110 15.2
        (b"POST /token HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", False),
        (POST, False),
    ],
)
def test_a_100_continue_is_owed_only_to_an_http_1_1_client_with_a_body(buffered: bytes, expects: bool) -> None:
    head = read_head(buffered)
    assert head is not None
    assert head.refusal is None
    assert head.expects_continue is expects


@pytest.mark.parametrize(("value", "seconds"), [("", 5.0), ("1.5", 1.5), ("300", 300.0)])
def test_header_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv("GUNICORN_HEADER_TIMEOUT", value)
    assert header_timeout() == seconds


@pytest.mark.parametrize("value", ["0", "-1", "301", "soon", "nan"])
def test_header_timeout_refuses_what_cannot_work(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GUNICORN_HEADER_TIMEOUT", value)
    with pytest.raises(SystemExit, match="GUNICORN_HEADER_TIMEOUT"):
        header_timeout()
