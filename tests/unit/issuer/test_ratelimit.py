"""Unit tests for issuer.ratelimit: whose address a limit counts, behind trusted proxies or not."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import secrets

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from issuer import create_app
from issuer.ratelimit import forwarded_client
from issuer.settings import IssuerSettings
from shared.settings import SettingsError
from tests.support.browsing import DEMO_USERS

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


# -- the address behind the proxies ----------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.9", [], "203.0.113.9"),
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # not through a proxy: the header is the client's
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["192.0.2.66, 198.51.100.1"], "198.51.100.1"),  # what the client wrote is ignored
        ("10.0.0.2", ["192.0.2.66", "198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # two proxies, two headers
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.4"),  # a client inside the proxies' network
        ("10.0.0.2", [""], "10.0.0.2"),
        ("10.0.0.2", [], "10.0.0.2"),  # a health check from the proxy itself
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),  # a dual-stack socket
        ("2001:db8::5", ["2001:db8::6, 2a00::1"], "2a00::1"),
        ("10.0.0.2", ["not-an-address"], "not-an-address"),
    ],
)
def test_client_is_the_first_untrusted_hop_from_the_right(peer: str, forwarded_for: list[str], client: str) -> None:
    assert forwarded_client(peer, forwarded_for, PROXIES) == client


def test_with_no_trusted_proxy_the_header_is_never_read() -> None:
    assert forwarded_client("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_a_long_forged_chain_is_cut_short() -> None:
    assert forwarded_client("10.0.0.2", [", ".join(["10.0.0.9"] * 1000)], PROXIES) == "10.0.0.9"
    assert len(forwarded_client("10.0.0.2", ["x" * 500], PROXIES)) == 64


def test_trusted_proxies_setting_takes_networks_and_addresses() -> None:
    settings = IssuerSettings.from_env({"ISSUER_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7 2001:db8::/32"})
    assert [str(network) for network in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert IssuerSettings.from_env({}).trusted_proxies == ()


@pytest.mark.parametrize("value", ["10.0.0.1/8", "haproxy", "10.0.0.0/33"])
def test_trusted_proxies_setting_names_the_variable_when_malformed(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^ISSUER_TRUSTED_PROXIES must list proxy networks"):
        IssuerSettings.from_env({"ISSUER_TRUSTED_PROXIES": value})


# -- the limits of a real app --------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest, issuer_settings: IssuerSettings) -> IssuerSettings:
    """Three failed passwords per address and minute; counters in memory, then in Redis."""
    storage = request.getfixturevalue("redis_server") if request.param == "redis" else "memory://"
    return dataclasses.replace(
        issuer_settings,
        demo_users=DEMO_USERS,
        address_rate_limit="3 per minute",
        login_rate_limit="100 per minute",
        rate_limit_storage=storage,
    )


def _app(settings: IssuerSettings, *proxies: str) -> Flask:
    return create_app(dataclasses.replace(settings, trusted_proxies=tuple(ipaddress.ip_network(p) for p in proxies)))


def _peer(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _guess(client: FlaskClient, forwarded_for: str | None = None, username: str = "alice") -> TestResponse:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    form = {"grant_type": "password", "username": username, "password": secrets.token_hex(8)}
    return client.post("/token", data=form, headers=headers)


def _address() -> str:
    """A client address of this test's own (Redis keeps counting across tests)."""
    return str(ipaddress.IPv4Address(0xC6336400 + secrets.randbelow(2**16)))  # within 198.51.0.0/16


def test_a_spoofed_forwarded_for_does_not_dodge_the_limit_by_default(settings: IssuerSettings) -> None:
    client = _peer(_app(settings), _address())
    statuses = [_guess(client, _address(), username=f"user{n}").status_code for n in range(4)]
    assert statuses == [400, 400, 400, 429]


def test_a_spoofed_forwarded_for_does_not_dodge_the_limit_from_an_untrusted_peer(settings: IssuerSettings) -> None:
    client = _peer(_app(settings, "10.0.0.0/8"), _address())  # reaches the replica directly
    statuses = [_guess(client, f"10.0.0.{n}").status_code for n in range(4)]
    assert statuses == [400, 400, 400, 429]


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(settings: IssuerSettings) -> None:
    proxy = _peer(_app(settings, "10.0.0.0/8"), "10.1.2.3")
    attacker, bystander = _address(), _address()
    assert [_guess(proxy, attacker).status_code for _ in range(4)] == [400, 400, 400, 429]
    # What the attacker writes left of the proxy's entry changes nothing.
    assert _guess(proxy, f"{bystander}, {attacker}").status_code == 429
    assert _guess(proxy, bystander).status_code == 400
    login = proxy.post(
        "/token",
        data={"grant_type": "password", "username": "bob", "password": "builder"},
        headers={"X-Forwarded-For": bystander},
    )
    assert login.status_code == 200


def test_forwarded_headers_never_change_the_urls_in_the_metadata(settings: IssuerSettings) -> None:
    proxy = _peer(_app(settings, "10.0.0.0/8"), "10.1.2.3")
    spoofed = {
        "X-Forwarded-For": "198.51.100.1",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/evil",
        "Host": "evil.example",
    }
    document = proxy.get("/.well-known/oauth-authorization-server", headers=spoofed).get_json()
    assert document["issuer"] == settings.url
    assert document["jwks_uri"] == f"{settings.url}/.well-known/jwks.json"
    assert document["token_endpoint"] == f"{settings.url}/token"


@pytest.mark.parametrize("path", ["/token", "/login"])
def test_an_oversized_body_is_413_without_an_error_in_the_rate_limiter(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """The limits read the form to decide; a body too large to read is the view's 413, never a logged error."""
    response = client.post(path, data={"grant_type": "password", "username": "alice", "password": "x" * 40_000})
    assert response.status_code == 413
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


# -- charged before the check, refunded unless a password failed ---------------------------------


def test_a_request_refused_by_one_limit_leaves_the_other_limits_budget_whole(settings: IssuerSettings) -> None:
    # Each password request is charged by both limits before its check; a 429 checked nothing,
    # so the per-address budget it was charged is given back: only failed checks spend it.
    client = _peer(_app(dataclasses.replace(settings, login_rate_limit="1 per minute")), _address())
    assert [_guess(client).status_code for _ in range(6)] == [400] + [429] * 5
    assert [_guess(client, username=f"user{n}").status_code for n in range(3)] == [400, 400, 429]


def test_correct_passwords_spend_no_budget(settings: IssuerSettings) -> None:
    client = _peer(_app(settings), _address())
    login = {"grant_type": "password", "username": "bob", "password": "builder"}
    assert [client.post("/token", data=login).status_code for _ in range(5)] == [200] * 5
    assert [_guess(client, username=f"user{n}").status_code for n in range(4)] == [400, 400, 400, 429]


def test_a_request_that_checks_no_password_spends_no_budget(settings: IssuerSettings) -> None:
    client = _peer(_app(settings), _address())
    for _ in range(5):  # no password: invalid_request before any check
        assert client.post("/token", data={"grant_type": "password", "username": "bob"}).status_code == 400
    assert [_guess(client, username=f"user{n}").status_code for n in range(4)] == [400, 400, 400, 429]


# -- the name typed never reaches the log or the counters' storage ----------------------------------


def test_a_typed_name_reaches_neither_the_log_nor_the_limit_storage(
    settings: IssuerSettings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # A password typed into the username field, retried until the account limit answers 429.
    typed = f"Hunter2-MyPassw0rd-{secrets.token_hex(4)}"
    settings = dataclasses.replace(settings, address_rate_limit="100 per minute", login_rate_limit="2 per minute")
    client = _peer(_app(settings), _address())
    caplog.set_level(logging.DEBUG)
    assert [_guess(client, username=typed).status_code for _ in range(3)] == [400, 400, 429]
    logged = caplog.text + capsys.readouterr().err  # ours and every library's, as written
    assert "login.failed" in logged
    assert typed.lower() not in logged.lower()
    if settings.rate_limit_storage.startswith("redis://"):
        keys = redis.Redis.from_url(settings.rate_limit_storage).keys("*")
        assert keys
        assert not [key for key in keys if typed.lower().encode() in key.lower()]


def test_the_account_limit_is_counted_together_by_every_worker(settings: IssuerSettings) -> None:
    # Two apps of one issuer (workers or replicas, one secret) key the same name alike.
    settings = dataclasses.replace(settings, address_rate_limit="100 per minute", login_rate_limit="2 per minute")
    address, name = _address(), f"user-{secrets.token_hex(4)}"
    first, second = _peer(_app(settings), address), _peer(_app(settings), address)
    assert [_guess(first, username=name).status_code, _guess(second, username=name).status_code] == [400, 400]
    assert _guess(second, username=name).status_code == 429


def test_the_limiters_own_log_lines_stay_out_but_its_warnings_stay_in(settings: IssuerSettings) -> None:
    # Its INFO line names the limit key; its warnings and errors (storage unreachable) are ours to see.
    _app(settings)
    limiter_log = logging.getLogger("flask-limiter")
    assert not limiter_log.isEnabledFor(logging.INFO)
    assert limiter_log.isEnabledFor(logging.WARNING)
