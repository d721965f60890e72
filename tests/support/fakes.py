"""Test doubles the unit tests share: a clock moved by hand, a real little JWKS server, a WSGI server."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from issuer.settings import IssuerSettings
from jwt_verifier.jose import public_jwk

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

T = TypeVar("T")


class FakeClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class JwksServer:
    """A real HTTP server on 127.0.0.1 whose answer a test sets, counting the requests it gets.

    `hold()` makes answers wait until `release()`; `delay` waits before the headers; `trickle`
    sends the body one byte per `trickle_interval` with chunked encoding (with a Content-Length
    when `trickle_chunked` is false); `trickle_headers`
    sends the status line, then one header byte per `trickle_interval` until the server stops. A POST (its body read
    and ignored) gets the same answer, so it also stands in for any small HTTP endpoint.
    """

    path = "/.well-known/jwks.json"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self.paths: list[str] = []
        self.status = 200
        self.body = b'{"keys": []}'
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.delay = 0.0
        self.trickle = False
        self.trickle_chunked = True
        self.trickle_headers = False
        self.trickle_interval = 0.05
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="jwks-server", daemon=True
        )
        self._thread.start()
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.url = self.base_url + self.path

    @property
    def request_count(self) -> int:
        """Return how many requests arrived."""
        with self._lock:
            return len(self.paths)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` requests have arrived (each has already taken its answer)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.paths) >= count, timeout=timeout):
                raise TimeoutError(f"{count} requests did not arrive within {timeout} s")

    def serve_keys(self, *keys: rsa.RSAPrivateKey, cache_control: str | None = "public, max-age=300") -> None:
        """Answer with the public JWKs of these keys."""
        self.serve_jwks([public_jwk(key.public_key()) for key in keys], cache_control=cache_control)

    def serve_jwks(self, jwks: list[Any], *, cache_control: str | None = "public, max-age=300") -> None:
        """Answer 200 with these JWKs."""
        headers = {"Content-Type": "application/json"}
        if cache_control is not None:
            headers["Cache-Control"] = cache_control
        self.answer(200, json.dumps({"keys": jwks}).encode(), headers)

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer every request with this status, body and headers."""
        with self._lock:
            self.status = status
            self.body = body
            self.headers = dict(headers if headers is not None else {"Content-Type": "application/json"})

    def trickle_in(self, part: str, interval: float = 0.5) -> None:
        """Send the answer's `part` ("headers" or "body", with a Content-Length) a byte per `interval`."""
        self.trickle_interval = interval
        self.trickle_headers = part == "headers"
        self.trickle = part == "body"
        self.trickle_chunked = False

    def hold(self) -> None:
        """Make requests wait for `release()` before they are answered."""
        self._released.clear()

    def release(self) -> None:
        """Let held requests be answered."""
        self._released.set()

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        if not self._stopped.is_set():
            self._stopped.set()
            self._released.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def _snapshot(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.paths.append(path)
            self._arrived.notify_all()
            return self.status, self.body, dict(self.headers)

    def _wait_released(self) -> None:
        self._released.wait(timeout=10)
        if self.delay:
            self._stopped.wait(self.delay)


def finishes_within(seconds: float, server: JwksServer, call: Callable[[], T]) -> T:
    """Return what `call` returns (or raise what it raises); fail if it runs longer than `seconds`.

    The call runs in a thread; `server` is stopped afterwards either way, which ends a call
    stuck reading from it, so a failing test does not hang.
    """
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    try:
        done, _ = wait([future], timeout=seconds)
        if not done:
            raise AssertionError(f"the call was still running after {seconds} s")
        return future.result()
    finally:
        server.stop()
        pool.shutdown(wait=True)


def _handler_for(server: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body, headers = server._snapshot(self.path)
            server._wait_released()
            try:
                if server.trickle_headers:
                    self._trickle_headers()
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                if server.trickle:
                    self._trickle(body)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up; that is what some tests want

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def _trickle_headers(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self.wfile.flush()
            while not server._stopped.wait(server.trickle_interval):
                self.wfile.write(b"x")
                self.wfile.flush()

        def _trickle(self, body: bytes) -> None:
            chunked = server.trickle_chunked
            self.send_header(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(len(body)))))
            self.end_headers()
            for byte in body:
                if server._stopped.wait(server.trickle_interval):
                    return
                self.wfile.write(b"1\r\n" + bytes([byte]) + b"\r\n" if chunked else bytes([byte]))
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        """Keep the test output quiet."""


class WsgiServer:
    """A real threaded HTTP server on 127.0.0.1 for a WSGI app mounted once the URL is known.

    An app often needs its own public URL in its settings, so the server listens first and
    the test mounts the app with `mount()` afterwards.
    """

    def __init__(self) -> None:
        self._app: WSGIApplication | None = None
        self._server = make_server("127.0.0.1", 0, self._dispatch, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgi-server", daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"

    def mount(self, app: WSGIApplication) -> None:
        """Serve this app from now on."""
        self._app = app

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _dispatch(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"no app mounted yet"]
        return self._app(environ, start_response)


class CountingApp:
    """A WSGI app wrapped to count the requests each path gets."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def count(self, path: str) -> int:
        """Return how many requests `path` got."""
        with self._lock:
            return self._counts[path]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self._counts[environ.get("PATH_INFO", "")] += 1
        return self.app(environ, start_response)


@dataclass(frozen=True)
class LiveIssuer:
    """A real issuer app served by a `WsgiServer`: its URL, settings and app."""

    url: str
    settings: IssuerSettings
    app: Flask
