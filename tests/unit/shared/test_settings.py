"""Unit tests for shared.settings: typed environment variables whose errors name the variable."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, env_bool, env_float, env_int, env_rate_limit, env_str, env_url


def test_env_str_returns_the_trimmed_value() -> None:
    assert env_str({"NAME": "  value "}, "NAME") == "value"


def test_env_str_uses_default_when_unset_or_blank() -> None:
    assert env_str({}, "NAME", "fallback") == "fallback"
    assert env_str({"NAME": "   "}, "NAME", "fallback") == "fallback"


@pytest.mark.parametrize("environ", [{}, {"SECRET_THING": ""}, {"SECRET_THING": "  "}])
def test_env_str_without_default_names_the_missing_variable(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="SECRET_THING is required"):
        env_str(environ, "SECRET_THING")


def test_env_int_parses_and_defaults() -> None:
    assert env_int({"N": " 42 "}, "N", 7) == 42
    assert env_int({}, "N", 7) == 7
    assert env_int({"N": ""}, "N", 7) == 7


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "0x10"])
def test_env_int_refuses_non_integers_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"MY_TTL must be a whole number, got"):
        env_int({"MY_TTL": raw}, "MY_TTL", 1)


def test_env_int_enforces_bounds_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="MY_TTL must be at least 30, got 29"):
        env_int({"MY_TTL": "29"}, "MY_TTL", 60, minimum=30)
    with pytest.raises(SettingsError, match="MY_TTL must be at most 3600, got 3601"):
        env_int({"MY_TTL": "3601"}, "MY_TTL", 60, maximum=3600)
    assert env_int({"MY_TTL": "30"}, "MY_TTL", 60, minimum=30, maximum=30) == 30


def test_env_float_parses_and_defaults() -> None:
    assert env_float({"T": "0.25"}, "T", 2.0) == 0.25
    assert env_float({}, "T", 2.0) == 2.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", "MY_TIMEOUT must be a number"),
        ("-1", "MY_TIMEOUT must be at least 0.1"),
        ("0.05", "MY_TIMEOUT must be at least 0.1"),
        ("nan", "MY_TIMEOUT must be at least 0.1"),
    ],
)
def test_env_float_refuses_bad_values_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        env_float({"MY_TIMEOUT": raw}, "MY_TIMEOUT", 2.0, minimum=0.1)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), ("yes", True), ("On", True)])
def test_env_bool_accepts_true_spellings(raw: str, expected: bool) -> None:
    assert env_bool({"FLAG": raw}, "FLAG", not expected) is expected


@pytest.mark.parametrize("raw", ["0", "false", "No", "off"])
def test_env_bool_accepts_false_spellings(raw: str) -> None:
    assert env_bool({"FLAG": raw}, "FLAG", True) is False


def test_env_bool_defaults_and_refuses_other_words() -> None:
    assert env_bool({}, "FLAG", True) is True
    with pytest.raises(SettingsError, match="MY_FLAG must be true or false, got 'maybe'"):
        env_bool({"MY_FLAG": "maybe"}, "MY_FLAG", False)


def test_env_url_strips_trailing_slash() -> None:
    assert env_url({"U": "https://issuer.example/"}, "U") == "https://issuer.example"
    assert env_url({"U": "http://127.0.0.1:8000/base/"}, "U") == "http://127.0.0.1:8000/base"


def test_env_url_uses_default_and_requires_a_value_without_one() -> None:
    assert env_url({}, "U", "http://localhost:8000") == "http://localhost:8000"
    with pytest.raises(SettingsError, match="ISSUER_X_URL is required"):
        env_url({}, "ISSUER_X_URL")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("issuer.example", "absolute http"),
        ("/relative/path", "absolute http"),
        ("ftp://issuer.example", "absolute http"),
        ("http://", "absolute http"),
        ("https://issuer.example/?a=1", "query or fragment"),
        ("https://issuer.example/#top", "query or fragment"),
    ],
)
def test_env_url_refuses_bad_urls_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=rf"THE_URL must .*{message}"):
        env_url({"THE_URL": raw}, "THE_URL")


def test_env_rate_limit_accepts_flask_limiter_notation_and_defaults() -> None:
    assert env_rate_limit({"LIMIT": "5/second; 100 per hour"}, "LIMIT", "1 per minute") == "5/second; 100 per hour"
    assert env_rate_limit({}, "LIMIT", "1 per minute") == "1 per minute"


def test_env_rate_limit_refuses_other_text_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^LIMIT must be a rate limit"):
        env_rate_limit({"LIMIT": "lots"}, "LIMIT", "1 per minute")
