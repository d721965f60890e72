"""The scale overlay's balancer (deploy/haproxy.cfg) run from Debian's haproxy on loopback, without Docker.

Only the addresses change: its frontends bind free loopback ports, and its DNS-found replicas
become one stand-in replica on loopback that answers 200 to everything.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.support.haproxy import haproxy_binary
from tests.support.processes import ChildProcess, answers, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing."""


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[str]:
    """Run deploy/haproxy.cfg on loopback in front of a stand-in replica; yield its frontend URL."""
    replica = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    port, health = free_port(), free_port()
    config = (REPO / "deploy/haproxy.cfg").read_text()
    for old, new in (
        ("bind :8000", f"bind 127.0.0.1:{port}"),
        ("bind 127.0.0.1:8404", f"bind 127.0.0.1:{health}"),
        ("server-template issuer 3 issuer-replicas:8000", f"server issuer1 127.0.0.1:{replica.server_address[1]}"),
    ):
        assert old in config
        config = config.replace(old, new)
    (tmp_path / "haproxy.cfg").write_text(config)
    process = ChildProcess(
        "haproxy", [str(haproxy_binary()), "-db", "-f", str(tmp_path / "haproxy.cfg")], tmp_path / "haproxy.log"
    )
    process.start()
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(lambda: answers(f"{url}/healthz"), what="the balancer to answer")
        yield url
    finally:
        process.stop()
        replica.shutdown()
        replica.server_close()


def test_the_balancer_logs_request_paths_without_their_query(balancer: str, tmp_path: Path) -> None:
    hint = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWlkLXRva2Vu.c2ln"
    response = requests.get(f"{balancer}/logout", params={"id_token_hint": hint, "state": "s"}, timeout=5)
    assert response.status_code == 200
    log = tmp_path / "haproxy.log"
    wait_until(lambda: "/logout" in log.read_text(), what="the balancer to log the request")
    text = log.read_text()
    assert '"GET /logout HTTP/1.1"' in text, text[-2000:]
    assert hint not in text
    assert "id_token_hint" not in text
