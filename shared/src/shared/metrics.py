"""The services' Prometheus metrics (`jwt_split_*`, see docs/observability.md) and their exporter.

Under gunicorn the workers write their values to files in a private directory
(prometheus_client's multiprocess mode) and the master serves the sum on a port of its own
(`start_exporter`, from shared.gunicorn_conf); a process without PROMETHEUS_MULTIPROC_DIR
(the CLI, the unit tests) counts in memory. Every label value comes from a fixed, small set.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, multiprocess

from jwt_verifier import observe

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"  # the endpoint label of a request no route matched (404, 405)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Every service.
HTTP_REQUESTS = Counter(
    "jwt_split_http_requests",
    "HTTP requests answered, by route endpoint, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "jwt_split_http_request_duration_seconds", "Time to answer an HTTP request, by route endpoint.", ["endpoint"]
)

# The issuer.
TOKENS_ISSUED = Counter("jwt_split_tokens_issued", "Access tokens issued, by grant and client.", ["grant", "client_id"])
TOKEN_ERRORS = Counter(
    "jwt_split_token_errors", "Token requests refused, by grant and OAuth error.", ["grant", "error"]
)
LOGINS = Counter(
    "jwt_split_logins", "Password checks (token endpoint and login form) and one-time codes, by result.", ["result"]
)
SECOND_FACTOR_CHECKS = Counter(
    "jwt_split_second_factor_checks",
    "One-time code checks (login second step, enrollment, removal), by method (totp, recovery) and result.",
    ["method", "result"],
)
DEVICE_AUTHORIZATIONS = Counter(
    "jwt_split_device_authorizations",
    "Device authorization grant steps (RFC 8628), by step and result.",
    ["step", "result"],
)
PASSKEYS = Counter(
    "jwt_split_passkeys", "Passkey (WebAuthn) ceremonies at the issuer, by ceremony and result.", ["ceremony", "result"]
)
RATE_LIMITED = Counter("jwt_split_rate_limited", "Requests refused by a rate limit, by limit.", ["limit"])
CONNECTIONS_REFUSED = Counter(
    "jwt_split_connections_refused",
    "Requests refused 503 at a uvicorn worker's connection limit (--worker-connections).",
)
CONNECTIONS_CLOSED_FOR_ROOM = Counter(
    "jwt_split_connections_closed_for_room",
    "Connections with no request in progress that a worker closed at its connection limit to make room for a request.",
)
REFRESH_REUSE = Counter(
    "jwt_split_refresh_reuse_detected", "Spent refresh tokens presented again (each revokes its family)."
)
TOKEN_COMMITS = Counter(
    "jwt_split_token_commits",
    "Database transactions committed by token requests, by grant (one per request; more on a failure that keeps its writes).",
    ["grant"],
)
SIGNING_KEYS = Gauge(
    "jwt_split_signing_keys", "Signing keys in the key store, by state.", ["state"], multiprocess_mode="mostrecent"
)
SIGNING_KEY_AGE = Gauge(
    "jwt_split_signing_key_age_seconds",
    "Seconds since the active signing key began signing.",
    multiprocess_mode="mostrecent",
)
KEY_STATES = ("next", "active", "retiring", "retired")

# The APIs (through jwt_verifier's observer).
VERIFICATIONS = Counter(
    "jwt_split_token_verifications", "Requests carrying a token, by result and reason.", ["result", "reason"]
)
JWKS_FETCHES = Counter(
    "jwt_split_jwks_fetches", "JWKS fetches from the issuer, by result and cause.", ["result", "cause"]
)
JWKS_KEYS = Gauge("jwt_split_jwks_keys", "Verification keys held (the most a worker holds).", multiprocess_mode="max")
JWKS_AGE = Gauge(
    "jwt_split_jwks_age_seconds",
    "Seconds since the key set was fetched, as of each worker's last request (the oldest live worker).",
    multiprocess_mode="livemax",
)
TOKEN_CACHE = Counter("jwt_split_verified_token_cache", "Verified-token cache lookups, by result.", ["result"])


class PrometheusObserver:
    """Report jwt_verifier's events to the metrics above.

    The counters of every request (a verification, a cache lookup) keep the child of each label
    pair they have counted: `labels()` checks and converts its values and takes a lock, about
    a microsecond a call, twice a request. The reasons are the library's fixed few.
    """

    def __init__(self) -> None:
        self._verifications: dict[tuple[str, str], Any] = {}
        self._lookups: dict[str, Any] = {}

    def verification(self, result: str, reason: str) -> None:
        """Count one request's token."""
        child = self._verifications.get((result, reason))
        if child is None:
            child = self._verifications[(result, reason)] = VERIFICATIONS.labels(result, reason)
        child.inc()

    def cache(self, result: str) -> None:
        """Count one cache lookup."""
        child = self._lookups.get(result)
        if child is None:
            child = self._lookups[result] = TOKEN_CACHE.labels(result)
        child.inc()

    def jwks_fetch(self, result: str, cause: str, keys: int) -> None:
        """Count one JWKS fetch and set the keys held."""
        JWKS_FETCHES.labels(result, cause).inc()
        JWKS_KEYS.set(keys)
        if result == "ok":
            JWKS_AGE.set(0)

    def jwks_age(self, seconds: float) -> None:
        """Set the key set's age."""
        JWKS_AGE.set(seconds)


def init_app(app: Flask) -> None:
    """Count and time `app`'s requests, and report jwt_verifier's events, in this process."""
    observe.install(PrometheusObserver())
    app.before_request(_begin)
    app.after_request(_finish)


def _begin() -> None:
    g.metrics_started = time.perf_counter()


def _finish(response: Response) -> Response:
    rule = request.url_rule
    endpoint = (rule.endpoint if rule is not None else None) or UNMATCHED
    method = request.method if request.method in METHODS else "OTHER"
    HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        HTTP_DURATION.labels(endpoint).observe(time.perf_counter() - started)
    return response


def count_signing_keys(states: list[str], active_since: int | None, now: float) -> None:
    """Set the signing-key gauges from the states read from the key store."""
    for state in KEY_STATES:
        SIGNING_KEYS.labels(state).set(states.count(state))
    if active_since is not None:
        SIGNING_KEY_AGE.set(max(0.0, now - active_since))


# -- the exporter, run by the gunicorn master ---------------------------------------------


# The exporter runs in the gunicorn master, the process that restarts dead workers: it serves at
# most EXPORTER_CONNECTIONS connections at once (one thread each; more are closed at once), and
# closes any that has not been answered EXPORTER_DEADLINE seconds after it was accepted, so idle
# or trickling clients cannot pile threads up in it. A scrape takes milliseconds.
EXPORTER_CONNECTIONS = 4
EXPORTER_DEADLINE = 10.0
EXPORTER_READ_TIMEOUT = 5.0  # per read or write, within the deadline

log = logging.getLogger(__name__)


class _LogStream(io.StringIO):
    """wsgiref's stderr for a scrape: what it writes (the traceback of a failed scrape) becomes one JSON log line."""

    def flush(self) -> None:
        """Log what was written since the last flush, if anything, as one line."""
        text = self.getvalue().strip()
        if text:
            self.seek(0)
            self.truncate()
            log.info("metrics scrape failed", extra={"fields": {"error": text.splitlines()[-1]}})


class _ExporterHandler(WSGIRequestHandler):
    """Serve one scrape per connection, with a timeout on each read and write, logging nothing."""

    timeout = EXPORTER_READ_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: Prometheus scrapes every few seconds."""

    def get_stderr(self) -> io.StringIO:
        """Give wsgiref a stream that logs a JSON line: it prints a failed scrape's traceback there."""
        return _LogStream()


class _ExporterServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most EXPORTER_CONNECTIONS of them, each cut off at its deadline."""

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog (5) drops the SYNs of a burst: a client would wait for its
    # kernel's retransmission (a second, then three) to be served or refused, so the exporter
    # keeps a backlog like gunicorn's listeners and refuses the excess at once instead.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        super().__init__(address, _ExporterHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve `request` in a thread of its own, or close it if every slot is taken."""
        with self._lock:
            busy = len(self._deadlines) >= EXPORTER_CONNECTIONS
            if not busy:
                self._deadlines[request] = time.monotonic() + EXPORTER_DEADLINE
        if busy:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve, then free the slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._deadlines.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a connection that failed (timed out, reset, cut off) at debug level, not socketserver's traceback.

        Anyone who reaches the port can make one, so it must cost the log nothing: the log stays
        JSON lines. Any other failure is logged as one JSON line, with its traceback in it.
        """
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("metrics connection failed", extra={"fields": {"error": type(error).__name__}})
        else:
            log.warning("metrics exporter failed", exc_info=True)

    def service_actions(self) -> None:
        """Shut the connections past their deadline down (run by serve_forever every half second)."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
        for conn in late:
            with contextlib.suppress(OSError):  # already closed by its thread
                conn.shutdown(socket.SHUT_RDWR)


def start_exporter(host: str, port: int) -> None:
    """Serve the sum of every worker's values on host:port from a thread of this process."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server = _ExporterServer((str(address[0]), port), family)
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sums)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
