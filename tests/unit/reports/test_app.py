"""Unit tests for the reports app: a real issuer and a real profile API on loopback, the app on a real uvicorn."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from jwt_verifier.jose import public_jwk
from shared import readiness
from shared.oauth_client import KeyFileError, load_or_create_key
from tests.support.fakes import JwksServer, finishes_within
from tests.support.processes import wait_until
from tests.unit.reports.conftest import (
    PROFILE_AUDIENCE,
    PUBLIC_URL,
    REPORTS_AUDIENCE,
    REPORTS_CLIENT,
    AppClient,
    AppFactory,
    Issuer,
    ProfileService,
    TokenFactory,
    bearer,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

METADATA_URL = f"{PUBLIC_URL}/.well-known/oauth-protected-resource"
UPSTREAM_SECRET = "upstream-internal-detail"


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _assert_error(response: requests.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert set(body) == {"error", "error_description"}
    assert response.headers["Cache-Control"] == "no-store"
    return body


# -- the report ---------------------------------------------------------------------------


def test_report_names_the_caller_and_what_the_profile_api_saw_of_this_service(
    client: AppClient, token_for: TokenFactory
) -> None:
    token = token_for()
    response = client.get("/api/report", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "caller": {"sub": _claims(token)["sub"], "scope": "reports:read", "aud": REPORTS_AUDIENCE},
        "profile_api": {"sub": REPORTS_CLIENT, "scope": "profile", "aud": PROFILE_AUDIENCE},
    }
    # Compact, keys sorted: the bytes `make demo` shows (and the Flask app answered).
    assert b'"profile_api":{"aud":"jwt-split-api","scope":"profile","sub":"reports-api"}' in response.content
    assert response.headers["Cache-Control"] == "no-store"


def test_caller_names_the_caller_without_calling_the_profile_api(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer
) -> None:
    client = make_app(profile_api_url=jwks_server.base_url)
    token = token_for()
    response = client.get("/api/caller", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"aud": REPORTS_AUDIENCE, "scope": "reports:read", "sub": _claims(token)["sub"]}
    assert response.headers["Cache-Control"] == "no-store"
    assert jwks_server.paths == []
    _assert_error(
        client.get("/api/caller", headers=bearer(token_for(scope="reports:write"))), 403, "insufficient_scope"
    )
    _assert_error(client.get("/api/caller"), 401, "unauthorized")


def test_the_service_token_is_fetched_once_for_many_reports(
    client: AppClient, token_for: TokenFactory, issuer: Issuer
) -> None:
    token = token_for()
    before = issuer.token_requests
    for _ in range(5):
        assert client.get("/api/report", headers=bearer(token)).status_code == 200
    assert issuer.token_requests == before + 1


def test_concurrent_reports_share_one_service_token_fetch(
    make_app: AppFactory, token_for: TokenFactory, issuer: Issuer
) -> None:
    app = make_app()
    token = token_for()
    before = issuer.token_requests
    callers = 6
    barrier = threading.Barrier(callers)

    def report() -> int:
        barrier.wait(timeout=10)
        return app.get("/api/report", headers=bearer(token)).status_code

    with ThreadPoolExecutor(callers) as pool:
        statuses = [future.result(timeout=60) for future in [pool.submit(report) for _ in range(callers)]]
    assert statuses == [200] * callers
    assert issuer.token_requests == before + 1


def test_reports_go_on_with_the_issuer_down_after_the_first_token(
    client: AppClient, token_for: TokenFactory, issuer: Issuer
) -> None:
    token = token_for()
    assert client.get("/api/report", headers=bearer(token)).status_code == 200
    issuer.server.stop()
    # Both APIs verify locally with the keys they hold; the reports API reuses its own token.
    for _ in range(3):
        response = client.get("/api/report", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["profile_api"]["sub"] == REPORTS_CLIENT


def test_nothing_logged_carries_a_token(
    client: AppClient, token_for: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = token_for()
    assert client.get("/api/report", headers=bearer(token)).status_code == 200
    assert caplog.records
    assert not any("eyJ" in str(record.__dict__) for record in caplog.records)


# -- the profile API failing --------------------------------------------------------------


def test_profile_api_down_is_503_with_retry_after(make_app: AppFactory, token_for: TokenFactory, dead_url: str) -> None:
    client = make_app(profile_api_url=dead_url.removesuffix("/.well-known/jwks.json"))
    response = client.get("/api/report", headers=bearer(token_for()))
    _assert_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"


NESTED = b"[" * 20_000 + b"]" * 20_000
HTML = f"<html><body>Bad gateway: {UPSTREAM_SECRET}</body></html>".encode()
HUGE_CLAIMS = json.dumps({"claims": {"sub": "x", "padding": "y" * 2_000_000}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, HTML, 502),
        (200, b"not json " + UPSTREAM_SECRET.encode(), 502),
        (200, NESTED, 502),
        (200, b'{"claims": ' + NESTED + b"}", 502),
        (200, b'{"claims": "' + UPSTREAM_SECRET.encode() + b'"}', 502),
        (200, b"[]", 502),
        (200, b"\xff\xfe", 502),
        (200, HUGE_CLAIMS, 502),
        (403, b'{"error": "insufficient_scope", "error_description": "' + UPSTREAM_SECRET.encode() + b'"}', 502),
        (404, HTML, 502),
        (500, b"{}", 503),
        (502, HTML, 503),
        (429, b'{"error": "too_many_requests"}', 503),
    ],
    ids=[
        "html",
        "text",
        "nested",
        "nested-claims",
        "claims-not-object",
        "list",
        "not-utf8",
        "huge",
        "403",
        "404",
        "500",
        "502-html",
        "429",
    ],
)
def test_a_profile_api_answering_nonsense_is_a_json_error_not_a_500(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer, status: int, body: bytes, expected: int
) -> None:
    jwks_server.answer(status, body, {"Content-Type": "application/json"})
    client = make_app(profile_api_url=jwks_server.base_url)
    response = client.get("/api/report", headers=bearer(token_for()))
    _assert_error(response, expected, "temporarily_unavailable" if expected == 503 else "bad_gateway")
    assert UPSTREAM_SECRET not in response.text
    assert jwks_server.paths == ["/api/me"]


def test_a_redirect_from_the_profile_api_is_not_followed(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer
) -> None:
    jwks_server.answer(302, b"", {"Location": "/elsewhere"})
    client = make_app(profile_api_url=jwks_server.base_url)
    _assert_error(client.get("/api/report", headers=bearer(token_for())), 502, "bad_gateway")
    assert jwks_server.paths == ["/api/me"]


def test_a_slow_profile_api_is_503(make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer) -> None:
    jwks_server.delay = 3.0
    client = make_app(profile_api_url=jwks_server.base_url, timeout=0.3)
    _assert_error(client.get("/api/report", headers=bearer(token_for())), 503, "temporarily_unavailable")


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_profile_api_trickling_its_answer_is_503_within_the_timeout(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer, part: str
) -> None:
    jwks_server.answer(200, b'{"claims": {}, "padding": "' + b"x" * 200 + b'"}')
    jwks_server.trickle_in(part)
    client = make_app(profile_api_url=jwks_server.base_url, timeout=1.0)
    headers = bearer(token_for())
    response = finishes_within(3, jwks_server, lambda: client.get("/api/report", headers=headers))
    _assert_error(response, 503, "temporarily_unavailable")


def test_a_report_has_one_deadline_over_every_upstream_call(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer
) -> None:
    """Each call within REPORTS_TIMEOUT, but a 401 and its retry past it: 503 at the deadline, not 502 after both."""
    client = make_app(profile_api_url=jwks_server.base_url, timeout=1.0)
    headers = bearer(token_for())
    # The caller's token verified first (its key and status list fetched from the issuer): only
    # the calls to the profile API are timed, not this app's first sight of the token.
    assert client.get("/api/caller", headers=headers).status_code == 200
    jwks_server.answer(401, b'{"error": "invalid_token"}', {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    jwks_server.delay = 0.7
    started = time.monotonic()
    response = client.get("/api/report", headers=headers)
    elapsed = time.monotonic() - started
    _assert_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert elapsed < 1.4


class RefuseFirst:
    """The profile API, except that its first /api/me answers 401; the tokens it is sent are kept."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.tokens: list[str] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.tokens.append(environ.get("HTTP_AUTHORIZATION", ""))
        if len(self.tokens) > 1:
            return self.app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")])
        return [b'{"error": "invalid_token"}']


def test_a_401_from_the_profile_api_is_retried_once_with_a_fresh_token(
    client: AppClient, token_for: TokenFactory, issuer: Issuer, profile_api: ProfileService
) -> None:
    refusing = RefuseFirst(profile_api.app)
    profile_api.server.mount(refusing)
    token = token_for()
    before = issuer.token_requests
    response = client.get("/api/report", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert len(refusing.tokens) == 2
    assert refusing.tokens[0] != refusing.tokens[1]
    assert issuer.token_requests == before + 2


def test_a_profile_api_refusing_every_token_is_502_after_one_retry(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer, issuer: Issuer
) -> None:
    jwks_server.answer(401, b'{"error": "invalid_token"}', {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    client = make_app(profile_api_url=jwks_server.base_url)
    token = token_for()
    before = issuer.token_requests
    _assert_error(client.get("/api/report", headers=bearer(token)), 502, "bad_gateway")
    assert jwks_server.paths == ["/api/me", "/api/me"]
    assert issuer.token_requests == before + 2


# -- the issuer refusing ------------------------------------------------------------------


def test_the_issuer_refusing_the_reports_client_is_502_with_only_the_issuers_description(
    make_app: AppFactory, token_for: TokenFactory
) -> None:
    client = make_app(register=False)
    body = _assert_error(client.get("/api/report", headers=bearer(token_for())), 502, "bad_gateway")
    assert body["error_description"] == "the issuer refused: client authentication failed"


# -- tokens at /api/report ----------------------------------------------------------------


def test_no_token_is_401_with_a_bare_challenge_naming_the_metadata(client: AppClient) -> None:
    response = client.get("/api/report")
    _assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="jwt-split", resource_metadata="{METADATA_URL}"'


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 10_000], ids=["word", "three-parts", "huge"])
def test_a_malformed_token_is_401_invalid_token_naming_the_metadata(client: AppClient, token: str) -> None:
    response = client.get("/api/report", headers=bearer(token))
    _assert_error(response, 401, "invalid_token")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jwt-split", error="invalid_token"')
    assert challenge.endswith(f'resource_metadata="{METADATA_URL}"')


def test_a_token_for_the_profile_api_is_401_here(client: AppClient, token_for: TokenFactory) -> None:
    response = client.get("/api/report", headers=bearer(token_for(audience=PROFILE_AUDIENCE, scope="profile")))
    _assert_error(response, 401, "invalid_token")
    assert f'resource_metadata="{METADATA_URL}"' in response.headers["WWW-Authenticate"]


def test_a_token_without_reports_read_is_403_naming_the_scope(client: AppClient, token_for: TokenFactory) -> None:
    response = client.get("/api/report", headers=bearer(token_for(scope="reports:write")))
    _assert_error(response, 403, "insufficient_scope")
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="reports:read"' in challenge
    assert f'resource_metadata="{METADATA_URL}"' in challenge


@pytest.mark.parametrize("joined", [True, False], ids=["comma-joined", "two-headers"])
def test_two_authorization_values_are_400_invalid_request(
    client: AppClient, token_for: TokenFactory, joined: bool
) -> None:
    value = f"Bearer {token_for()}"
    headers = [("Authorization", f"{value}, {value}")] if joined else [("Authorization", value)] * 2
    status, challenge, body = _raw_get(client, "/api/report", headers)
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert f'resource_metadata="{METADATA_URL}"' in challenge


def _raw_get(client: AppClient, path: str, headers: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    """GET `path` with `headers` as given, a name repeated if it is; return the status, challenge and body."""
    url = urlsplit(client.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.getheader("WWW-Authenticate") or "", answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/api/report/", "/api/caller/", "/healthz/"])
def test_a_trailing_slash_is_404_never_a_redirect(client: AppClient, path: str) -> None:
    """No 307 to the route without the slash: a redirect answers before auth and may send the token elsewhere."""
    response = client.get(path)
    _assert_error(response, 404, "not_found")
    assert "Location" not in response.headers


def _head(client: AppClient, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.head(f"{client.url}{path}", headers=headers, timeout=30, allow_redirects=False)


@pytest.mark.parametrize("path", ["/api/caller", "/healthz", "/.well-known/oauth-protected-resource"])
def test_head_on_a_get_route_answers_as_get_without_a_body(
    client: AppClient, token_for: TokenFactory, path: str
) -> None:
    headers = bearer(token_for())
    got = client.get(path, headers=headers)
    head = _head(client, path, headers)
    assert (head.status_code, got.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert head.headers.get("Cache-Control") == got.headers.get("Cache-Control")


def test_head_without_a_token_is_401_with_the_challenge(client: AppClient) -> None:
    head = _head(client, "/api/report")
    assert head.status_code == 401
    assert head.content == b""
    assert head.headers["WWW-Authenticate"] == f'Bearer realm="jwt-split", resource_metadata="{METADATA_URL}"'


# -- metadata, keys, health ---------------------------------------------------------------


def test_protected_resource_metadata_describes_the_reports_api(client: AppClient, issuer: Issuer) -> None:
    response = client.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == PUBLIC_URL
    assert document["authorization_servers"] == [issuer.url]
    assert document["scopes_supported"] == ["reports:read"]
    assert document["bearer_methods_supported"] == ["header"]


def test_client_jwks_publishes_only_the_public_half_of_the_key_file(make_app: AppFactory, tmp_path: Path) -> None:
    response = make_app().get("/client-jwks.json")
    assert response.status_code == 200
    key = load_or_create_key(tmp_path / "reports" / "client-key.pem")
    assert response.json() == {"keys": [public_jwk(key.public_key())]}
    assert [sorted(jwk) for jwk in response.json()["keys"]] == [["alg", "e", "kid", "kty", "n", "use"]]


def test_healthz_answers_and_readyz_is_ready_once_keys_are_loaded(client: AppClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_readyz_is_503_while_a_sibling_worker_holds_no_keys(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FastAPI app's probe counts every worker of the run (shared.readiness), as the resource's does."""
    # Set, not deleted, first: monkeypatch then removes what prepare() sets when the test ends.
    monkeypatch.setenv(readiness.READY_DIR_ENV, "")
    run = readiness.prepare(str(tmp_path), 2)  # as the gunicorn master does; this process is one worker
    try:
        client = make_app()
        assert client.get("/readyz").status_code == 503  # its keys load now, if not yet
        wait_until(lambda: (run / str(os.getpid())).exists(), timeout=10, what="this worker's record")
        waiting = client.get("/readyz")
        assert waiting.status_code == 503, waiting.text
        assert waiting.json() == {"status": "not ready", "reason": "1 of 2 workers hold no verification keys yet"}
        assert waiting.headers["Retry-After"] == "5"
        (run / str(os.getppid())).touch()  # a live sibling that holds keys
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
    finally:
        readiness.remove(run)


@pytest.mark.parametrize("content", [b"garbage\n", b""], ids=["garbage", "empty"])
def test_create_app_with_a_bad_key_file_fails_with_a_message_naming_it(
    make_app: AppFactory, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "reports" / "client-key.pem"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=f"^{path} does not hold an unencrypted PEM RSA private key"):
        make_app(register=False)


# -- the event loop, OpenAPI and /docs ----------------------------------------------------


def test_a_report_waiting_on_the_profile_api_does_not_hold_up_other_requests(
    make_app: AppFactory, token_for: TokenFactory, jwks_server: JwksServer
) -> None:
    """The upstream call blocks a worker thread, never the event loop: other requests are answered meanwhile."""
    client = make_app(profile_api_url=jwks_server.base_url, timeout=30.0)
    token = token_for()
    jwks_server.hold()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.get, "/api/report", bearer(token))
        try:
            jwks_server.wait_for_requests(1)
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/report").status_code == 401  # verified (refused) on the loop meanwhile
            assert not pending.done()
        finally:
            jwks_server.release()
        _assert_error(pending.result(timeout=30), 502, "bad_gateway")


def test_openapi_lists_the_report_with_the_bearer_scheme_and_its_scope(client: AppClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    # The Swagger UI /docs serves (4.15) renders OpenAPI 3.0 documents only; with 3.1 it shows
    # "Unable to render this definition".
    assert document["openapi"].startswith("3.0.")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["components"]["securitySchemes"]["dpopAuth"]["scheme"] == "DPoP"  # RFC 9449
    either: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"dpopAuth": []}]
    assert document["paths"]["/api/report"]["get"]["security"] == either
    assert document["paths"]["/api/caller"]["get"]["security"] == either
    for public in ("/healthz", "/readyz", "/client-jwks.json"):
        assert "security" not in document["paths"][public]["get"]


def test_docs_is_swagger_ui_served_from_this_origin_under_a_csp_of_self_alone(client: AppClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    directives = dict(d.strip().partition(" ")[::2] for d in response.headers["Content-Security-Policy"].split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "http" not in response.headers["Content-Security-Policy"]
    # No inline script (script-src 'self' would block it), and every asset from this origin.
    assert re.findall(r"<script>", page) == []
    scripts = re.findall(r'<script src="([^"]+)"></script>', page)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)">', page)
    assert all(url.startswith("/docs/") for url in [*scripts, *styles])
    assert [url.rpartition("/")[2] for url in scripts] == ["swagger-ui-bundle.js", "swagger-init.js"]
    assert [url.rpartition("/")[2] for url in styles] == ["swagger-ui.css"]
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == ["data:,", *styles, *scripts]
    for url, media_type, content in [
        (scripts[0], "text/javascript", "SwaggerUIBundle"),
        (scripts[1], "text/javascript", '"url": "/openapi.json"'),
        (styles[0], "text/css", ".swagger-ui"),
    ]:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["Content-Type"] == f"{media_type}; charset=utf-8"
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        assert content in asset.text
