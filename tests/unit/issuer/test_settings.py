"""Unit tests for issuer.settings: defaults, ISSUER_* variables and errors naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from issuer.db import Database
from issuer.settings import IssuerSettings
from shared.settings import SettingsError


def test_defaults_come_from_an_empty_environment() -> None:
    settings = IssuerSettings.from_env({})
    assert settings == IssuerSettings()
    assert settings.url == "http://localhost:8000"
    assert settings.access_token_ttl == 600
    assert settings.rsa_key_bits == 2048
    assert settings.audience_resource_uris == ()
    assert settings.web_post_logout_redirect_uris == ("http://localhost:8001/logged-out",)


def test_variables_override_the_defaults(tmp_path: Path) -> None:
    settings = IssuerSettings.from_env(
        {
            "ISSUER_URL": "https://auth.example/",
            "ISSUER_DATA_DIR": str(tmp_path),
            "ISSUER_AUDIENCE": "orders-api",
            "ISSUER_AUDIENCE_RESOURCE_URIS": " http://localhost:8002  https://orders.example/api ",
            "ISSUER_ACCESS_TOKEN_TTL": "300",
            "ISSUER_REFRESH_TOKEN_TTL": "3600",
            "ISSUER_JWKS_MAX_AGE": "60",
            "ISSUER_RSA_KEY_BITS": "3072",
            "ISSUER_ARGON2_TIME_COST": "3",
            "ISSUER_ARGON2_MEMORY_KIB": "65536",
            "ISSUER_DEMO_USERS": "alice:wonderland:profile",
            "ISSUER_LOG_LEVEL": "debug",
        }
    )
    assert settings.url == "https://auth.example"
    assert settings.data_dir == tmp_path
    assert settings.audience == "orders-api"
    assert settings.audience_resource_uris == ("http://localhost:8002", "https://orders.example/api")
    assert (settings.access_token_ttl, settings.refresh_token_ttl, settings.jwks_max_age) == (300, 3600, 60)
    assert settings.rsa_key_bits == 3072
    assert (settings.argon2_time_cost, settings.argon2_memory_kib) == (3, 65536)
    assert settings.demo_users == "alice:wonderland:profile"
    assert settings.log_level == "DEBUG"


def test_the_embedded_database_lives_in_the_data_dir(tmp_path: Path) -> None:
    database = IssuerSettings(data_dir=tmp_path).database()
    assert database.url.database == str(tmp_path / "issuer.sqlite3")
    database.dispose()


def test_database_url_names_sqlite_or_postgresql() -> None:
    url = "postgresql+psycopg://jwt:secret@db.internal:5432/issuer"
    kek = {"ISSUER_KEY_ENCRYPTION_KEY": "A" * 43, "ISSUER_SESSION_SECRET": "S" * 48}
    assert IssuerSettings.from_env({"ISSUER_DATABASE_URL": url, **kek}).database_url == url
    with pytest.raises(SettingsError, match="ISSUER_KEY_ENCRYPTION_KEY or ISSUER_KEY_ENCRYPTION_KEY_FILE is required"):
        IssuerSettings.from_env({"ISSUER_DATABASE_URL": url})
    with pytest.raises(SettingsError, match="ISSUER_DATABASE_URL must be a sqlite:// or postgresql:// URL"):
        IssuerSettings.from_env({"ISSUER_DATABASE_URL": "mysql://db/issuer"})
    with pytest.raises(SettingsError, match="ISSUER_DATABASE_URL must be a database URL"):
        IssuerSettings.from_env({"ISSUER_DATABASE_URL": "not a url"})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://jwt:hunter2-secret@db/issuer",  # a driver the issuer does not ship
        "postgresql+pg8000://jwt:hunter2-secret@db/issuer",
        "postgresql://jwt:hunter2-secret@[::1/issuer",  # an unclosed IPv6 bracket
        "postgresql://jwt:hunter2-secret@db:port/issuer",
    ],
)
def test_an_unusable_database_url_stops_start_up_naming_the_variable_and_not_the_password(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^ISSUER_DATABASE_URL must be") as caught:
        IssuerSettings.from_env({"ISSUER_DATABASE_URL": url, "ISSUER_KEY_ENCRYPTION_KEY": "A" * 43})
    assert "hunter2" not in str(caught.value)


def test_refresh_reuse_grace_and_family_lifetime_come_from_the_environment() -> None:
    settings = IssuerSettings.from_env({"ISSUER_REFRESH_REUSE_GRACE": "5", "ISSUER_REFRESH_FAMILY_TTL": "86400"})
    assert (settings.refresh_reuse_grace, settings.refresh_family_ttl) == (5, 86400)
    assert (IssuerSettings().refresh_reuse_grace, IssuerSettings().refresh_family_ttl) == (30, 30 * 86400)
    with pytest.raises(SettingsError, match="ISSUER_REFRESH_REUSE_GRACE"):
        IssuerSettings.from_env({"ISSUER_REFRESH_REUSE_GRACE": "301"})


def test_pruning_runs_hourly_unless_the_interval_is_changed_or_zero() -> None:
    assert IssuerSettings.from_env({}).prune_interval == 3600
    assert IssuerSettings.from_env({"ISSUER_PRUNE_INTERVAL": "600"}).prune_interval == 600
    assert IssuerSettings.from_env({"ISSUER_PRUNE_INTERVAL": "0"}).prune_interval == 0  # off


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = IssuerSettings(session_secret="s3cret-session", key_encryption_key="k3k-value")
    assert "s3cret-session" not in repr(settings)
    assert "k3k-value" not in repr(settings)
    url = "postgresql://jwt:hunter2-db@db/issuer"
    read = IssuerSettings.from_env(
        {"ISSUER_DATABASE_URL": url, "ISSUER_KEY_ENCRYPTION_KEY": "k" * 43, "ISSUER_SESSION_SECRET": "s" * 48}
    )
    assert read.database_url == url
    assert "hunter2-db" not in repr(read)
    assert "alice:wonderland" not in repr(IssuerSettings(demo_users="alice:wonderland:profile"))


def test_password_hasher_uses_the_configured_cost() -> None:
    hasher = IssuerSettings(argon2_time_cost=1, argon2_memory_kib=8192).password_hasher()
    assert isinstance(hasher, PasswordHasher)
    assert "m=8192,t=1,p=1" in hasher.hash("correct horse")


def test_settings_are_frozen() -> None:
    settings = IssuerSettings()
    with pytest.raises(AttributeError):
        settings.url = "http://elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ISSUER_URL", "auth.example", "absolute http"),
        ("ISSUER_ACCESS_TOKEN_TTL", "10", "at least 30"),
        ("ISSUER_ACCESS_TOKEN_TTL", "86400", "at most 3600"),
        ("ISSUER_ACCESS_TOKEN_TTL", "ten minutes", "whole number"),
        ("ISSUER_REFRESH_TOKEN_TTL", "59", "at least 60"),
        ("ISSUER_JWKS_MAX_AGE", "-1", "at least 0"),
        ("ISSUER_RSA_KEY_BITS", "1024", "at least 2048"),
        ("ISSUER_ARGON2_TIME_COST", "0", "at least 1"),
        ("ISSUER_ARGON2_MEMORY_KIB", "1024", "at least 8192"),
        ("ISSUER_KEY_ACTIVATION_DELAY", "-5", "at least 0"),
        ("ISSUER_LOGIN_RATE_LIMIT", "lots", "rate limit"),
        ("ISSUER_WEB_REDIRECT_URIS", "callback", "absolute http"),
        ("ISSUER_WEB_REDIRECT_URIS", "http://localhost:8001/callback http://rs.example/callback", "https off loopback"),
        ("ISSUER_WEB_POST_LOGOUT_REDIRECT_URIS", "/logged-out", "absolute http"),
        ("ISSUER_AUDIENCE_RESOURCE_URIS", "http://localhost:8001 orders-api", "absolute http"),
        ("ISSUER_AUDIENCE_RESOURCE_URIS", "http://localhost:8001#top", "fragment"),
        ("ISSUER_PRUNE_INTERVAL", "-1", "at least 0"),
        ("ISSUER_PRUNE_INTERVAL", "hourly", "whole number"),
    ],
)
def test_bad_value_stops_start_up_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} must .*{message}"):
        IssuerSettings.from_env({name: value})


def test_staged_keys_must_wait_at_least_the_jwks_cache_lifetime() -> None:
    with pytest.raises(SettingsError, match="ISSUER_KEY_ACTIVATION_DELAY must be at least ISSUER_JWKS_MAX_AGE"):
        IssuerSettings.from_env({"ISSUER_JWKS_MAX_AGE": "900", "ISSUER_KEY_ACTIVATION_DELAY": "600"})
    accepted = IssuerSettings.from_env({"ISSUER_JWKS_MAX_AGE": "900", "ISSUER_KEY_ACTIVATION_DELAY": "900"})
    assert accepted.key_activation_delay == accepted.jwks_max_age


def test_retiring_keys_outlive_the_tokens_they_signed(tmp_path: Path) -> None:
    settings = IssuerSettings.from_env({"ISSUER_ACCESS_TOKEN_TTL": "600", "ISSUER_KEY_RETIRE_GRACE": "60"})
    assert settings.key_retire_after == 660
    database = Database.for_data_dir("", tmp_path)
    assert settings.key_store(database, b"k" * 32).policy.retire_after == 660
    database.dispose()


def test_the_session_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "session-secret"
    secret.write_text("x" * 48 + "\n")
    assert IssuerSettings.from_env({"ISSUER_SESSION_SECRET_FILE": str(secret)}).session_secret == "x" * 48


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ISSUER_SESSION_SECRET": "y" * 48, "ISSUER_SESSION_SECRET_FILE": "/x"}, "not both"),
        ({"ISSUER_SESSION_SECRET_FILE": "/nonexistent/secret"}, "ISSUER_SESSION_SECRET_FILE names /nonexistent/secret"),
        ({"ISSUER_SESSION_SECRET": "short"}, "ISSUER_SESSION_SECRET must be at least 32 characters"),
    ],
)
def test_a_bad_session_secret_stops_start_up_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        IssuerSettings.from_env(environ)


def test_postgresql_needs_a_shared_session_secret() -> None:
    """Replicas share no data directory: each would make its own secret, and refuse the others' forms."""
    environ = {"ISSUER_DATABASE_URL": "postgresql://db/issuer", "ISSUER_KEY_ENCRYPTION_KEY": "k" * 43}
    with pytest.raises(SettingsError, match="ISSUER_SESSION_SECRET or ISSUER_SESSION_SECRET_FILE is required"):
        IssuerSettings.from_env(environ)
    assert IssuerSettings.from_env({**environ, "ISSUER_SESSION_SECRET": "s" * 48}).session_secret == "s" * 48


def test_the_web_clients_post_logout_redirect_uris_come_from_their_variable() -> None:
    settings = IssuerSettings.from_env(
        {"ISSUER_WEB_POST_LOGOUT_REDIRECT_URIS": "http://localhost:9001/logged-out https://rs.example/logged-out"}
    )
    assert settings.web_post_logout_redirect_uris == (
        "http://localhost:9001/logged-out",
        "https://rs.example/logged-out",
    )


def test_a_plain_http_web_redirect_uri_off_loopback_needs_the_operators_consent() -> None:
    env = {"ISSUER_WEB_REDIRECT_URIS": "http://rs.example/callback", "ISSUER_ALLOW_INSECURE_REDIRECTS": "true"}
    assert IssuerSettings.from_env(env).web_redirect_uris == ("http://rs.example/callback",)


def test_dpop_nonces_are_off_unless_asked_for() -> None:
    assert IssuerSettings.from_env({}).dpop_nonce is False
    on = IssuerSettings.from_env({"ISSUER_DPOP_NONCE": "true", "ISSUER_DPOP_NONCE_LIFETIME": "60"})
    assert (on.dpop_nonce, on.dpop_nonce_lifetime) == (True, 60)
    for name, value in (("ISSUER_DPOP_NONCE", "maybe"), ("ISSUER_DPOP_NONCE_LIFETIME", "5")):
        with pytest.raises(SettingsError, match=f"^{name} must"):
            IssuerSettings.from_env({name: value})
