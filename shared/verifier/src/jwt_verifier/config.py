"""The verifier's configuration: one small frozen object, with every default declared here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jwt_verifier.env import boolean, integer, number, read, setting, url, words

# The verification defaults, declared once: VerifierConfig, the Verifier's own arguments and
# the services' settings all take them from here.
DEFAULT_LEEWAY = 10
DEFAULT_MAX_TOKEN_BYTES = 4096
DEFAULT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class VerifierConfig:
    """Who issues the tokens an API accepts, who the API is, and the JWKS and verification knobs.

    `issuer` and `audience` must equal the tokens' `iss` and `aud`. `resource` is the API's
    RFC 9728 resource identifier: the https URL clients call it by (its public URL), which
    its metadata names and from which the metadata's own URL is derived. `jwks_url` defaults
    to the issuer's `/.well-known/jwks.json`.
    """

    issuer: str = setting("ISSUER", parse=url, doc="the expected `iss`")
    audience: str = setting("AUDIENCE", doc="the expected `aud`")
    resource: str = setting("PUBLIC_URL", parse=url, doc="the API's public URL: its RFC 9728 resource identifier")
    jwks_url: str = setting(
        "JWKS_URL", "", parse=url, shown="$ISSUER/.well-known/jwks.json", doc="where the issuer's keys are fetched"
    )
    scopes_supported: tuple[str, ...] = setting(
        "SCOPES_SUPPORTED", (), parse=words, doc="the scopes its RFC 9728 metadata lists"
    )
    leeway: int = setting(
        "LEEWAY", DEFAULT_LEEWAY, parse=integer(0, 300), doc="clock skew allowed on `exp`/`iat`/`nbf`"
    )
    max_token_bytes: int = setting(
        "MAX_TOKEN_BYTES", DEFAULT_MAX_TOKEN_BYTES, parse=integer(512, 65536), doc="larger tokens are refused unparsed"
    )
    token_cache_size: int = setting(
        "TOKEN_CACHE_SIZE", DEFAULT_CACHE_SIZE, parse=integer(0, 1_000_000), doc="verified tokens remembered"
    )
    jwks_timeout: float = setting("JWKS_TIMEOUT", 2.0, parse=number(0.1), doc="the whole JWKS fetch's timeout")
    jwks_max_bytes: int = setting("JWKS_MAX_BYTES", 64 * 1024, parse=integer(1024), doc="larger JWKS are refused")
    jwks_default_ttl: int = setting("JWKS_DEFAULT_TTL", 300, parse=integer(0), doc="cache lifetime without max-age")
    jwks_min_ttl: int = setting("JWKS_MIN_TTL", 30, parse=integer(0), doc="least cache lifetime")
    jwks_max_ttl: int = setting("JWKS_MAX_TTL", 86400, parse=integer(1), doc="greatest cache lifetime")
    jwks_cooldown: float = setting(
        "JWKS_COOLDOWN", 10.0, parse=number(0.0), doc="least seconds between fetches for unknown kids or failures"
    )
    # A prefetching client holding no keys retries a failed fetch after 0.1 s, doubling up to
    # this: keys arrive within about this long of the issuer answering, not a cooldown later.
    jwks_retry_max: float = setting(
        "JWKS_RETRY_MAX", 0.5, parse=number(0.1, 60.0), doc="longest wait between fetches while no key is held"
    )
    jwks_prefetch: bool = setting("JWKS_PREFETCH", True, parse=boolean, doc="load keys as soon as a worker starts")

    def __post_init__(self) -> None:
        if not self.jwks_url:
            object.__setattr__(self, "jwks_url", f"{self.issuer.rstrip('/')}/.well-known/jwks.json")

    @classmethod
    def from_env(
        cls,
        prefix: str = "RESOURCE_",
        environ: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> VerifierConfig:
        """Read every field from `prefix` variables (`RESOURCE_ISSUER`, `RESOURCE_LEEWAY`, ...; see `jwt_verifier.env`).

        `defaults` replaces the library's defaults, and gives those it has none of (the issuer,
        audience and public URL an application knows); a bad value raises `ConfigError`.
        """
        return read(cls, os.environ if environ is None else environ, prefix, defaults=defaults)
