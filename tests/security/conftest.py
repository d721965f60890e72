"""A stack of its own for the attack suites, and an attacker's key server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.jose import public_jwk
from tests.support.stack import LoopbackStack
from tests.support.tokens import new_rsa_key


class AttackerServer:
    """Serves an attacker's JWKS (and anything else) on 127.0.0.1, counting every request."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        body = json.dumps({"keys": [public_jwk(key.public_key())]}).encode()
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            paths: ClassVar[list[str]] = hits

            def do_GET(self) -> None:
                self.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.hits = hits
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def attacker_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture(scope="session")
def attacker(attacker_key: rsa.RSAPrivateKey) -> Iterator[AttackerServer]:
    server = AttackerServer(attacker_key)
    yield server
    server.close()


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    """The stack under attack; its JWKS stays fresh for the whole suite, so any fetch is news."""
    stack = LoopbackStack(
        tmp_path_factory.mktemp("target"),
        issuer_env={"ISSUER_JWKS_MAX_AGE": "3600", "ISSUER_KEY_ACTIVATION_DELAY": "3600"},
        resource_env={"RESOURCE_JWKS_COOLDOWN": "30"},
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.close()
