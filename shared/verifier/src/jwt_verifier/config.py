"""The verifier's configuration: one small frozen object, with every default declared here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jwt_verifier.env import boolean, integer, number, read, setting, some_of, url, words, writable_file

# The verification defaults, declared once: VerifierConfig, the Verifier's own arguments and
# the services' settings all take them from here.
DEFAULT_LEEWAY = 10
DEFAULT_MAX_TOKEN_BYTES = 4096
DEFAULT_CACHE_SIZE = 4096
JWKS_PATH = "/.well-known/jwks.json"
# DPoP (RFC 9449): the proof algorithms accepted, and how old a proof's `iat` may be (seconds).
DEFAULT_DPOP_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
DEFAULT_DPOP_MAX_AGE = 60


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
        "TOKEN_CACHE_SIZE",
        DEFAULT_CACHE_SIZE,
        parse=integer(0, 1_000_000),
        doc="verified tokens remembered (each from its second use)",
    )
    jwks_timeout: float = setting("JWKS_TIMEOUT", 2.0, parse=number(0.1), doc="the whole JWKS fetch's timeout")
    jwks_max_bytes: int = setting("JWKS_MAX_BYTES", 64 * 1024, parse=integer(1024), doc="larger JWKS are refused")
    jwks_default_ttl: int = setting("JWKS_DEFAULT_TTL", 300, parse=integer(0), doc="cache lifetime without max-age")
    jwks_min_ttl: int = setting("JWKS_MIN_TTL", 30, parse=integer(0), doc="least cache lifetime")
    jwks_max_ttl: int = setting("JWKS_MAX_TTL", 86400, parse=integer(1), doc="greatest cache lifetime")
    jwks_cooldown: float = setting(
        # Tokens with junk kids cause at most about one JWKS fetch a second per worker, however configured.
        "JWKS_COOLDOWN",
        10.0,
        parse=number(1.0),
        doc="least seconds between fetches for unknown kids or failures (at least 1)",
    )
    # A prefetching client holding no keys retries a failed fetch after 0.1 s, doubling up to
    # this: keys arrive within about this long of the issuer answering, not a cooldown later.
    jwks_retry_max: float = setting(
        "JWKS_RETRY_MAX", 0.5, parse=number(0.1, 60.0), doc="longest wait between fetches while no key is held"
    )
    jwks_prefetch: bool = setting("JWKS_PREFETCH", True, parse=boolean, doc="load keys as soon as a worker starts")
    # Token Status List (jwt_verifier.status): tokens with a `status` claim are checked against their list.
    status_check: bool = setting("STATUS_CHECK", True, parse=boolean, doc="check tokens' status lists (revocation)")
    status_stale_seconds: float = setting(
        "STATUS_STALE_SECONDS",
        300.0,
        parse=number(0.0),
        doc="a held list stays in use this long past its last refresh or `exp`, then 503",
    )
    status_refresh_seconds: float = setting(
        "STATUS_REFRESH_SECONDS", 1.0, parse=number(1.0), doc="each held list is re-fetched (conditionally) this often"
    )
    status_timeout: float = setting("STATUS_TIMEOUT", 2.0, parse=number(0.1), doc="the whole list fetch's timeout")
    status_max_lists: int = setting("STATUS_MAX_LISTS", 64, parse=integer(1), doc="lists held at most")
    status_max_bytes: int = setting(
        "STATUS_MAX_BYTES", 1024 * 1024, parse=integer(1024), doc="a larger list token is refused"
    )
    status_max_list_bytes: int = setting(
        "STATUS_MAX_LIST_BYTES", 8 * 1024 * 1024, parse=integer(1024), doc="a list larger decompressed is refused"
    )
    status_uri_prefixes: tuple[str, ...] = setting(
        "STATUS_URI_PREFIXES",
        (),
        parse=words,
        shown="${prefix}ISSUER/statuslists/",
        doc="the only URI prefixes lists are fetched from",
    )
    status_index_url: str = setting(
        "STATUS_INDEX_URL",
        "",
        parse=url,
        shown="${prefix}STATUS_BASE_URL/statuslists",
        doc="the issuer's index of its lists",
    )
    status_index_seconds: float = setting(
        "STATUS_INDEX_SECONDS", 60.0, parse=number(1.0), doc="how often the index is read again"
    )
    # `{issuer}/statuslists/X` is fetched from `{status_base_url}/statuslists/X` (inside compose the
    # API reaches the issuer by another address). Empty: the base of `jwks_url` when it ends in
    # `/.well-known/jwks.json`, else the issuer.
    status_base_url: str = setting(
        "STATUS_BASE_URL", "", parse=url, shown="", doc="where the issuer's lists are fetched"
    )
    # DPoP (RFC 9449): DPoP-bound tokens are refused as bearer tokens whatever `require_dpop` says.
    # The replay store is a SQLite file shared by every worker of the API on this host.
    require_dpop: bool = setting("REQUIRE_DPOP", False, parse=boolean, doc="refuse any bearer use of a token")
    dpop_algorithms: tuple[str, ...] = setting(
        "DPOP_ALGORITHMS",
        DEFAULT_DPOP_ALGORITHMS,
        parse=some_of(*DEFAULT_DPOP_ALGORITHMS),
        doc="proof algorithms accepted",
    )
    dpop_max_age: int = setting(
        "DPOP_MAX_AGE", DEFAULT_DPOP_MAX_AGE, parse=integer(1, 600), doc="how old a proof's `iat` may be"
    )
    dpop_replay_path: str = setting(
        "DPOP_REPLAY_PATH",
        "",
        parse=writable_file,
        shown="",
        doc="the proofs' replay store (`:memory:`: one process only)",
    )
    dpop_nonce_secret: str = setting(
        "DPOP_NONCE_SECRET", "", secret=True, doc="shared by the workers: proofs must carry a server nonce"
    )
    dpop_nonce_lifetime: int = setting(
        "DPOP_NONCE_LIFETIME", 300, parse=integer(10, 86400), doc="how long a server nonce is accepted"
    )

    def __post_init__(self) -> None:
        if not self.jwks_url:
            object.__setattr__(self, "jwks_url", f"{self.issuer.rstrip('/')}/.well-known/jwks.json")
        if not self.status_uri_prefixes:
            object.__setattr__(self, "status_uri_prefixes", (f"{self.issuer.rstrip('/')}/statuslists/",))
        if not self.status_base_url:
            base = self.jwks_url.removesuffix(JWKS_PATH) if self.jwks_url.endswith(JWKS_PATH) else self.issuer
            object.__setattr__(self, "status_base_url", base.rstrip("/"))
        if not self.status_index_url:
            object.__setattr__(self, "status_index_url", f"{self.status_base_url.rstrip('/')}/statuslists")

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
