"""Trace context across the real services on loopback: one trace id from the caller through every back-channel call.

The services run under gunicorn. The resource and the reports API export spans to an OTLP/HTTP
receiver of the test's own (a real HTTP server decoding the protobuf); the issuer runs without
OTEL_EXPORTER_OTLP_ENDPOINT and so must send nothing. The receiving services' log lines (which
carry `trace_id`) show what each back-channel call carried.
"""

from __future__ import annotations

import gzip
import http.server
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shared.tracing import parse_traceparent
from tests.support.processes import log_events, wait_until
from tests.support.stack import REPORTS_AUDIENCE, LoopbackStack
from tests.support.tokens import make_claims, new_rsa_key, sign

SPAN = "00f067aa0ba902b7"
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3


@dataclass(frozen=True)
class ReceivedSpan:
    """What the receiver decoded of one exported span."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.receive(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                """Stay quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, path: str, body: bytes) -> None:
        """Decode one export request (only /v1/traces is expected)."""
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            attributes.get("service.name", ""),
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            span.kind,
                        )
                    )
        with self._lock:
            self.posts += 1
            self.spans.extend(received)

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """Return the spans received so far in this trace."""
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver for the module's stack."""
    running = OtlpReceiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def stack(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    """Issuer, resource and reports API on loopback; the two APIs export spans, the issuer does not."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    built = LoopbackStack(tmp_path_factory.mktemp("tracing"), resource_env=otel, workers=1, reports=True)
    built.reports.env.update(otel)
    try:
        built.start()
        yield built
    finally:
        built.close()


def _traceparent(sampled: bool = True) -> tuple[str, str]:
    """Return a fresh trace id and a traceparent naming it (parent span SPAN)."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{SPAN}-{'01' if sampled else '00'}"


def _lines(log: str, trace_id: str) -> list[dict[str, Any]]:
    return [entry for entry in log_events(log) if entry.get("trace_id") == trace_id]


def _user_token(stack: LoopbackStack) -> str:
    token: str = stack.token()["access_token"]
    return token


def _reports_token(stack: LoopbackStack) -> str:
    key = new_rsa_key()
    client_id = stack.register_client(key, "--audience", REPORTS_AUDIENCE, "--scope", "reports:read", prefix="batch")
    response = stack.service_token(client_id, key, resource=REPORTS_AUDIENCE)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_the_jwks_fetch_of_a_request_carries_its_trace_to_the_issuer(stack: LoopbackStack) -> None:
    """A token with a kid the API does not hold makes it fetch the JWKS within the request."""
    forged = sign(make_claims(issuer=stack.public_issuer, audience="jwt-split-api"), new_rsa_key())
    fetched: list[str] = []

    def fetch_in_a_request() -> bool:
        # The unknown-kid cooldown (1 s here) may hold back a fetch: try again with a new trace.
        trace_id, traceparent = _traceparent()
        response = requests.get(
            f"{stack.resource_url}/api/me",
            headers={"Authorization": f"Bearer {forged}", "traceparent": traceparent},
            timeout=10,
        )
        assert response.status_code == 401
        assert "traceparent" not in response.headers
        if [e for e in _lines(stack.issuer_logs(), trace_id) if e.get("path") == "/.well-known/jwks.json"]:
            fetched.append(trace_id)
        return bool(fetched)

    wait_until(fetch_in_a_request, timeout=15, interval=0.3, what="a JWKS fetch within a request")
    resource_lines = _lines(stack.resource_logs(), fetched[0])
    assert {e["msg"] for e in resource_lines} >= {"jwks loaded", "request"}


def test_the_resources_code_exchange_carries_the_trace_to_the_token_endpoint(stack: LoopbackStack) -> None:
    public = stack.resource.env["RESOURCE_PUBLIC_URL"]
    trace_id, traceparent = _traceparent()
    with requests.Session() as browser:
        login = browser.get(f"{public}/login", allow_redirects=False, timeout=10)
        assert login.status_code == 302
        state = dict(p.split("=", 1) for p in login.headers["Location"].split("?", 1)[1].split("&"))["state"]
        # A code the issuer never issued: the exchange is still made, and refused.
        callback = browser.get(
            f"{public}/callback",
            params={"code": "not-a-code", "state": state, "iss": stack.public_issuer},
            headers={"traceparent": traceparent},
            allow_redirects=False,
            timeout=10,
        )
    assert callback.status_code == 502, callback.text  # the issuer refused the grant
    token_lines = [e for e in _lines(stack.issuer_logs(), trace_id) if e.get("path") == "/token"]
    assert [e["status"] for e in token_lines] == [400]
    assert token_lines[0]["span_id"] != SPAN


def test_the_reports_apis_call_to_the_profile_api_carries_the_trace(stack: LoopbackStack) -> None:
    trace_id, traceparent = _traceparent()
    report = requests.get(
        f"{stack.reports_url}/api/report",
        headers={"Authorization": f"Bearer {_reports_token(stack)}", "traceparent": traceparent},
        timeout=10,
    )
    assert report.status_code == 200, report.text
    (profile,) = [e for e in _lines(stack.resource_logs(), trace_id) if e.get("msg") == "request"]
    assert (profile["path"], profile["status"]) == ("/api/me", 200)
    (own,) = [e for e in _lines(stack.reports_logs(), trace_id) if e.get("msg") == "request"]
    assert own["path"] == "/api/report"
    assert len({profile["span_id"], own["span_id"], SPAN}) == 3


def test_background_calls_start_a_trace_their_peer_continues(stack: LoopbackStack) -> None:
    """The reports worker's token keeper and the resource's JWKS prefetch run outside any request."""
    (fetched,) = [e for e in log_events(stack.reports_logs()) if e.get("msg") == "service token fetched"]
    trace_id = fetched["trace_id"]
    assert [e["path"] for e in _lines(stack.issuer_logs(), trace_id) if e.get("msg") == "request"] == ["/token"]
    # The issuer checked the reports API's private_key_jwt against its jwks_uri in that trace.
    assert [e["path"] for e in _lines(stack.reports_logs(), trace_id) if e.get("msg") == "request"] == [
        "/client-jwks.json"
    ]
    loaded = next(e for e in log_events(stack.resource_logs()) if e.get("msg") == "jwks loaded")
    issuer_side = [e["path"] for e in _lines(stack.issuer_logs(), loaded["trace_id"])]
    assert issuer_side == ["/.well-known/jwks.json"]


@pytest.mark.parametrize(
    "header",
    [
        "00-" + "A" * 32 + f"-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{'a' * 32}-{'0' * 16}-01",
        f"01-{'a' * 32}-{SPAN}-01",
        f"00-{'a' * 32}-{SPAN}-01-",
        "not a traceparent",
    ],
)
def test_a_malformed_traceparent_is_ignored_and_a_new_trace_reaches_the_peer(stack: LoopbackStack, header: str) -> None:
    request_id = secrets.token_hex(8)
    report = requests.get(
        f"{stack.reports_url}/api/report",
        headers={
            "Authorization": f"Bearer {_reports_token(stack)}",
            "traceparent": header,
            "tracestate": "congo=t61rcWkgMzE",
            "X-Request-ID": request_id,
        },
        timeout=10,
    )
    assert report.status_code == 200, report.text
    (own,) = [e for e in log_events(stack.reports_logs()) if e.get("request_id") == request_id]
    trace_id = own["trace_id"]
    assert parse_traceparent(f"00-{trace_id}-{SPAN}-01") is not None
    assert trace_id not in header
    (profile,) = [e for e in _lines(stack.resource_logs(), trace_id) if e.get("msg") == "request"]
    assert profile["path"] == "/api/me"


def test_every_line_written_in_a_request_carries_its_trace(stack: LoopbackStack) -> None:
    stack.get("/api/me", _user_token(stack), headers={"traceparent": _traceparent()[1]})
    for log in (stack.issuer_logs(), stack.resource_logs(), stack.reports_logs()):
        in_requests = [e for e in log_events(log) if "request_id" in e]
        assert in_requests
        for entry in in_requests:
            assert parse_traceparent(f"00-{entry.get('trace_id')}-{entry.get('span_id')}-01") is not None, entry


def test_spans_reach_the_otlp_receiver_with_the_trace_and_service_name(
    stack: LoopbackStack, receiver: OtlpReceiver
) -> None:
    trace_id, traceparent = _traceparent()
    report = requests.get(
        f"{stack.reports_url}/api/report",
        headers={"Authorization": f"Bearer {_reports_token(stack)}", "traceparent": traceparent},
        timeout=10,
    )
    assert report.status_code == 200, report.text

    def arrived() -> bool:
        return {(s.service, s.kind) for s in receiver.of_trace(trace_id)} >= {
            ("reports", SPAN_KIND_SERVER),
            ("reports", SPAN_KIND_CLIENT),
            ("resource", SPAN_KIND_SERVER),
        }

    wait_until(arrived, timeout=15, what="the spans of the trace at the receiver")
    spans = receiver.of_trace(trace_id)
    (server,) = [s for s in spans if s.service == "reports" and s.kind == SPAN_KIND_SERVER]
    assert (server.name, server.parent_id) == ("GET /api/report", SPAN)
    (client,) = [s for s in spans if s.service == "reports" and s.kind == SPAN_KIND_CLIENT]
    assert client.parent_id == server.span_id
    assert client.name.startswith("GET http://127.0.0.1:")  # no path, no query string
    (profile,) = [s for s in spans if s.service == "resource"]
    assert (profile.name, profile.parent_id) == ("GET /api/me", client.span_id)
    # The log lines name the same spans.
    (line,) = [e for e in _lines(stack.resource_logs(), trace_id) if e.get("msg") == "request"]
    assert line["span_id"] == profile.span_id


def test_the_issuer_without_an_endpoint_sends_nothing_and_unsampled_traces_are_not_exported(
    stack: LoopbackStack, receiver: OtlpReceiver
) -> None:
    trace_id, traceparent = _traceparent(sampled=False)
    report = requests.get(
        f"{stack.reports_url}/api/report",
        headers={"Authorization": f"Bearer {_reports_token(stack)}", "traceparent": traceparent},
        timeout=10,
    )
    assert report.status_code == 200, report.text
    # A sampled request after it: once its spans are in, the earlier ones would be too.
    marker, sampled = _traceparent()
    assert stack.get("/api/me", _user_token(stack), headers={"traceparent": sampled}).status_code == 200
    wait_until(lambda: receiver.of_trace(marker), timeout=15, what="the sampled request's span")
    assert receiver.of_trace(trace_id) == []
    assert _lines(stack.resource_logs(), trace_id)  # still logged and propagated, only not exported
    assert receiver.spans
    assert {span.service for span in receiver.spans} <= {"reports", "resource"}
