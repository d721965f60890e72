"""Unit tests for resource_server.settings: defaults, RESOURCE_* variables and errors naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from jwt_verifier.config import DEFAULT_CACHE_SIZE, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES, VerifierConfig
from resource_server.settings import ResourceSettings
from shared.settings import SettingsError


def test_defaults_come_from_an_empty_environment() -> None:
    settings = ResourceSettings.from_env({})
    assert settings == ResourceSettings()
    assert settings.issuer == "http://localhost:8000"
    assert settings.verifier.jwks_url == "http://localhost:8000/.well-known/jwks.json"
    assert settings.verifier.audience == "jwt-split-api"


def test_jwks_url_follows_the_issuer_unless_set() -> None:
    derived = ResourceSettings.from_env({"RESOURCE_ISSUER": "https://auth.example/"})
    assert derived.issuer == "https://auth.example"
    assert derived.verifier.jwks_url == "https://auth.example/.well-known/jwks.json"
    explicit = ResourceSettings.from_env(
        {"RESOURCE_ISSUER": "https://auth.example", "RESOURCE_JWKS_URL": "http://issuer:8000/.well-known/jwks.json"}
    )
    assert explicit.issuer == "https://auth.example"
    assert explicit.verifier.jwks_url == "http://issuer:8000/.well-known/jwks.json"
    inside = ResourceSettings.from_env(
        {"RESOURCE_ISSUER": "https://auth.example", "RESOURCE_ISSUER_INTERNAL_URL": "http://issuer:8000"}
    )
    assert inside.verifier.jwks_url == "http://issuer:8000/.well-known/jwks.json"


def test_variables_override_the_defaults() -> None:
    settings = ResourceSettings.from_env(
        {
            "RESOURCE_AUDIENCE": "orders-api",
            "RESOURCE_LEEWAY": "0",
            "RESOURCE_MAX_TOKEN_BYTES": "8192",
            "RESOURCE_JWKS_TIMEOUT": "0.5",
            "RESOURCE_JWKS_MAX_BYTES": "2048",
            "RESOURCE_JWKS_DEFAULT_TTL": "120",
            "RESOURCE_JWKS_MIN_TTL": "5",
            "RESOURCE_JWKS_MAX_TTL": "600",
            "RESOURCE_JWKS_COOLDOWN": "2.5",
            "RESOURCE_LOG_LEVEL": "warning",
        }
    )
    config = settings.verifier
    assert config.audience == "orders-api"
    assert (config.leeway, config.max_token_bytes) == (0, 8192)
    assert (config.jwks_timeout, config.jwks_max_bytes) == (0.5, 2048)
    assert (config.jwks_default_ttl, config.jwks_min_ttl, config.jwks_max_ttl) == (120, 5, 600)
    assert config.jwks_cooldown == 2.5
    assert settings.log_level == "WARNING"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RESOURCE_ISSUER", "localhost:8000", "absolute http"),
        ("RESOURCE_JWKS_URL", "file:///etc/jwks.json", "absolute http"),
        ("RESOURCE_LEEWAY", "-1", "at least 0"),
        ("RESOURCE_LEEWAY", "301", "at most 300"),
        ("RESOURCE_MAX_TOKEN_BYTES", "100", "at least 512"),
        ("RESOURCE_JWKS_TIMEOUT", "0", "at least 0.1"),
        ("RESOURCE_JWKS_TIMEOUT", "nan", "at least 0.1"),
        ("RESOURCE_JWKS_MAX_BYTES", "10", "at least 1024"),
        ("RESOURCE_JWKS_MAX_TTL", "0", "at least 1"),
        ("RESOURCE_JWKS_COOLDOWN", "-5", "at least 1"),
        ("RESOURCE_JWKS_COOLDOWN", "0.5", "at least 1"),  # junk kids: at most one fetch a second
        ("RESOURCE_JWKS_COOLDOWN", "often", "a number"),
        ("RESOURCE_CALLBACK_RATE_LIMIT", "many", "a rate limit"),
    ],
)
def test_bad_value_stops_start_up_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} must .*{message}"):
        ResourceSettings.from_env({name: value})


# -- verified-token cache and introspection -----------------------------------------------


def test_token_cache_size_defaults_and_can_be_turned_off() -> None:
    assert ResourceSettings.from_env({}).verifier.token_cache_size == 4096
    assert ResourceSettings.from_env({"RESOURCE_TOKEN_CACHE_SIZE": "0"}).verifier.token_cache_size == 0
    with pytest.raises(SettingsError, match="RESOURCE_TOKEN_CACHE_SIZE"):
        ResourceSettings.from_env({"RESOURCE_TOKEN_CACHE_SIZE": "-1"})


def test_verification_is_local_by_default() -> None:
    settings = ResourceSettings.from_env({"RESOURCE_ISSUER_INTERNAL_URL": "http://issuer:8000"})
    assert settings.verification == "local"
    assert settings.introspection_url == "http://issuer:8000/introspect"
    assert settings.introspection_secret == ""


def test_introspection_needs_a_secret_named_in_the_error() -> None:
    with pytest.raises(SettingsError, match="RESOURCE_INTROSPECTION_SECRET"):
        ResourceSettings.from_env({"RESOURCE_VERIFICATION": "introspection"})
    settings = ResourceSettings.from_env(
        {"RESOURCE_VERIFICATION": "Introspection", "RESOURCE_INTROSPECTION_SECRET": "s3cret"}
    )
    assert (settings.verification, settings.introspection_secret) == ("introspection", "s3cret")


def test_unknown_verification_mode_is_refused() -> None:
    with pytest.raises(SettingsError, match="RESOURCE_VERIFICATION"):
        ResourceSettings.from_env({"RESOURCE_VERIFICATION": "trust-me"})


def test_callback_rate_limit_is_a_setting() -> None:
    assert ResourceSettings.from_env({}).callback_rate_limit == ResourceSettings.callback_rate_limit
    limited = ResourceSettings.from_env({"RESOURCE_CALLBACK_RATE_LIMIT": "3 per minute"})
    assert limited.callback_rate_limit == "3 per minute"


def test_verification_defaults_are_the_verifiers_own() -> None:
    settings = ResourceSettings().verifier
    assert (settings.leeway, settings.max_token_bytes, settings.token_cache_size) == (
        DEFAULT_LEEWAY,
        DEFAULT_MAX_TOKEN_BYTES,
        DEFAULT_CACHE_SIZE,
    )


def test_the_verifier_config_is_built_from_the_settings() -> None:
    settings = ResourceSettings.from_env(
        {
            "RESOURCE_ISSUER": "https://issuer.example",
            "RESOURCE_AUDIENCE": "orders",
            "RESOURCE_PUBLIC_URL": "https://api.example",
            "RESOURCE_SCOPES_SUPPORTED": "orders:read  orders:write",
            "RESOURCE_JWKS_COOLDOWN": "3",
        }
    )
    config = settings.verifier
    assert (config.issuer, config.audience, config.resource) == (
        "https://issuer.example",
        "orders",
        "https://api.example",
    )
    assert config.jwks_url == "https://issuer.example/.well-known/jwks.json"
    assert config.scopes_supported == ("orders:read", "orders:write")
    assert config.jwks_cooldown == 3.0


def test_the_jwks_defaults_are_the_libraries_own() -> None:
    config = ResourceSettings().verifier
    for name in ("jwks_timeout", "jwks_max_bytes", "jwks_default_ttl", "jwks_min_ttl", "jwks_max_ttl", "jwks_cooldown"):
        assert getattr(config, name) == getattr(VerifierConfig, name)
    assert config.jwks_prefetch is VerifierConfig.jwks_prefetch


@pytest.mark.parametrize(
    ("scope", "asked"),
    [
        ("profile admin", "openid profile email admin"),
        ("", "openid profile email"),
        ("email openid", "openid profile email"),
    ],
    ids=["default", "empty", "already-there"],
)
def test_the_login_asks_openid_profile_email_then_the_scope_once_each(scope: str, asked: str) -> None:
    assert ResourceSettings(scope=scope).login_scope == asked


def test_logout_goes_to_the_issuers_end_session_endpoint_and_back_to_the_public_url() -> None:
    settings = ResourceSettings.from_env(
        {"RESOURCE_ISSUER": "https://issuer.example", "RESOURCE_PUBLIC_URL": "https://rs.example"}
    )
    assert settings.end_session_endpoint == "https://issuer.example/logout"
    assert settings.post_logout_redirect_uri == "https://rs.example/logged-out"


def test_require_dpop_reaches_the_verifier() -> None:
    assert ResourceSettings.from_env({}).verifier.require_dpop is False
    settings = ResourceSettings.from_env({"RESOURCE_REQUIRE_DPOP": "true"})
    assert settings.verifier.require_dpop is True


@pytest.mark.parametrize("value", ["ES256 HS256", "ES256,HS256", "none", "es256"])
def test_an_unsupported_dpop_algorithm_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^RESOURCE_DPOP_ALGORITHMS must be some of ES256 RS256 PS256 EdDSA"):
        ResourceSettings.from_env({"RESOURCE_DPOP_ALGORITHMS": value})
    settings = ResourceSettings.from_env({"RESOURCE_DPOP_ALGORITHMS": " EdDSA  ES256 "})
    assert settings.verifier.dpop_algorithms == ("EdDSA", "ES256")


def test_an_unusable_dpop_replay_path_is_refused_naming_the_variable(tmp_path: Path) -> None:
    # Not at the first DPoP request (a 503 each time): at start, naming the variable.
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for path in ["/nonexistent/dir/replay.db", str(tmp_path), str(a_file / "replay.db")]:
        with pytest.raises(SettingsError, match=r"^RESOURCE_DPOP_REPLAY_PATH must be a file this service can write"):
            ResourceSettings.from_env({"RESOURCE_DPOP_REPLAY_PATH": path})
    for path in [str(tmp_path / "replay.db"), ":memory:"]:
        assert ResourceSettings.from_env({"RESOURCE_DPOP_REPLAY_PATH": path}).verifier.dpop_replay_path == path
    assert not (tmp_path / "replay.db").exists()  # checked, not created
