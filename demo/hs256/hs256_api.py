"""A tiny API that verifies HS256 tokens with the shared secret: GET /api/me and GET /api/admin.

    python3 demo/hs256/hs256_api.py SECRET_FILE

It listens on a free port on 127.0.0.1 and prints the URL. Demo code only: `make demo` starts it.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hs256_jwt import InvalidToken, read_secret, verify

# The scope each path needs.
PATHS = {"/api/me": "profile", "/api/admin": "admin"}


class Handler(BaseHTTPRequestHandler):
    """Answer GET /api/me and GET /api/admin for a valid bearer token."""

    secret = b""

    def do_GET(self) -> None:
        """Verify the bearer token locally and answer with its claims."""
        needed = PATHS.get(self.path)
        if needed is None:
            self._reply(404, {"error": "not_found"})
            return
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise InvalidToken("no bearer token")
            claims = verify(token.strip(), self.secret)
        except InvalidToken:
            self._reply(401, {"error": "invalid_token"})
            return
        if needed not in str(claims.get("scope", "")).split():
            self._reply(403, {"error": "insufficient_scope"})
            return
        self._reply(200, {"path": self.path, "sub": claims.get("sub"), "scope": claims.get("scope")})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the demo's output to what it narrates."""


def main() -> None:
    """Serve until killed."""
    Handler.secret = read_secret(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
