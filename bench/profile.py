"""Where a grant's time goes: the token endpoint under cProfile, its own time summed by module group.

`python -m bench.profile` builds the issuer app in this process on a fresh embedded SQLite
database (the default cost of argon2id), makes a few hundred grants of each kind through
Flask's test client, and prints, per grant, the share of the profiled time spent in SQL
(SQLAlchemy and the database driver), signing (cryptography, issuer.jose), audit and logging,
metrics, tracing, the web framework, and the issuer's own code. cProfile slows pure-Python
code more than C code: the shares say where to look, the bench's CPU figures say how much.
"""

from __future__ import annotations

import cProfile
import dataclasses
import json
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from jwt.algorithms import RSAAlgorithm

from issuer import create_app, extensions
from issuer.clients import Client
from issuer.settings import IssuerSettings

GRANTS = 300
URL = "http://issuer.bench"
GROUPS = (
    ("SQL", ("sqlalchemy", "sqlite3", "psycopg", "_sqlite3")),
    ("signing", ("cryptography", "issuer/jose", "jwt/", "jwt_verifier")),
    ("password hashing", ("argon2",)),
    ("audit and logging", ("shared/audit", "shared/logs", "logging/", "json/")),
    ("metrics", ("prometheus_client", "shared/metrics")),
    ("tracing", ("opentelemetry", "shared/tracing")),
    ("web framework", ("flask", "werkzeug")),
    ("issuer", ("issuer/",)),
)


def _group(filename: str) -> str:
    for name, markers in GROUPS:
        if any(marker in filename for marker in markers):
            return name
    return "other (Python's library, builtins)"


def breakdown(profile: cProfile.Profile) -> dict[str, float]:
    """Return the profiled own time (tottime) by group, as shares of the whole."""
    stats = pstats.Stats(profile)
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        totals[_group(filename if filename != "~" else function)] += tottime
    whole = sum(totals.values()) or 1.0
    return {name: value / whole for name, value in sorted(totals.items(), key=lambda item: -item[1])}


def profiled(work: Callable[[], None], count: int) -> tuple[float, dict[str, float]]:
    """Run `work` `count` times under cProfile; return the CPU µs per run without the profiler, and the breakdown."""
    started = time.process_time()
    for _ in range(count):
        work()
    plain_us = (time.process_time() - started) / count * 1e6
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(count):
        work()
    profile.disable()
    return plain_us, breakdown(profile)


def main() -> int:
    """Profile the password, refresh and client-credentials grants; print a Markdown table."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = IssuerSettings.from_env({"ISSUER_URL": URL, "ISSUER_DATA_DIR": str(Path(tmp) / "issuer")})
        settings = dataclasses.replace(settings, demo_users="alice:wonderland:profile admin")
        app = create_app(settings)
        issuer = extensions.of(app)
        issuer.clients.add(Client("app", frozenset({"password", "refresh_token"})))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks = {"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k", "alg": "RS256"}]}
        service = Client("svc", frozenset({"client_credentials"}), scopes=frozenset({"profile"}))
        issuer.clients.add(dataclasses.replace(service, auth_method="private_key_jwt", jwks=json.dumps(jwks)))
        client: FlaskClient = app.test_client()
        login = {"grant_type": "password", "client_id": "app", "username": "alice", "password": "wonderland"}
        held = [client.post("/token", data=login).get_json()["refresh_token"]]

        def password() -> None:
            assert client.post("/token", data=login).status_code == 200

        def refresh() -> None:
            form = {"grant_type": "refresh_token", "client_id": "app", "refresh_token": held[0]}
            answer = client.post("/token", data=form)
            assert answer.status_code == 200, answer.get_data(as_text=True)
            held[0] = answer.get_json()["refresh_token"]

        def client_credentials() -> None:
            now = int(time.time())
            claims = {"iss": "svc", "sub": "svc", "aud": URL, "iat": now, "exp": now + 60, "jti": str(time.time_ns())}
            assertion = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k"})
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            }
            answer = client.post("/token", data=form)
            assert answer.status_code == 200, answer.get_data(as_text=True)

        rows = []
        for name, work, count in (
            ("refresh", refresh, GRANTS),
            ("client_credentials (private_key_jwt)", client_credentials, GRANTS),
            ("password", password, GRANTS // 10),
        ):
            plain_us, shares = profiled(work, count)
            parts = ", ".join(f"{group} {share:.0%}" for group, share in shares.items() if share >= 0.01)
            rows.append(f"| {name} | {plain_us:,.0f} | {parts} |")
        issuer.database.dispose()
    print("| grant (in process, SQLite) | CPU µs/grant | profiled own time by module group |")
    print("| --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
