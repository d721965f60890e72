"""Read typed settings from environment variables, naming the variable on every error.

Settings are declared once, on their dataclass field, with `jwt_verifier.env.setting`; the
verifier's are the library's `VerifierConfig`, read with the service's prefix
(`verifier_from_env`). The `env_*` functions read one variable outside a settings object (the
command line's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from limits import parse_many

from jwt_verifier import VerifierConfig
from jwt_verifier.env import ConfigError, Invalid, read_one

# The library's: one error for a bad setting, whether the library or a service reads it.
SettingsError = ConfigError

Environ = Mapping[str, str]
Number = TypeVar("Number", int, float)


def env_str(environ: Environ, name: str, default: str | None = None) -> str:
    """Return a non-empty string setting, or the default when the variable is unset."""
    value = environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise SettingsError(f"{name} is required but not set")
    return default


def env_int(
    environ: Environ,
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Return an integer setting within the given bounds."""
    value = _parsed(environ, name, default, int, "a whole number")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {value}")
    return value


def env_float(environ: Environ, name: str, default: float, *, minimum: float = 0.0) -> float:
    """Return a non-negative number setting (seconds, usually)."""
    value = _parsed(environ, name, default, float, "a number")
    if not value >= minimum:  # also rejects NaN
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _parsed(environ: Environ, name: str, default: Number, parse: Callable[[str], Number], what: str) -> Number:
    """Return the setting parsed, or the default when unset; a value that does not parse names `what` it must be."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None


def env_bool(environ: Environ, name: str, default: bool) -> bool:
    """Return a boolean setting written as 1/0, true/false, yes/no or on/off."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def env_url(environ: Environ, name: str, default: str | None = None) -> str:
    """Return an absolute http(s) URL setting without a trailing slash."""
    value = env_str(environ, name, default)
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SettingsError(f"{name} must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise SettingsError(f"{name} must not have a query or fragment, got {value!r}")
    return value.rstrip("/")


def env_rate_limit(environ: Environ, name: str, default: str) -> str:
    """Return a Flask-Limiter rate limit setting such as '20 per minute'."""
    value = env_str(environ, name, default)
    try:
        parse_many(value)
    except ValueError:
        raise SettingsError(f"{name} must be a rate limit such as '20 per minute', got {value!r}") from None
    return value


def rate_limit(raw: str) -> str:
    """Parse a Flask-Limiter rate limit such as '20 per minute' (a `setting` parser)."""
    try:
        parse_many(raw)
    except ValueError:
        raise Invalid("must be a rate limit such as '20 per minute'", raw) from None
    return raw


def verifier_from_env(settings: type, prefix: str, environ: Environ, defaults: Mapping[str, Any]) -> VerifierConfig:
    """Read a service's `VerifierConfig` with its `prefix` and `defaults` (its issuer, audience, public URL).

    The JWKS is fetched from the issuer as the service reaches it: the `issuer_internal_url`
    that `settings` declares (itself the issuer unless set), unless `<prefix>JWKS_URL` is set.
    """
    issuer = read_one(VerifierConfig, "issuer", environ, prefix, defaults=defaults)
    internal = read_one(settings, "issuer_internal_url", environ, prefix, context={"issuer": issuer})
    jwks_url = f"{internal}/.well-known/jwks.json"
    return VerifierConfig.from_env(prefix, environ, defaults={**defaults, "jwks_url": jwks_url})
