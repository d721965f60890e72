"""Read typed settings from environment variables, naming the variable on every error.

Settings are declared once, on their dataclass field, with `jwt_verifier.env.setting`; the
verifier's are the library's `VerifierConfig`, read with the service's prefix
(`verifier_from_env`). The `env_*` functions read one variable outside a settings object (the
command line's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from limits import parse_many

from jwt_verifier import VerifierConfig
from jwt_verifier.env import ConfigError, Invalid, boolean, integer, lookup, number, read_one, setting, text, url

# The library's: one error for a bad setting, whether the library or a service reads it.
SettingsError = ConfigError

Environ = Mapping[str, str]


def env_str(environ: Environ, name: str, default: str | None = None) -> str:
    """Return a non-empty string setting, or the default when the variable is unset."""
    return lookup(environ, name, text, default)


def env_int(
    environ: Environ,
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Return an integer setting within the given bounds."""
    return lookup(environ, name, integer(minimum, maximum), default)


def env_float(environ: Environ, name: str, default: float, *, minimum: float = 0.0) -> float:
    """Return a non-negative number setting (seconds, usually)."""
    return lookup(environ, name, number(minimum), default)


def env_bool(environ: Environ, name: str, default: bool) -> bool:
    """Return a boolean setting written as 1/0, true/false, yes/no or on/off."""
    return lookup(environ, name, boolean, default)


def env_url(environ: Environ, name: str, default: str | None = None) -> str:
    """Return an absolute http(s) URL setting without a trailing slash."""
    return lookup(environ, name, url, default)


def env_rate_limit(environ: Environ, name: str, default: str) -> str:
    """Return a Flask-Limiter rate limit setting such as '20 per minute'."""
    return lookup(environ, name, rate_limit, default)


def rate_limit(raw: str) -> str:
    """Parse a Flask-Limiter rate limit such as '20 per minute' (a `setting` parser)."""
    try:
        parse_many(raw)
    except ValueError:
        raise Invalid("must be a rate limit such as '20 per minute'", raw) from None
    return raw


def issuer_internal_url_setting(doc: str) -> Any:
    """Declare a service's `ISSUER_INTERNAL_URL`: the issuer as the service reaches it, its public URL unless set.

    `verifier_from_env` derives the JWKS URL from it; `doc` is its description in docs/configuration.md.
    """
    return setting(
        "ISSUER_INTERNAL_URL",
        "http://localhost:8000",
        parse=url,
        derive=lambda read: read["issuer"],
        shown="${prefix}ISSUER",
        doc=doc,
    )


def verifier_from_env(settings: type, prefix: str, environ: Environ, defaults: Mapping[str, Any]) -> VerifierConfig:
    """Read a service's `VerifierConfig` with its `prefix` and `defaults` (its issuer, audience, public URL).

    The JWKS is fetched from the issuer as the service reaches it: the `issuer_internal_url`
    that `settings` declares (itself the issuer unless set), unless `<prefix>JWKS_URL` is set.
    """
    issuer = read_one(VerifierConfig, "issuer", environ, prefix, defaults=defaults)
    internal = read_one(settings, "issuer_internal_url", environ, prefix, context={"issuer": issuer})
    jwks_url = f"{internal}/.well-known/jwks.json"
    return VerifierConfig.from_env(prefix, environ, defaults={**defaults, "jwks_url": jwks_url})
