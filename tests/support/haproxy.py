"""A private HAProxy load balancer on loopback in front of issuer replicas, from Debian's package.

The configuration is what a deployment in front of several issuers needs (the compose overlay's
balancer follows the same rules):

- Health checks: a replica is in rotation while its `/readyz` answers 200 (it reaches the
  database). When no replica is ready (the database is down for all of them), requests go to
  every replica that is alive (`/healthz`) instead of HAProxy's own 503: the issuer then answers
  503 with `Retry-After` where it needs the database, and serves what it can without it (the
  JWKS from its last snapshot).
- Retries (`retries 3`, `option redispatch 1`: each retry on another replica) on
  `conn-failure empty-response junk-response response-timeout`, for POST /token too. That is safe here: a
  request that never reached a replica is simply sent again; one that reached a replica that
  then died or hung may have committed, and sending it again is harmless for every grant. A
  refresh replayed within the reuse grace gets the same successor (test_replicas shows it on two
  replicas), a password grant starts one more refresh-token family that nobody holds, a client
  credentials grant mints another token, and a replayed authorization code is refused and its
  family revoked, where the client had lost the answer anyway. The last retry is sent at most
  `retries` x `timeout server` = 15 s (plus connect timeouts) after the first attempt, inside the
  default 30 s reuse grace; with a shorter grace (ISSUER_REFRESH_REUSE_GRACE=0 turns it off) a
  replayed refresh revokes its family, and only `conn-failure` is safe to retry. 5xx answers
  are never retried: the issuer's 503 already says when to come back.
- One request per connection (`option httpclose`): kept-alive client connections were lost with
  the replica that last answered on them (measured by test_replicas' kill test).
- HAProxy's own errors (no replica alive at all) are JSON with `Retry-After`, like the issuer's.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import ChildProcess, NotStarted, answers, free_port

SETUP_HINT = "run `make services` (scripts/services-setup installs Debian's haproxy)"
RETRY_AFTER_SECONDS = 5

CONFIG = """\
global
    log stdout format raw local0 info
    maxconn 512

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 30s
    # The issuer answers in milliseconds; see the reuse grace above before raising this.
    timeout server 5s
    timeout check 1s
    # One request per connection, on both sides. With keep-alive, a replica's death also closed
    # idle client connections (those its last answers went out on, and others), and a POST a
    # client had just sent on one was lost unlogged, before HAProxy could retry it elsewhere.
    # Token requests are a few per user per access-token lifetime: a loopback connect is cheap.
    option httpclose
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout
{errorfiles}

frontend issuers
    bind 127.0.0.1:{port}
    # No replica reaches the database: let the live ones answer (503 with Retry-After, or the JWKS).
    use_backend issuers_alive if {{ nbsrv(issuers_ready) eq 0 }}
    default_backend issuers_ready

backend issuers_ready
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{ready_servers}

backend issuers_alive
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{alive_servers}
"""

ERROR_BODY = (
    '{{"error":"temporarily_unavailable","error_description":"no issuer can answer; try again shortly ({status})"}}'
)


class Balancer:
    """HAProxy running with a generated configuration; `url` is its frontend."""

    def __init__(self, root: Path, servers: Sequence[str], *, port: int | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = root / "haproxy.cfg"
        self.config_path.write_text(self._config(servers))
        self.process = ChildProcess(
            "haproxy", [str(haproxy_binary()), "-db", "-f", str(self.config_path)], root / "haproxy.log"
        )

    def _config(self, servers: Sequence[str]) -> str:
        errorfiles = []
        for status, reason in ((502, "Bad Gateway"), (503, "Service Unavailable"), (504, "Gateway Timeout")):
            body = ERROR_BODY.format(status=status)
            path = self.root / f"{status}.http"
            path.write_bytes(
                (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Retry-After: {RETRY_AFTER_SECONDS}\r\nCache-Control: no-store\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                ).encode()
            )
            errorfiles.append(f"    errorfile {status} {path}")
        lines = {
            backend: "\n".join(f"    server {name} {address} check" for name, address in _named(servers))
            for backend in ("ready", "alive")
        }
        return CONFIG.format(
            port=self.port,
            errorfiles="\n".join(errorfiles),
            ready_servers=lines["ready"],
            alive_servers=lines["alive"],
        )

    def start(self, *, timeout: float = 20.0) -> None:
        """Start HAProxy and wait until its frontend answers a health check through a replica."""
        self.process.start()
        self.process.wait_ready(lambda: answers(f"{self.url}/healthz"), timeout=timeout, what="haproxy to answer")

    def stop(self) -> None:
        """Stop HAProxy (SIGUSR1 would wait for connections: SIGTERM ends them)."""
        self.process.stop(signal.SIGTERM)

    def log(self) -> str:
        """Return what HAProxy has logged (one line per request, and health-check changes)."""
        return self.process.log()


def _named(servers: Sequence[str]) -> Iterator[tuple[str, str]]:
    for index, url in enumerate(servers):
        yield f"replica{index}", url.removeprefix("http://").rstrip("/")


def haproxy_binary() -> Path:
    """Return the haproxy program."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    if found is None:
        raise NotStarted(f"haproxy is not installed: {SETUP_HINT}")
    return Path(found)


@contextmanager
def haproxy(
    root: Path, servers: Sequence[str], *, port: int | None = None, timeout: float = 20.0
) -> Iterator[Balancer]:
    """Run HAProxy on loopback (`port`, or a free one) in front of `servers`, its files in `root`."""
    balancer = Balancer(root, servers, port=port)
    balancer.start(timeout=timeout)
    try:
        yield balancer
    finally:
        balancer.stop()
