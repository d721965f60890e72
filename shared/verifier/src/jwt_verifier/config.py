"""The verifier's configuration: one small frozen object, with every default declared here."""

from __future__ import annotations

from dataclasses import dataclass, field

# The verification defaults, declared once: VerifierConfig, the Verifier's own arguments and
# the services' settings all take them from here.
DEFAULT_LEEWAY = 10
DEFAULT_MAX_TOKEN_BYTES = 4096
DEFAULT_CACHE_SIZE = 4096
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

    issuer: str
    audience: str
    resource: str
    jwks_url: str = ""
    scopes_supported: tuple[str, ...] = ()
    leeway: int = DEFAULT_LEEWAY
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    token_cache_size: int = DEFAULT_CACHE_SIZE
    jwks_timeout: float = 2.0
    jwks_max_bytes: int = 64 * 1024
    jwks_default_ttl: int = 300
    jwks_min_ttl: int = 30
    jwks_max_ttl: int = 86400
    jwks_cooldown: float = 10.0
    # A prefetching client holding no keys retries a failed fetch after 0.1 s, doubling up to
    # this: keys arrive within about this long of the issuer answering, not a cooldown later.
    jwks_retry_max: float = 0.5
    jwks_prefetch: bool = True
    # DPoP (RFC 9449): `require_dpop` refuses any bearer use of a token (DPoP-bound tokens are
    # refused as bearer tokens whatever it says). The replay store is a SQLite file shared by
    # every worker of the API on this host: `dpop_replay_path` ("" = `replay.default_replay_path`,
    # ":memory:" = one process only). A `dpop_nonce_secret`, shared by the workers, makes proofs
    # carry a server nonce (section 9) valid for `dpop_nonce_lifetime` seconds.
    require_dpop: bool = False
    dpop_algorithms: tuple[str, ...] = DEFAULT_DPOP_ALGORITHMS
    dpop_max_age: int = DEFAULT_DPOP_MAX_AGE
    dpop_replay_path: str = ""
    dpop_nonce_secret: str = field(default="", repr=False)
    dpop_nonce_lifetime: int = 300

    def __post_init__(self) -> None:
        if not self.jwks_url:
            object.__setattr__(self, "jwks_url", f"{self.issuer.rstrip('/')}/.well-known/jwks.json")
