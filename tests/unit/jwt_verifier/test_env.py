"""Unit tests for jwt_verifier.env: settings declared once on their field, read with a prefix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jwt_verifier.config import VerifierConfig
from jwt_verifier.env import (
    ConfigError,
    boolean,
    choice,
    integer,
    lookup,
    number,
    read,
    read_one,
    setting,
    upper,
    url,
    urls,
    variables,
    words,
)

SECRET = "hunter2-not-a-pin"


@dataclass(frozen=True)
class Orders:
    """A service's settings, as a service declares them."""

    issuer: str = setting("ISSUER", parse=url, doc="the issuer")
    issuer_internal_url: str = setting(
        "ISSUER_INTERNAL_URL", "http://x", parse=url, derive=lambda v: v["issuer"], shown="$ORDERS_ISSUER"
    )
    ttl: int = setting("TTL", 600, parse=integer(30, 3600), doc="token lifetime")
    timeout: float = setting("TIMEOUT", 5.0, parse=number(0.1))
    prefetch: bool = setting("PREFETCH", True, parse=boolean)
    scopes: tuple[str, ...] = setting("SCOPES", ("read", "write"), parse=words)
    mode: str = setting("MODE", "local", parse=choice("local", "remote"))
    log_level: str = setting("LOG_LEVEL", "INFO", parse=upper)
    secret: int = setting("SECRET", 0, parse=integer(), secret=True, doc="the client secret (a PIN)")
    not_read: int = 7


def test_unset_and_empty_variables_take_the_defaults() -> None:
    orders = read(Orders, {"ORDERS_ISSUER": "https://i.example/", "ORDERS_TTL": "  "}, "ORDERS_")
    assert orders == Orders(issuer="https://i.example", issuer_internal_url="https://i.example")
    assert (orders.ttl, orders.timeout, orders.prefetch, orders.scopes) == (600, 5.0, True, ("read", "write"))


def test_each_variable_is_read_with_the_prefix_and_parsed() -> None:
    environ = {
        "ORDERS_ISSUER": "https://i.example",
        "ORDERS_ISSUER_INTERNAL_URL": "http://issuer:8000/",
        "ORDERS_TTL": "90",
        "ORDERS_TIMEOUT": "0.5",
        "ORDERS_PREFETCH": "off",
        "ORDERS_SCOPES": " a  b ",
        "ORDERS_MODE": "Remote",
        "ORDERS_LOG_LEVEL": "debug",
        "TTL": "31",  # no prefix: not ours
    }
    orders = read(Orders, environ, "ORDERS_")
    assert orders.issuer_internal_url == "http://issuer:8000"
    assert (orders.ttl, orders.timeout, orders.prefetch, orders.scopes) == (90, 0.5, False, ("a", "b"))
    assert (orders.mode, orders.log_level, orders.not_read) == ("remote", "DEBUG", 7)
    assert read(Orders, {"OTHER_ISSUER": "https://o.example"}, "OTHER_").issuer == "https://o.example"


def test_a_missing_required_setting_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^ORDERS_ISSUER is required but not set$"):
        read(Orders, {}, "ORDERS_")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ORDERS_TTL", "ten", "ORDERS_TTL must be a whole number, got 'ten'"),
        ("ORDERS_TTL", "29", "ORDERS_TTL must be at least 30, got 29"),
        ("ORDERS_TTL", "3601", "ORDERS_TTL must be at most 3600, got 3601"),
        ("ORDERS_TIMEOUT", "nan", "ORDERS_TIMEOUT must be at least 0.1, got nan"),
        ("ORDERS_TIMEOUT", "soon", "ORDERS_TIMEOUT must be a number, got 'soon'"),
        ("ORDERS_PREFETCH", "maybe", "ORDERS_PREFETCH must be true or false, got 'maybe'"),
        ("ORDERS_ISSUER", "localhost:8000", "ORDERS_ISSUER must be an absolute http(s) URL, got 'localhost:8000'"),
        ("ORDERS_ISSUER", "ftp://i.example", "ORDERS_ISSUER must be an absolute http(s) URL"),
        ("ORDERS_ISSUER", "https://i.example/?a=1", "ORDERS_ISSUER must not have a query or fragment"),
        ("ORDERS_MODE", "both", "ORDERS_MODE must be 'local' or 'remote', got 'both'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, message: str) -> None:
    environ = {"ORDERS_ISSUER": "https://i.example", name: value}
    with pytest.raises(ConfigError) as caught:
        read(Orders, environ, "ORDERS_")
    assert str(caught.value).startswith(message)


def test_a_secrets_value_is_never_in_an_error_nor_the_repr() -> None:
    with pytest.raises(ConfigError) as caught:
        read(Orders, {"ORDERS_ISSUER": "https://i.example", "ORDERS_SECRET": SECRET}, "ORDERS_")
    assert str(caught.value) == "ORDERS_SECRET must be a whole number"
    assert SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    orders = read(Orders, {"ORDERS_ISSUER": "https://i.example", "ORDERS_SECRET": "12345678"}, "ORDERS_")
    assert orders.secret == 12345678
    assert "12345678" not in repr(orders)
    assert "secret" not in repr(orders)


def test_defaults_and_given_values_replace_the_declared_ones() -> None:
    orders = read(Orders, {"ORDERS_TTL": "60"}, "ORDERS_", defaults={"issuer": "https://d.example", "ttl": 120})
    assert (orders.issuer, orders.issuer_internal_url, orders.ttl) == ("https://d.example", "https://d.example", 60)
    given = read(Orders, {"ORDERS_TTL": "not read"}, "ORDERS_", given={"issuer": "https://g.example", "ttl": 45})
    assert (given.issuer, given.ttl) == ("https://g.example", 45)


def test_one_setting_may_be_read_alone_with_a_context_for_its_derivation() -> None:
    internal = read_one(Orders, "issuer_internal_url", {}, "ORDERS_", context={"issuer": "https://c.example"})
    assert internal == "https://c.example"
    with pytest.raises(KeyError):
        read_one(Orders, "not_read", {}, "ORDERS_")


def test_variables_list_every_declared_setting_with_its_default_for_the_docs() -> None:
    listed = {v.name: v.default for v in variables(Orders, "ORDERS_", defaults={"issuer": "https://d.example"})}
    assert listed == {
        "ORDERS_ISSUER": "https://d.example",
        "ORDERS_ISSUER_INTERNAL_URL": "$ORDERS_ISSUER",
        "ORDERS_TTL": "600",
        "ORDERS_TIMEOUT": "5.0",
        "ORDERS_PREFETCH": "true",
        "ORDERS_SCOPES": "read write",
        "ORDERS_MODE": "local",
        "ORDERS_LOG_LEVEL": "INFO",
        "ORDERS_SECRET": "",
    }
    (secret,) = [v for v in variables(Orders, "ORDERS_") if v.secret]
    assert (secret.name, secret.doc) == ("ORDERS_SECRET", "the client secret (a PIN)")


def test_a_mutable_default_is_refused() -> None:
    with pytest.raises(TypeError, match="immutable"):
        setting("LIST", [])


def test_urls_are_each_checked() -> None:
    assert urls("https://a.example/ http://b.example") == ("https://a.example", "http://b.example")
    with pytest.raises(ValueError, match="absolute"):
        urls("https://a.example nope")


# -- VerifierConfig.from_env --------------------------------------------------------------


def test_the_verifier_config_reads_every_field_with_the_prefix() -> None:
    environ = {
        "API_ISSUER": "https://issuer.example/",
        "API_AUDIENCE": "orders",
        "API_PUBLIC_URL": "https://api.example",
        "API_SCOPES_SUPPORTED": "orders:read orders:write",
        "API_LEEWAY": "0",
        "API_MAX_TOKEN_BYTES": "8192",
        "API_TOKEN_CACHE_SIZE": "0",
        "API_JWKS_URL": "http://issuer:8000/.well-known/jwks.json",
        "API_JWKS_TIMEOUT": "0.5",
        "API_JWKS_MAX_BYTES": "2048",
        "API_JWKS_DEFAULT_TTL": "120",
        "API_JWKS_MIN_TTL": "5",
        "API_JWKS_MAX_TTL": "600",
        "API_JWKS_COOLDOWN": "2.5",
        "API_JWKS_RETRY_MAX": "1",
        "API_JWKS_PREFETCH": "false",
    }
    config = VerifierConfig.from_env("API_", environ)
    assert config == VerifierConfig(
        issuer="https://issuer.example",
        audience="orders",
        resource="https://api.example",
        jwks_url="http://issuer:8000/.well-known/jwks.json",
        scopes_supported=("orders:read", "orders:write"),
        leeway=0,
        max_token_bytes=8192,
        token_cache_size=0,
        jwks_timeout=0.5,
        jwks_max_bytes=2048,
        jwks_default_ttl=120,
        jwks_min_ttl=5,
        jwks_max_ttl=600,
        jwks_cooldown=2.5,
        jwks_retry_max=1.0,
        jwks_prefetch=False,
    )
    read_fields = {f.name for f in dataclasses.fields(VerifierConfig)}
    assert len(variables(VerifierConfig, "API_")) == len(read_fields)


def test_the_verifier_config_takes_an_applications_defaults_and_the_librarys() -> None:
    defaults: dict[str, Any] = {
        "issuer": "http://localhost:8000",
        "audience": "api",
        "resource": "http://localhost:8001",
    }
    config = VerifierConfig.from_env("RESOURCE_", {}, defaults=defaults)
    assert config == VerifierConfig(**defaults)
    assert config.jwks_url == "http://localhost:8000/.well-known/jwks.json"
    with pytest.raises(ConfigError, match=r"^RESOURCE_AUDIENCE is required but not set$"):
        VerifierConfig.from_env("RESOURCE_", {"RESOURCE_ISSUER": "https://i.example"})
    with pytest.raises(ConfigError, match=r"^REPORTS_LEEWAY must be at most 300, got 301$"):
        VerifierConfig.from_env("REPORTS_", {"REPORTS_LEEWAY": "301"}, defaults=defaults)


def test_the_verifier_config_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVTEST_ISSUER", "https://env.example")
    monkeypatch.setenv("ENVTEST_AUDIENCE", "env-api")
    monkeypatch.setenv("ENVTEST_PUBLIC_URL", "https://api.env.example")
    assert VerifierConfig.from_env("ENVTEST_").audience == "env-api"


@dataclass(frozen=True)
class Mounted:
    """A secret that may come from a mounted file."""

    key: str = setting("KEY", "", secret=True, file=True, doc="the signing key")


def test_a_secret_may_come_from_the_file_its_file_variable_names(tmp_path: Path) -> None:
    mounted = tmp_path / "key"
    mounted.write_text(SECRET + "\n", encoding="utf-8")
    assert read(Mounted, {"APP_KEY_FILE": str(mounted)}, "APP_").key == SECRET
    assert read(Mounted, {"APP_KEY": SECRET}, "APP_").key == SECRET
    assert [v.name for v in variables(Mounted, "APP_")] == ["APP_KEY", "APP_KEY_FILE"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"APP_KEY": SECRET, "APP_KEY_FILE": "/x"}, "set APP_KEY or APP_KEY_FILE, not both"),
        ({"APP_KEY_FILE": "/nonexistent/key"}, "APP_KEY_FILE names /nonexistent/key, which cannot be read"),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read(Mounted, environ, "APP_")
    assert str(caught.value).startswith(message)
    assert SECRET not in str(caught.value)


def test_one_variable_may_be_looked_up_outside_a_settings_object() -> None:
    assert lookup({"PORT": " 8080 "}, "PORT", integer(1, 65535)) == 8080
    assert lookup({}, "PORT", integer(1, 65535), 80) == 80
    with pytest.raises(ConfigError, match=r"^PORT is required but not set$"):
        lookup({"PORT": " "}, "PORT", integer())
    with pytest.raises(ConfigError, match=r"^PORT must be at most 65535, got 70000$"):
        lookup({"PORT": "70000"}, "PORT", integer(1, 65535))


def test_a_parser_raising_a_plain_value_error_still_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^RATIO must be a valid value, got 'half'$"):
        lookup({"RATIO": "half"}, "RATIO", float)
