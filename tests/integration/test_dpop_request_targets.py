"""A DPoP proof's `htu` against the request target as the client wrote it, in every form HTTP allows.

RFC 9449 section 4.3: the proof names the HTTP URI of the request, compared after RFC 3986
syntax-based normalization, so `/api%2Fme` (one segment) is not `/api/me` (two). The profile
API refuses a proof for `/api/me` on an origin-form request for `/api%2Fme`; the same request
written in absolute-form (RFC 9112 section 3.2.2, which a server MUST accept) or with an empty
first segment must be judged the same way: the request's URI is still `.../api%2Fme`.
Requests go over raw sockets: an HTTP client library would rewrite these targets.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.dpop import make_proof
from tests.support.stack import Stack


def _public(base: str) -> str:
    """Return the API's public URL, the `htu` base of its proofs, as its RFC 9728 metadata names it."""
    resource: str = requests.get(f"{base}/.well-known/oauth-protected-resource", timeout=10).json()["resource"]
    return resource


def _bound_token(stack: Stack, key: ec.EllipticCurvePrivateKey) -> str:
    response = requests.post(
        f"{stack.issuer_url}/token",
        data={"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": "cli"},
        headers={"DPoP": make_proof(key, "POST", f"{stack.public_issuer}/token")},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    token: str = response.json()["access_token"]
    return token


def _get(base: str, target: str, token: str, proof: str) -> int:
    """Send `GET target` as written, with the token and proof; return the status."""
    parts = urlsplit(base)
    assert parts.hostname is not None
    assert parts.port is not None
    head = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        f"Authorization: DPoP {token}\r\nDPoP: {proof}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode("ascii"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("form", ["origin", "absolute"])
def test_a_proof_for_api_me_is_refused_for_an_encoded_slash_in_either_request_form(stack: Stack, form: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = _bound_token(stack, key)
    public = _public(stack.resource_url)
    target = "/api%2Fme" if form == "origin" else f"{stack.resource_url}/api%2Fme"
    # Today the origin form is refused (401), the absolute form accepted (200): RAW_URI is not a
    # path there, so the API checks the decoded path `/api/me` encoded again instead.
    assert _get(stack.resource_url, target, token, make_proof(key, "GET", f"{public}/api/me", token)) == 401


@pytest.mark.parametrize("form", ["origin", "absolute"])
def test_a_proof_for_the_encoded_slash_the_client_sent_is_accepted_in_either_request_form(
    stack: Stack, form: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = _bound_token(stack, key)
    public = _public(stack.resource_url)
    target = "/api%2Fme" if form == "origin" else f"{stack.resource_url}/api%2Fme"
    # Today 200 in origin form, 401 `the DPoP proof was made for another URL` in absolute form.
    assert _get(stack.resource_url, target, token, make_proof(key, "GET", f"{public}/api%2Fme", token)) == 200
