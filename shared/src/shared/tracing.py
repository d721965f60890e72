"""W3C Trace Context for every service: accept `traceparent`, send it on back-channel calls, log it.

- An incoming `traceparent` (https://www.w3.org/TR/trace-context/ section 3.2) is accepted only
  in its strict version-00 form; anything else is ignored and the request starts a new trace,
  never an error. `tracestate` travels with a valid `traceparent` only, and only when it is
  well-formed and within the spec's bounds (32 members, 512 characters); otherwise it is dropped.
- Each request is a server span; each back-channel call (a `session()`, or a JWKS fetch through
  the `jwt_verifier.jwks` hook) a client span that sends `traceparent` with the request's trace
  id and its own span id. No response header: the spec asks for none.
- `current()` is the span of this thread (a context variable); shared.logs writes its ids in
  every line. A call or fetch with no request behind it (a background thread) starts a trace of
  its own.
- With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, `start_exporter()` sends
  the spans through the OpenTelemetry SDK's OTLP/HTTP exporter; gunicorn calls it in each
  worker after the fork. Unset, the SDK is not even imported and nothing is sent anywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from flask import Flask, Response, g, request
from requests.adapters import HTTPAdapter

from jwt_verifier import jwks

if TYPE_CHECKING:
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import Tracer

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# tracestate list members (section 3.3.1): a key (simple, or tenant@system) and a value.
_KEY = r"(?:[a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"{_KEY}={_VALUE}")
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512


@dataclass(frozen=True)
class TraceContext:
    """One span's place in a trace: what `traceparent` carries, and `tracestate` passed through."""

    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero
    sampled: bool = False
    tracestate: str | None = None

    @property
    def traceparent(self) -> str:
        """Return the `traceparent` header value naming this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def headers(self) -> dict[str, str]:
        """Return the headers that carry this context to a peer."""
        headers = {"traceparent": self.traceparent}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers


def parse_traceparent(value: str | None, tracestate: str | None = None) -> TraceContext | None:
    """Return the context a `traceparent` header names, or None unless it is a valid version-00 value.

    Strict on purpose: an upper-case digit, another version, an all-zero id or a trailing byte
    makes the header invalid, and the caller starts a new trace. `tracestate` is kept only if
    well-formed (see `parse_tracestate`).
    """
    match = _TRACEPARENT.fullmatch(value or "")
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1), parse_tracestate(tracestate))


def parse_tracestate(value: str | None) -> str | None:
    """Return a `tracestate` value normalised (no blank members), or None if absent, malformed or too large."""
    if not value or len(value) > 4 * MAX_TRACESTATE_CHARS:
        return None
    members = [member.strip(" \t") for member in value.split(",")]
    members = [member for member in members if member]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    if not all(_MEMBER.fullmatch(member) for member in members):
        return None
    keys = [member.partition("=")[0] for member in members]
    if len(set(keys)) != len(keys):
        return None
    joined = ",".join(members)
    return joined if len(joined) <= MAX_TRACESTATE_CHARS else None


def new_trace_id() -> str:
    """Return a random trace id (never all zero)."""
    while (trace_id := secrets.token_hex(16)) == _ZERO_TRACE:
        pass  # pragma: no cover - one chance in 2**128
    return trace_id


def new_span_id() -> str:
    """Return a random span id (never all zero)."""
    while (span_id := secrets.token_hex(8)) == _ZERO_SPAN:
        pass  # pragma: no cover - one chance in 2**64
    return span_id


@dataclass(frozen=True)
class _Active:
    context: TraceContext
    otel: OtelSpan | None


_current: ContextVar[_Active | None] = ContextVar("jwt_split_span", default=None)


def current() -> TraceContext | None:
    """Return the span this thread is in, if any."""
    active = _current.get()
    return active.context if active is not None else None


# -- spans --------------------------------------------------------------------------------------


class _Exporter:
    """The OpenTelemetry tracer of this process, once `start_exporter` has made one."""

    tracer: Tracer | None = None
    pid: int | None = None


_exporter = _Exporter()
_exporter_lock = threading.Lock()


def exporting() -> bool:
    """Return whether spans are being exported from this process."""
    return _exporter.tracer is not None and _exporter.pid == os.getpid()


def _open(name: str, kind: str, parent: TraceContext | None, remote: bool) -> _Active:
    """Open a span under `parent` (a new trace without one); exported when the exporter runs."""
    tracer = _exporter.tracer if exporting() else None
    if tracer is None:
        if parent is None:
            return _Active(TraceContext(new_trace_id(), new_span_id()), None)
        return _Active(TraceContext(parent.trace_id, new_span_id(), parent.sampled, parent.tracestate), None)
    from opentelemetry import trace

    otel_parent = None
    if parent is not None:
        parent_context = trace.SpanContext(
            int(parent.trace_id, 16),
            int(parent.span_id, 16),
            is_remote=remote,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if parent.sampled else trace.TraceFlags.DEFAULT),
        )
        otel_parent = trace.set_span_in_context(trace.NonRecordingSpan(parent_context))
    span_kind = {"server": trace.SpanKind.SERVER, "client": trace.SpanKind.CLIENT}.get(kind, trace.SpanKind.INTERNAL)
    span = tracer.start_span(name, context=otel_parent, kind=span_kind)
    made = span.get_span_context()
    context = TraceContext(
        f"{made.trace_id:032x}",
        f"{made.span_id:016x}",
        made.trace_flags.sampled,
        parent.tracestate if parent is not None else None,
    )
    return _Active(context, span)


def _close(active: _Active, status: int | None = None, error: BaseException | None = None) -> None:
    span = active.otel
    if span is None:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is not None or (status is not None and status >= 500):
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, type(error).__name__ if error is not None else None))
    span.end()


@contextlib.contextmanager
def span(name: str, kind: str = "internal", **attributes: str) -> Iterator[TraceContext]:
    """Run the block in a child span of the current one (or the first span of a new trace)."""
    active = _open(name, kind, current(), remote=False)
    if active.otel is not None:
        for key, value in attributes.items():
            active.otel.set_attribute(key, value)
    token = _current.set(active)
    try:
        yield active.context
    except BaseException as exc:
        _close(active, error=exc)
        raise
    else:
        _close(active)
    finally:
        _current.reset(token)


# -- requests in (Flask) ------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Make each request of `app` a server span, and each JWKS fetch of this process a client span."""
    # First of all before-request functions: whatever they log belongs to the request's trace.
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_note_status)
    app.teardown_request(_end)
    jwks.trace_fetches(_jwks_fetch)


def trace_jwks_fetches() -> None:
    """Make each JWKS fetch of this process a client span (what `init_app` does, for any framework)."""
    jwks.trace_fetches(_jwks_fetch)


def _begin() -> None:
    rule = request.url_rule.rule if request.url_rule is not None else None
    tracestate = ",".join(request.headers.getlist("tracestate")) or None
    name = f"{request.method} {rule}" if rule else str(request.method)
    g.trace_token = begin_request(name, request.headers.get("traceparent"), tracestate, rule)


def _note_status(response: Response) -> Response:
    g.trace_status = response.status_code
    return response


def _end(error: BaseException | None) -> None:
    token = g.pop("trace_token", None)
    if token is not None:
        end_request(token, g.get("trace_status"), error)


def begin_request(
    name: str, traceparent: str | None, tracestate: str | None, route: str | None = None
) -> Token[_Active | None]:
    """Open the request's server span, continuing the caller's trace when its `traceparent` is valid.

    Return the token that `end_request` takes to close it.
    """
    parent = parse_traceparent(traceparent, tracestate)
    active = _open(name, "server", parent, remote=True)
    if active.otel is not None and route:
        active.otel.set_attribute("http.route", route)
    return _current.set(active)


def end_request(token: Token[_Active | None], status: int | None, error: BaseException | None = None) -> None:
    """Close the request's server span and return this thread to the span it was in before."""
    active = _current.get()
    _current.reset(token)
    if active is not None:
        _close(active, status, error)


def name_request(method: str, route: str) -> None:
    """Name the request's server span after its route (`GET /api/report`), as `begin_request` does.

    For an ASGI app, whose route is known only after the span is open.
    """
    active = _current.get()
    if active is not None and active.otel is not None:
        active.otel.update_name(f"{method} {route}")
        active.otel.set_attribute("http.route", route)


# -- requests out (requests) --------------------------------------------------------------------


class TracingAdapter(HTTPAdapter):
    """An HTTP adapter that sends each request in a client span carrying `traceparent`."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        """Send `request` with the client span's `traceparent` (and `tracestate`)."""
        with span(
            f"{request.method} {_host(request.url)}", "client", **{"http.request.method": str(request.method)}
        ) as context:
            request.headers.update(context.headers())
            response = super().send(request, *args, **kwargs)
            active = _current.get()
            if active is not None and active.otel is not None:
                active.otel.set_attribute("http.response.status_code", response.status_code)
            return response


def _host(url: str | None) -> str:
    """Return the scheme and authority of `url`: a span name without paths or query strings."""
    scheme, _, rest = (url or "").partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def session() -> requests.Session:
    """Return a requests session whose every call is a client span carrying `traceparent`."""
    traced = requests.Session()
    adapter = TracingAdapter()
    traced.mount("http://", adapter)
    traced.mount("https://", adapter)
    return traced


@contextlib.contextmanager
def _jwks_fetch(url: str) -> Iterator[Mapping[str, str]]:
    with span(f"GET {_host(url)}", "client", **{"http.request.method": "GET"}) as context:
        yield context.headers()


# -- export ------------------------------------------------------------------------------------


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether the environment asks for span export (an OTLP endpoint, and the SDK not disabled)."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(endpoint) and environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def start_exporter(service: str) -> bool:
    """Export this process's spans over OTLP/HTTP if the environment asks; return whether it does.

    Call it in each worker after the fork (the batch processor's thread must live there). The
    standard OTEL_* variables configure the exporter (endpoint, headers, timeout, compression),
    the batching (OTEL_BSP_*), the sampler (OTEL_TRACES_SAMPLER, parent-based by default) and
    the resource; `service.name` is `service` unless OTEL_SERVICE_NAME says otherwise.
    """
    if not export_configured():
        return False
    with _exporter_lock:
        if exporting():
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _exporter.tracer = provider.get_tracer("jwt-split")
        _exporter.pid = os.getpid()
    return True
