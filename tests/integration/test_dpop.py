"""DPoP at the resource under gunicorn: one proof is accepted once, by whichever of its workers sees it first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.dpop import make_proof, thumbprint
from tests.support.fakes import JwksServer
from tests.support.processes import GunicornService, free_port
from tests.support.tokens import ISSUER, make_claims, new_rsa_key, sign

AUDIENCE = "jwt-split-api"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture
def resource(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> Iterator[GunicornService]:
    """The resource with two workers, trusting a JWKS server of the test's own (no issuer needed)."""
    jwks = JwksServer()
    jwks.serve_keys(signing_key)
    port = free_port()
    env = {
        "RESOURCE_ISSUER": ISSUER,
        "RESOURCE_ISSUER_INTERNAL_URL": jwks.url.rsplit("/", 2)[0],
        "RESOURCE_JWKS_URL": jwks.url,
        "RESOURCE_PUBLIC_URL": f"http://localhost:{port}",
        "TMPDIR": str(tmp_path),  # the default replay file, shared by the workers, goes under it
    }
    service = GunicornService(
        "resource", "resource_server:create_app()", env, tmp_path / "resource.log", port=port, workers=2
    )
    service.start().wait_answering("/healthz")
    service.wait_all_workers("jwks loaded")
    yield service
    service.stop()
    jwks.stop()


def test_a_proof_sent_to_every_worker_at_once_is_accepted_once(
    resource: GunicornService, signing_key: rsa.RSAPrivateKey
) -> None:
    client_key = ec.generate_private_key(ec.SECP256R1())
    token = sign(make_claims(audience=AUDIENCE, scope="profile", cnf={"jkt": thumbprint(client_key)}), signing_key)
    public_url = resource.env["RESOURCE_PUBLIC_URL"]
    proof = make_proof(client_key, "GET", f"{public_url}/api/me", token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    barrier = threading.Barrier(12)
    answers: list[tuple[int, str]] = []

    def send() -> None:
        with requests.Session() as session:  # a connection of its own: gunicorn spreads them over its workers
            barrier.wait()
            response = session.get(f"{resource.url}/api/me", headers=headers, timeout=10)
            answers.append((response.status_code, response.json().get("error", "")))

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [(200, "")] + [(401, "invalid_dpop_proof")] * 11
    fresh = make_proof(client_key, "GET", f"{public_url}/api/me", token)
    assert requests.get(f"{resource.url}/api/me", headers={**headers, "DPoP": fresh}, timeout=10).status_code == 200
    bearer = requests.get(f"{resource.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert (bearer.status_code, bearer.json()["error"]) == (401, "invalid_token")
    assert bearer.headers["WWW-Authenticate"].startswith('DPoP realm="jwt-split", error="invalid_token"')
