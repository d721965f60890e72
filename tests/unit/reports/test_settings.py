"""Unit tests for ReportsSettings: defaults, the environment, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from jwt_verifier import VerifierConfig
from reports_api import ReportsSettings
from shared.settings import SettingsError


def test_an_empty_environment_gives_the_defaults() -> None:
    assert ReportsSettings.from_env({}) == ReportsSettings()


def test_the_issuer_url_is_also_the_internal_url_unless_set() -> None:
    settings = ReportsSettings.from_env({"REPORTS_ISSUER": "https://login.example/"})
    assert (settings.issuer, settings.issuer_internal_url) == ("https://login.example", "https://login.example")
    inside = ReportsSettings.from_env(
        {"REPORTS_ISSUER": "https://login.example", "REPORTS_ISSUER_INTERNAL_URL": "http://issuer:8000"}
    )
    assert (inside.issuer, inside.issuer_internal_url) == ("https://login.example", "http://issuer:8000")
    assert inside.verifier.jwks_url == "http://issuer:8000/.well-known/jwks.json"


def test_every_setting_is_read_from_its_variable() -> None:
    settings = ReportsSettings.from_env(
        {
            "REPORTS_PUBLIC_URL": "https://reports.example",
            "REPORTS_AUDIENCE": "reports",
            "REPORTS_SCOPES_SUPPORTED": "reports:read reports:write",
            "REPORTS_CLIENT_ID": "reports-svc",
            "REPORTS_DATA_DIR": "/data",
            "REPORTS_PROFILE_API_URL": "http://resource:8001",
            "REPORTS_PROFILE_API_AUDIENCE": "profile",
            "REPORTS_PROFILE_API_SCOPE": "profile admin",
            "REPORTS_TIMEOUT": "2.5",
            "REPORTS_LOG_LEVEL": "debug",
        }
    )
    assert settings == ReportsSettings(
        verifier=VerifierConfig(
            issuer="http://localhost:8000",
            audience="reports",
            resource="https://reports.example",
            scopes_supported=("reports:read", "reports:write"),
        ),
        client_id="reports-svc",
        data_dir=Path("/data"),
        profile_api_url="http://resource:8001",
        profile_api_audience="profile",
        profile_api_scope="profile admin",
        timeout=2.5,
        log_level="DEBUG",
    )
    assert settings.verifier.scopes_supported == ("reports:read", "reports:write")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REPORTS_ISSUER", "login.example"),
        ("REPORTS_ISSUER_INTERNAL_URL", "ftp://issuer"),
        ("REPORTS_PUBLIC_URL", "http://reports.example/?x=1"),
        ("REPORTS_PROFILE_API_URL", "resource:8001"),
        ("REPORTS_TIMEOUT", "soon"),
        ("REPORTS_TIMEOUT", "0"),
        ("REPORTS_TIMEOUT", "nan"),
        ("REPORTS_LEEWAY", "301"),
        ("REPORTS_JWKS_TIMEOUT", "0"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} "):
        ReportsSettings.from_env({name: value})


def test_require_dpop_reaches_the_verifier() -> None:
    assert ReportsSettings.from_env({}).verifier.require_dpop is False
    assert ReportsSettings.from_env({"REPORTS_REQUIRE_DPOP": "true"}).verifier.require_dpop is True


def test_the_verifiers_settings_are_the_librarys_read_with_the_reports_prefix() -> None:
    settings = ReportsSettings.from_env(
        {"REPORTS_LEEWAY": "0", "REPORTS_JWKS_COOLDOWN": "2.5", "REPORTS_TOKEN_CACHE_SIZE": "0"}
    )
    assert (settings.verifier.leeway, settings.verifier.jwks_cooldown) == (0, 2.5)
    assert settings.verifier.token_cache_size == 0
    defaults = ReportsSettings().verifier
    assert (defaults.leeway, defaults.jwks_timeout) == (VerifierConfig.leeway, VerifierConfig.jwks_timeout)
    assert (defaults.audience, defaults.resource) == ("jwt-split-reports", "http://localhost:8002")


def test_an_unsupported_dpop_algorithm_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^REPORTS_DPOP_ALGORITHMS must be some of"):
        ReportsSettings.from_env({"REPORTS_DPOP_ALGORITHMS": "ES256 HS256"})


def test_an_unusable_dpop_replay_path_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^REPORTS_DPOP_REPLAY_PATH must be a file this service can write"):
        ReportsSettings.from_env({"REPORTS_DPOP_REPLAY_PATH": "/nonexistent/dir/replay.db"})
