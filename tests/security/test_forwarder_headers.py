"""Forwarding headers a client sends itself, against the gunicorn services (issuer and profile API).

gunicorn takes `SCRIPT_NAME` from a request header when the peer is in its
`forwarded_allow_ips`, which defaults to 127.0.0.1 and ::1: every client on the same host (a
sidecar proxy forwarding client headers, `make run`) may choose it. A value the path does not
begin with makes gunicorn itself answer 500 (an HTML "Configuration problem" page, outside the
app: no JSON, no access log line, no metric), against the rule that bad input gets a clear 4xx
and never a 500. A value the path does begin with moves the path the app routes: `/x/api/me`
with `SCRIPT_NAME: /x` is served as `/api/me`, so a prefix any proxy rule matches reaches any
route. The issuer's own rule (issuer.ratelimit.client_address) is that with no trusted proxy
listed, forwarding headers are ignored.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.stack import LoopbackStack, module_stack


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackStack]:
    yield from module_stack(tmp_path_factory.mktemp("forwarder-headers"))


def _get(base: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """GET `path` as sent, with `headers`; return the status, the Content-Type and the body."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("service", ["issuer", "resource"])
def test_a_script_name_header_the_path_does_not_begin_with_is_never_a_500(
    services: LoopbackStack, service: str
) -> None:
    base = services.issuer_url if service == "issuer" else services.resource_url
    status, content_type, body = _get(base, "/healthz", {"SCRIPT_NAME": "/elsewhere"})
    # Today: 500 text/html "Configuration problem: Request path '/healthz' does not start with SCRIPT_NAME".
    assert status < 500, (status, body[:200])
    if status != 200:  # the header ignored (200), or refused as the app refuses bad input: JSON 4xx
        assert content_type.startswith("application/json"), (status, content_type, body[:200])


def test_a_client_cannot_move_the_profile_api_under_a_prefix_of_its_choosing(services: LoopbackStack) -> None:
    # Not a path of the API: 404 without the header; with it (today) served as /healthz, 200.
    assert _get(services.resource_url, "/anything/healthz", {})[0] == 404
    status, _, body = _get(services.resource_url, "/anything/healthz", {"SCRIPT_NAME": "/anything"})
    assert status == 404, (status, body[:200])
