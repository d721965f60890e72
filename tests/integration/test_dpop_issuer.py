"""DPoP (RFC 9449) at the issuer's token endpoint, over HTTP against a running stack.

Proofs are made as a client makes them, with keys `cryptography` generates; every grant with
a proof gets a token bound to the proof's key (`cnf.jkt`, `token_type` DPoP), a refused proof
gets 400 `invalid_dpop_proof` and no token.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from shared.pkce import s256
from tests.support.dpop import ProofKey, make_proof, private_jwk, thumbprint
from tests.support.stack import Stack
from tests.support.tokens import client_credentials_form, new_rsa_key

_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
WEB_CLIENT = "resource-web"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _endpoint(stack: Stack) -> str:
    """Return the token endpoint's public URL: the `htu` a client's proofs name."""
    return f"{stack.public_issuer}/token"


def _post(stack: Stack, form: dict[str, str], proof: str | None = None) -> requests.Response:
    headers = {"DPoP": proof} if proof is not None else {}
    return requests.post(f"{stack.issuer_url}/token", data=form, headers=headers, timeout=10)


def _password(stack: Stack, proof: str | None = None, client_id: str = "cli") -> requests.Response:
    form = {"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": client_id}
    return _post(stack, form, proof)


def _refresh(stack: Stack, token: str, proof: str | None = None, client_id: str = "cli") -> requests.Response:
    return _post(stack, {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}, proof)


def _bound(response: requests.Response, key: ProofKey) -> dict[str, Any]:
    """Assert the answer is a DPoP-bound token for `key`; return its claims."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    claims = _claims(body["access_token"])
    assert claims["cnf"] == {"jkt": thumbprint(key)}
    return claims


def _refused(response: requests.Response, error: str = "invalid_dpop_proof") -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error, response.text
    assert "access_token" not in response.json()
    description: str = response.json()["error_description"]
    return description


def test_a_password_grant_with_a_proof_is_bound_and_its_refresh_token_needs_that_key(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    response = _password(stack, make_proof(key, "POST", _endpoint(stack)))
    _bound(response, key)
    refresh_token = response.json()["refresh_token"]

    # A public client's refresh token is bound too: no proof, or another key's, gets nothing.
    assert "DPoP-bound" in _refused(_refresh(stack, refresh_token))
    thief = ec.generate_private_key(ec.SECP256R1())
    _refused(_refresh(stack, refresh_token, make_proof(thief, "POST", _endpoint(stack))), "invalid_grant")
    # Refused before it was spent: the rightful client still refreshes, and the successor stays bound.
    refreshed = _refresh(stack, refresh_token, make_proof(key, "POST", _endpoint(stack)))
    _bound(refreshed, key)
    successor = refreshed.json()["refresh_token"]
    _refused(_refresh(stack, successor, make_proof(thief, "POST", _endpoint(stack))), "invalid_grant")
    _bound(_refresh(stack, successor, make_proof(key, "POST", _endpoint(stack))), key)


def test_without_a_proof_tokens_stay_bearer_tokens(stack: Stack) -> None:
    response = _password(stack)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in _claims(response.json()["access_token"])
    assert _refresh(stack, response.json()["refresh_token"]).json()["token_type"] == "Bearer"


def test_client_credentials_with_a_proof_get_a_bound_token(stack: Stack) -> None:
    client_key = new_rsa_key()
    client_id = stack.register_client(client_key, "--scope", "profile")
    for key in (ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()):
        form = client_credentials_form(client_id, client_key, stack.public_issuer)
        claims = _bound(_post(stack, form, make_proof(key, "POST", _endpoint(stack))), key)
        assert claims["sub"] == client_id


def test_refused_proofs_get_no_token(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    url = _endpoint(stack)
    replayed = make_proof(key, "POST", url)
    _bound(_password(stack, replayed), key)
    proofs = {
        "replayed": replayed,
        "another method": make_proof(key, "GET", url),
        "another URL": make_proof(key, "POST", f"{stack.public_issuer}/revoke"),
        "another server": make_proof(key, "POST", "https://evil.example/token"),
        "stale": make_proof(key, "POST", url, iat=int(time.time()) - 600),
        "from the future": make_proof(key, "POST", url, iat=int(time.time()) + 600),
        "a private key": make_proof(rsa_key, "POST", url, header={"jwk": private_jwk(rsa_key)}),
        "alg none": make_proof(key, "POST", url, alg="none"),
        "HS256": make_proof(key, "POST", url, alg="HS256"),
        "another signer": make_proof(key, "POST", url, signer=ec.generate_private_key(ec.SECP256R1())),
        "no jti": make_proof(key, "POST", url, jti=None),
        "a JWT of another type": make_proof(key, "POST", url, header={"typ": "JWT"}),
        "not a JWT": "not-a-proof",
        "not ASCII": "\u00e9.\u00e9.\u00e9",
        "JSON that is not an object": ".".join(["WzFd"] * 3),
    }
    for what, proof in proofs.items():
        response = _password(stack, proof)
        assert response.status_code == 400, (what, response.text)
        assert response.json()["error"] == "invalid_dpop_proof", (what, response.text)


def test_two_dpop_headers_are_refused(stack: Stack) -> None:
    """RFC 9449 section 4.3 check 1: not exactly one DPoP header, as two lines or joined by a comma."""
    key = ec.generate_private_key(ec.SECP256R1())
    body = "grant_type=password&username=alice&password=wonderland&client_id=cli"
    parts = urlsplit(stack.issuer_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.putrequest("POST", "/token")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("DPoP", make_proof(key, "POST", _endpoint(stack)))
        conn.putheader("DPoP", make_proof(key, "POST", _endpoint(stack)))
        conn.endheaders(body.encode())
        answer = conn.getresponse()
        assert answer.status == 400
        refused = json.loads(answer.read())
        assert refused["error"] == "invalid_dpop_proof"
        assert "exactly one DPoP header" in refused["error_description"]
    finally:
        conn.close()
    joined = ", ".join(make_proof(key, "POST", _endpoint(stack)) for _ in range(2))
    assert "exactly one DPoP header" in _refused(_password(stack, joined))


def _code(stack: Stack, verifier: str, **extra: str) -> requests.Response:
    """Log alice in through /authorize and /login as a browser would; return the redirect to the client."""
    redirect_uri = f"http://localhost:{urlsplit(stack.resource_url).port}/callback"
    params = {
        "response_type": "code",
        "client_id": WEB_CLIENT,
        "redirect_uri": redirect_uri,
        "scope": "profile",
        "state": "s-1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        **extra,
    }
    with requests.Session() as browser:
        answer = browser.get(f"{stack.issuer_url}/authorize", params=params, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        if urlsplit(answer.headers["Location"]).path != "/login":
            return answer  # refused back to the client
        match = _CSRF_INPUT.search(browser.get(f"{stack.issuer_url}/login", timeout=10).text)
        assert match is not None
        login = {"csrf_token": match.group(1), "username": "alice", "password": "wonderland"}
        answer = browser.post(f"{stack.issuer_url}/login", data=login, allow_redirects=False, timeout=10)
        assert answer.status_code == 303, answer.text
        back = urlsplit(answer.headers["Location"])
        answer = browser.get(f"{stack.issuer_url}{back.path}?{back.query}", allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer


def _query(answer: requests.Response) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def _exchange(stack: Stack, code: str, verifier: str, proof: str | None) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"http://localhost:{urlsplit(stack.resource_url).port}/callback",
        "client_id": WEB_CLIENT,
        "code_verifier": verifier,
    }
    return _post(stack, form, proof)


def test_the_code_flow_binds_the_code_to_dpop_jkt(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    # A code bound to the key by dpop_jkt: another key's proof, or none, does not redeem it.
    for proof_key in (other, None):
        verifier = secrets.token_urlsafe(48)
        code = _query(_code(stack, verifier, dpop_jkt=thumbprint(key)))["code"]
        proof = make_proof(proof_key, "POST", _endpoint(stack)) if proof_key is not None else None
        assert "dpop_jkt" in _refused(_exchange(stack, code, verifier, proof), "invalid_grant")
    verifier = secrets.token_urlsafe(48)
    code = _query(_code(stack, verifier, dpop_jkt=thumbprint(key)))["code"]
    response = _exchange(stack, code, verifier, make_proof(key, "POST", _endpoint(stack)))
    _bound(response, key)
    # The public web client's refresh token is bound to the key as well.
    _refused(_refresh(stack, response.json()["refresh_token"], client_id=WEB_CLIENT))
    _bound(
        _refresh(stack, response.json()["refresh_token"], make_proof(key, "POST", _endpoint(stack)), WEB_CLIENT), key
    )


def test_the_code_flow_without_dpop_jkt_is_bound_by_the_exchange_proof(stack: Stack) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    verifier = secrets.token_urlsafe(48)
    code = _query(_code(stack, verifier))["code"]
    _bound(_exchange(stack, code, verifier, make_proof(key, "POST", _endpoint(stack))), key)


def test_a_malformed_dpop_jkt_is_refused_back_to_the_client(stack: Stack) -> None:
    query = _query(_code(stack, secrets.token_urlsafe(48), dpop_jkt="not a thumbprint"))
    assert query["error"] == "invalid_request"
    assert "dpop_jkt" in query["error_description"]


def test_a_client_registered_to_require_dpop_gets_no_token_without_a_proof(stack: Stack) -> None:
    client_id = f"dpop-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("clients", "add", client_id, "--grant", "password", "--require-dpop")
    assert added.returncode == 0, added.stderr
    assert "DPoP-bound tokens only" in added.stdout
    listed = stack.issuer_cli("clients", "list")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{client_id} "))
    assert "dpop_bound_access_tokens: true" in line
    assert "DPoP" in _refused(_password(stack, client_id=client_id))
    key = ec.generate_private_key(ec.SECP256R1())
    _bound(_password(stack, make_proof(key, "POST", _endpoint(stack)), client_id=client_id), key)


def test_an_api_registered_to_require_dpop_gets_no_bearer_token(stack: Stack) -> None:
    audience = f"dpop-api-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("apis", "add", audience, "--scope", "profile", "--require-dpop")
    assert added.returncode == 0, added.stderr
    listed = stack.issuer_cli("apis", "list")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{audience} "))
    assert line.endswith("dpop_bound_access_tokens_required: true")
    form = {"grant_type": "password", "username": "alice", "password": "wonderland", "resource": audience}
    assert "DPoP-bound" in _refused(_post(stack, form))
    key = ec.generate_private_key(ec.SECP256R1())
    assert _bound(_post(stack, form, make_proof(key, "POST", _endpoint(stack))), key)["aud"] == audience
    assert _password(stack).json()["token_type"] == "Bearer"  # the default API is as it was


def test_a_client_registered_to_require_nonces_must_use_the_issuers(stack: Stack) -> None:
    client_id = f"nonce-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("clients", "add", client_id, "--grant", "password", "--require-dpop-nonce")
    assert added.returncode == 0, added.stderr
    listed = stack.issuer_cli("clients", "list")
    assert "dpop_nonce: true" in next(line for line in listed.stdout.splitlines() if line.startswith(f"{client_id} "))
    key = ec.generate_private_key(ec.SECP256R1())
    first = _password(stack, make_proof(key, "POST", _endpoint(stack)), client_id=client_id)
    _refused(first, "use_dpop_nonce")
    response = _password(
        stack, make_proof(key, "POST", _endpoint(stack), nonce=first.headers["DPoP-Nonce"]), client_id=client_id
    )
    _bound(response, key)
    assert response.headers["DPoP-Nonce"]
    # Other clients need none (ISSUER_DPOP_NONCE is off on this stack).
    assert "DPoP-Nonce" not in _password(stack, make_proof(key, "POST", _endpoint(stack))).headers


def test_both_metadata_documents_name_the_proof_algorithms(stack: Stack) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        document = requests.get(f"{stack.issuer_url}{path}", timeout=10).json()
        assert document["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "PS256", "EdDSA"]


def test_with_nonces_on_a_proof_needs_the_issuers_nonce(nonce_stack: Stack) -> None:
    stack = nonce_stack
    key = ec.generate_private_key(ec.SECP256R1())
    first = _password(stack, make_proof(key, "POST", _endpoint(stack)))
    _refused(first, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    _refused(_password(stack, make_proof(key, "POST", _endpoint(stack), nonce="1.forged")), "use_dpop_nonce")
    # Any worker accepts the nonce another gave out (the stack runs two).
    for _ in range(3):
        response = _password(stack, make_proof(key, "POST", _endpoint(stack), nonce=nonce))
        _bound(response, key)
        assert response.headers["DPoP-Nonce"]
