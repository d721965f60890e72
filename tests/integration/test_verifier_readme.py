"""The verifier library's README examples (shared/verifier/README.md), run against a real issuer.

Each Python block of the Flask and FastAPI sections is executed as written, with only the
issuer's URL swapped for the running stack's; a client registered at that issuer gets a token
for the example's audience and scope, which the example API accepts, and refuses without.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.fastapi import protection as fastapi_protection
from jwt_verifier.flask import protection as flask_protection
from tests.support.asgi import serve_asgi
from tests.support.stack import Stack
from tests.support.tokens import new_rsa_key

README = Path(__file__).resolve().parents[2] / "shared" / "verifier" / "README.md"
EXAMPLE_ISSUER = '"https://issuer.example"'
AUDIENCE, SCOPE, RESOURCE = "orders-api", "orders:read", "https://orders.example"


def _example(section: str) -> str:
    """Return the first Python block under the README heading `## {section}`."""
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.DOTALL)
    assert match is not None, f"no python block under '## {section}'"
    return match.group(1)


def _run(section: str, stack: Stack) -> dict[str, Any]:
    """Execute the example against the stack's issuer; return its module namespace."""
    code = _example(section)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12, "the example is meant to be short"
    assert code.count(EXAMPLE_ISSUER) == 1
    swapped = code.replace(
        f"issuer={EXAMPLE_ISSUER}",
        f'issuer="{stack.public_issuer}", jwks_url="{stack.issuer_url}/.well-known/jwks.json"',
    )
    namespace: dict[str, Any] = {"__name__": f"readme_{section.lower()}"}
    exec(compile(swapped, f"README.md ({section})", "exec"), namespace)  # noqa: S102 - our own README
    return namespace


def _token(stack: Stack) -> str:
    """Register the example's API and a client at the issuer; return a token for the example."""
    added = stack.issuer_cli("apis", "add", AUDIENCE, "--scope", SCOPE, "--resource-uri", RESOURCE, "--replace")
    assert added.returncode == 0, added.stderr
    key: rsa.RSAPrivateKey = new_rsa_key()
    client_id = stack.register_client(key, "--audience", AUDIENCE, "--scope", SCOPE, prefix="readme")
    response = stack.service_token(client_id, key, resource=AUDIENCE)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_the_flask_example_protects_its_route(stack: Stack) -> None:
    token = _token(stack)
    app = _run("Flask", stack)["app"]
    try:
        client = app.test_client()
        answer = client.get("/orders", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.get_json()["sub"].startswith("readme-")
        refused = client.get("/orders")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith('Bearer realm="jwt-split"')
    finally:
        flask_protection(app).close()  # its background threads
        flask_protection(app).jwks.session.close()


def test_the_fastapi_example_protects_its_route(stack: Stack) -> None:
    token = _token(stack)
    app = _run("FastAPI", stack)["app"]
    try:
        with serve_asgi(app) as base_url:
            answer = requests.get(f"{base_url}/orders", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["sub"].startswith("readme-")
            refused = requests.get(f"{base_url}/orders", timeout=10)
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
            metadata = requests.get(f"{base_url}/.well-known/oauth-protected-resource", timeout=10)
            assert metadata.json()["resource"] == RESOURCE
    finally:
        fastapi_protection(app).close()  # its background threads
        fastapi_protection(app).jwks.session.close()
