"""Unit tests for shared.tracing: the strict traceparent parser, tracestate bounds, spans and their headers."""

from __future__ import annotations

import http.server
import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
import requests
from flask import Flask, Response
from hypothesis import given
from hypothesis import strategies as st

from shared import logs, tracing, web
from shared.tracing import TraceContext, parse_traceparent, parse_tracestate

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"

HEX = "0123456789abcdef"
hex_strings = st.text(alphabet=HEX, min_size=1, max_size=40)


def test_a_valid_traceparent_gives_its_ids_and_sampled_flag() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, SPAN, sampled=True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == TraceContext(TRACE, SPAN, sampled=False)
    # Only bit 0 means sampled; other flags are kept out of what we send on.
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03") == TraceContext(TRACE, SPAN, sampled=True)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        VALID.upper(),  # upper-case hex
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"01-{TRACE}-{SPAN}-01",  # another version: strict, version 00 only
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"00-{TRACE}-{SPAN}0-01",  # long parent id
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"00-{TRACE}-{SPAN}-01\n",
        f" {VALID}",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        "00-" + "é" * 32 + f"-{SPAN}-01",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


@given(trace_id=hex_strings, span_id=hex_strings, flags=st.text(alphabet=HEX, min_size=1, max_size=3))
def test_the_parser_accepts_exactly_the_version_00_shape(trace_id: str, span_id: str, flags: str) -> None:
    parsed = parse_traceparent(f"00-{trace_id}-{span_id}-{flags}")
    well_formed = len(trace_id) == 32 and len(span_id) == 16 and len(flags) == 2
    nonzero = set(trace_id) != {"0"} and set(span_id) != {"0"}
    assert (parsed is not None) == (well_formed and nonzero)
    if parsed is not None:
        assert parsed.traceparent == f"00-{trace_id}-{span_id}-{'01' if int(flags, 16) & 1 else '00'}"


@given(st.text(max_size=80))
def test_the_parser_never_raises(value: str) -> None:
    parsed = parse_traceparent(value)
    assert parsed is None or value[:53] == parsed.traceparent[:53]


def test_tracestate_is_kept_when_well_formed_and_normalised() -> None:
    assert parse_traceparent(VALID, "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").tracestate == (  # type: ignore[union-attr]
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert parse_tracestate("tenant@vendor=a b,,x=1") == "tenant@vendor=a b,x=1"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        " , ",
        "Upper=1",  # keys are lower case
        "k=",  # empty value
        "k=a=b",  # '=' is not allowed in a value
        "k=1,k=2",  # a key twice
        "k=a\tb",  # a tab inside a value
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
        "k=" + "v" * 255 + ",j=" + "v" * 255,  # more than 512 characters
        "k=\u00e9",
    ],
)
def test_a_malformed_or_oversized_tracestate_is_dropped(value: str | None) -> None:
    assert parse_tracestate(value) is None


def test_tracestate_without_a_valid_traceparent_is_not_kept() -> None:
    assert parse_traceparent("garbage", "congo=t61rcWkgMzE") is None


def test_a_span_under_a_parent_keeps_the_trace_and_gets_a_new_span_id() -> None:
    parent = TraceContext(TRACE, SPAN, sampled=True, tracestate="congo=1")
    token = tracing.begin_request("GET /x", parent.traceparent, "congo=1")
    try:
        server = tracing.current()
        assert server is not None
        assert (server.trace_id, server.sampled, server.tracestate) == (TRACE, True, "congo=1")
        assert server.span_id != SPAN
        with tracing.span("call", "client") as client:
            assert tracing.current() == client
            assert client.trace_id == TRACE
            assert client.span_id not in (SPAN, server.span_id)
            assert client.headers() == {"traceparent": f"00-{TRACE}-{client.span_id}-01", "tracestate": "congo=1"}
        assert tracing.current() == server
    finally:
        tracing.end_request(token, 200)
    assert tracing.current() is None


def test_a_span_without_a_parent_starts_a_trace_and_is_not_sampled_when_nothing_exports() -> None:
    with tracing.span("background") as context:
        assert parse_traceparent(context.traceparent) == context
        assert not context.sampled
    with tracing.span("background") as other:
        assert other.trace_id != context.trace_id


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({name.lower(): value for name, value in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""


@pytest.fixture
def echo_url() -> Iterator[str]:
    """A real HTTP server on loopback that answers with the request's headers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_traced_session_sends_the_current_trace_with_a_span_of_its_own(echo_url: str) -> None:
    with tracing.span("request") as outer, tracing.session() as session:
        seen = session.get(f"{echo_url}/x", timeout=5).json()
    sent = parse_traceparent(seen["traceparent"])
    assert sent is not None
    assert sent.trace_id == outer.trace_id
    assert sent.span_id != outer.span_id
    assert "tracestate" not in seen


def test_a_traced_session_outside_any_span_starts_a_trace_per_call(echo_url: str) -> None:
    with tracing.session() as session:
        first = parse_traceparent(session.get(echo_url, timeout=5).json()["traceparent"])
        second = parse_traceparent(session.get(echo_url, timeout=5).json()["traceparent"])
    assert first is not None
    assert second is not None
    assert first.trace_id != second.trace_id
    assert tracing.current() is None


def test_a_plain_session_sends_no_traceparent(echo_url: str) -> None:
    with tracing.span("request"):
        assert "traceparent" not in requests.get(echo_url, timeout=5).json()


@pytest.fixture
def app() -> Flask:
    """A tiny app wired with the shared plumbing, logging JSON to a buffer."""
    app = Flask(__name__)
    web.init_app(app)

    @app.get("/work")
    def work() -> Response:
        logging.getLogger("work").info("working")
        return Response("{}", mimetype="application/json")

    return app


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Route the root logger's JSON lines into a buffer for the test."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter("test"))
    handler.addFilter(logs.RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


def _entries(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_every_line_of_a_request_carries_the_callers_trace(app: Flask, log_lines: io.StringIO) -> None:
    response = app.test_client().get("/work", headers={"traceparent": VALID, "X-Request-ID": "r-1"})
    assert response.status_code == 200
    assert "traceparent" not in response.headers  # the spec asks for no response header
    entries = [entry for entry in _entries(log_lines) if entry.get("request_id") == "r-1"]
    assert [entry["msg"] for entry in entries] == ["working", "request"]
    assert {entry["trace_id"] for entry in entries} == {TRACE}
    assert all(entry["span_id"] not in (None, SPAN) for entry in entries)
    assert tracing.current() is None


@pytest.mark.parametrize("header", [VALID.upper(), f"00-{'0' * 32}-{SPAN}-01", "junk", f"01-{TRACE}-{SPAN}-01"])
def test_a_request_with_a_malformed_traceparent_gets_a_new_trace(
    app: Flask, log_lines: io.StringIO, header: str
) -> None:
    response = app.test_client().get("/work", headers={"traceparent": header, "tracestate": "congo=1"})
    assert response.status_code == 200
    traces = {entry["trace_id"] for entry in _entries(log_lines) if "request_id" in entry}
    assert len(traces) == 1
    (trace_id,) = traces
    assert isinstance(trace_id, str)
    assert parse_traceparent(f"00-{trace_id}-{SPAN}-00") is not None
    assert trace_id != TRACE


def test_a_request_served_inside_a_span_leaves_that_span_current(app: Flask) -> None:
    with tracing.span("test") as outer:
        assert app.test_client().get("/work").status_code == 200
        assert tracing.current() == outer
    assert tracing.current() is None


def test_lines_outside_any_span_carry_no_trace(log_lines: io.StringIO) -> None:
    logging.getLogger("startup").info("starting")
    (entry,) = _entries(log_lines)
    assert "trace_id" not in entry
    assert "span_id" not in entry


def test_nothing_is_exported_without_an_endpoint() -> None:
    assert not tracing.export_configured({})
    assert not tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert not tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert tracing.export_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})
    assert not tracing.exporting()
