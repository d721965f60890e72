"""Status lists for tests: encode entries, sign list tokens, and serve them (with a JWKS) over real HTTP."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.jose import b64url_encode
from tests.support.tokens import jwks_json, overridden, sign

JWKS_PATH = "/.well-known/jwks.json"
INDEX_PATH = "/statuslists"


def pack(values: Sequence[int], bits: int) -> bytes:
    """Pack status values, `bits` each, least significant bits first (draft-ietf-oauth-status-list section 4.1)."""
    data = bytearray((len(values) * bits + 7) // 8)
    for i, value in enumerate(values):
        position = i * bits
        data[position // 8] |= value << (position % 8)
    return bytes(data)


def encode_lst(data: bytes) -> str:
    """Return the `lst` of these bytes: base64url of their zlib compression."""
    return b64url_encode(zlib.compress(data, 9))


def list_claims(uri: str, issuer: str, values: Sequence[int], bits: int = 1, **overrides: Any) -> dict[str, Any]:
    """Return the claims of a list token at `uri`; an override of `None` removes that claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": uri,
        "iss": issuer,
        "iat": now,
        "exp": now + 600,
        "ttl": 1,
        "status_list": {"bits": bits, "lst": encode_lst(pack(values, bits))},
    }
    return overridden(claims, overrides)


def sign_list(claims: dict[str, Any], key: rsa.RSAPrivateKey, **options: Any) -> str:
    """Sign list claims with RS256 as an issuer does (`typ` statuslist+jwt unless told otherwise)."""
    options.setdefault("typ", "statuslist+jwt")
    return sign(claims, key, **options)


class StatusServer:
    """An issuer stand-in on 127.0.0.1: a JWKS, list tokens by path with ETags (304 on a match), an index.

    `requests` records (path, If-None-Match) of every request; `down` answers 503 to everything.
    """

    def __init__(self, *keys: rsa.RSAPrivateKey) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []
        self.lists: dict[str, tuple[int, bytes, str]] = {}  # path -> (version, body, content type)
        self.index: list[str] | None = None
        self.down = False
        self.max_age = 1
        self.jwks = jwks_json(*keys).encode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="status-server", daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def uri(self, name: str) -> str:
        """Return the URI of list `name`."""
        return f"{self.base_url}/statuslists/{name}"

    def put(self, name: str, token: str | bytes, content_type: str = "application/statuslist+jwt") -> None:
        """Serve `token` as list `name` (a new ETag)."""
        body = token.encode() if isinstance(token, str) else token
        with self.lock:
            version = self.lists.get(f"/statuslists/{name}", (0, b"", ""))[0] + 1
            self.lists[f"/statuslists/{name}"] = (version, body, content_type)

    def count(self, path: str) -> int:
        """Return how many requests asked for `path`."""
        with self.lock:
            return sum(1 for asked, _ in self.requests if asked == path)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def _handler_for(server: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with server.lock:
                server.requests.append((self.path, self.headers.get("If-None-Match")))
                down, listed = server.down, server.lists.get(self.path)
                index = server.index
            if down:
                return self._answer(503, b'{"error": "down"}', "application/json")
            if self.path == JWKS_PATH:
                return self._answer(200, server.jwks, "application/json")
            if self.path == INDEX_PATH and index is not None:
                return self._answer(200, json.dumps({"status_lists": index}).encode(), "application/json")
            if listed is None:
                return self._answer(404, b'{"error": "not_found"}', "application/json")
            version, body, content_type = listed
            etag = f'"v{version}"'
            if self.headers.get("If-None-Match") == etag:
                return self._answer(304, b"", None, etag)
            return self._answer(200, body, content_type, etag)

        def _answer(self, status: int, body: bytes, content_type: str | None, etag: str | None = None) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Cache-Control", f"max-age={server.max_age}")
            self.send_header("Content-Length", str(len(body)) if status != 304 else "0")
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet."""

    return Handler
