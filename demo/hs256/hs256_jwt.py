"""Sign and verify HS256 JWTs with one shared secret: the design `make demo` argues against.

Standard library only, so the demo runs it with any python3. The code is correct on purpose
(alg pinned, constant-time comparison, exp, iss and aud checked): what breaks is the design,
because the secret that verifies a token is the secret that signs one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ISSUER = "http://hs256-issuer.demo"
AUDIENCE = "hs256-api"


class InvalidToken(ValueError):
    """The token is malformed, badly signed, expired or not for this API."""


def read_secret(path: str) -> bytes:
    """Return the shared secret kept in a service's file."""
    return Path(path).read_text(encoding="ascii").strip().encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict[str, Any], secret: bytes) -> str:
    """Return an HS256 JWT for the claims."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def verify(token: str, secret: bytes) -> dict[str, Any]:
    """Return the claims of a valid HS256 token for this API, or raise InvalidToken."""
    try:
        header_part, claims_part, mac_part = token.split(".")
        header = json.loads(_unb64(header_part))
        claims = json.loads(_unb64(claims_part))
        mac = _unb64(mac_part)
    except ValueError as exc:  # also binascii.Error and json.JSONDecodeError
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise InvalidToken("not an HS256 token")
    expected = hmac.new(secret, f"{header_part}.{claims_part}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise InvalidToken("bad signature")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= time.time():
        raise InvalidToken("expired")
    if claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
        raise InvalidToken("wrong issuer or audience")
    return claims


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler of the demo's two servers: JSON answers, the shared secret, no access log."""

    secret = b""

    def reply(self, status: int, body: dict[str, Any]) -> None:
        """Send a JSON answer."""
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the demo's output to what it narrates."""


def serve(handler: type[JsonHandler]) -> None:
    """Serve on a free loopback port with the secret from the file named on the command line, until killed."""
    handler.secret = read_secret(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
