"""Resource settings: one frozen object built once from `RESOURCE_*` environment variables.

The resource holds no secret: everything here is public configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jwt_verifier import VerifierConfig
from shared.settings import Environ, SettingsError, env_bool, env_float, env_int, env_rate_limit, env_str, env_url

VERIFICATION_MODES = ("local", "introspection")
OPENID_SCOPES = ("openid", "profile", "email")


@dataclass(frozen=True)
class ResourceSettings:
    """Everything the resource is configured with; see docs/configuration.md."""

    issuer: str = "http://localhost:8000"
    issuer_internal_url: str = "http://localhost:8000"
    jwks_url: str = "http://localhost:8000/.well-known/jwks.json"
    public_url: str = "http://localhost:8001"
    client_id: str = "resource-web"
    scope: str = "profile admin"
    issuer_timeout: float = 5.0
    audience: str = "jwt-split-api"
    # The API's scopes, published in its RFC 9728 metadata.
    scopes_supported: str = "profile admin"
    # The verifier's knobs: their defaults are the library's, declared once in VerifierConfig.
    leeway: int = VerifierConfig.leeway
    max_token_bytes: int = VerifierConfig.max_token_bytes
    jwks_timeout: float = VerifierConfig.jwks_timeout
    jwks_max_bytes: int = VerifierConfig.jwks_max_bytes
    jwks_default_ttl: int = VerifierConfig.jwks_default_ttl
    jwks_min_ttl: int = VerifierConfig.jwks_min_ttl
    jwks_max_ttl: int = VerifierConfig.jwks_max_ttl
    jwks_cooldown: float = VerifierConfig.jwks_cooldown
    jwks_prefetch: bool = VerifierConfig.jwks_prefetch
    log_level: str = "INFO"
    token_cache_size: int = VerifierConfig.token_cache_size
    # Per client address and worker (in memory): each callback costs a code exchange at the issuer.
    callback_rate_limit: str = "10 per minute"
    verification: str = "local"
    introspection_url: str = "http://localhost:8000/introspect"
    introspection_client_id: str = "resource-api"
    introspection_secret: str = ""
    # RFC 9449: refuse bearer use of any token (DPoP-bound tokens are never bearer tokens).
    require_dpop: bool = VerifierConfig.require_dpop

    @property
    def redirect_uri(self) -> str:
        """Return where the issuer sends the browser back with a code."""
        return f"{self.public_url}/callback"

    @property
    def login_scope(self) -> str:
        """Return the scope the browser login asks for: OpenID Connect's `openid profile email`, then `scope`."""
        asked = [*OPENID_SCOPES, *self.scope.split()]
        return " ".join(dict.fromkeys(asked))

    @property
    def end_session_endpoint(self) -> str:
        """Return the issuer's RP-Initiated Logout endpoint, where the browser is sent to log out."""
        return f"{self.issuer}/logout"

    @property
    def post_logout_redirect_uri(self) -> str:
        """Return where the issuer sends the browser back after logging out (registered at the issuer)."""
        return f"{self.public_url}/logged-out"

    @property
    def verifier(self) -> VerifierConfig:
        """Return the verifier library's configuration: the API is identified by its public URL."""
        return VerifierConfig(
            issuer=self.issuer,
            audience=self.audience,
            resource=self.public_url,
            jwks_url=self.jwks_url,
            scopes_supported=tuple(self.scopes_supported.split()),
            leeway=self.leeway,
            max_token_bytes=self.max_token_bytes,
            token_cache_size=self.token_cache_size,
            jwks_timeout=self.jwks_timeout,
            jwks_max_bytes=self.jwks_max_bytes,
            jwks_default_ttl=self.jwks_default_ttl,
            jwks_min_ttl=self.jwks_min_ttl,
            jwks_max_ttl=self.jwks_max_ttl,
            jwks_cooldown=self.jwks_cooldown,
            jwks_prefetch=self.jwks_prefetch,
            require_dpop=self.require_dpop,
        )

    @property
    def secure_cookies(self) -> bool:
        """Return whether cookies get the Secure flag (the resource is served over HTTPS)."""
        return self.public_url.startswith("https://")

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> ResourceSettings:
        """Build settings from the environment, naming the variable of any bad value."""
        env = os.environ if environ is None else environ
        issuer = env_url(env, "RESOURCE_ISSUER", cls.issuer)
        internal = env_url(env, "RESOURCE_ISSUER_INTERNAL_URL", issuer)
        verification = env_str(env, "RESOURCE_VERIFICATION", cls.verification).lower()
        if verification not in VERIFICATION_MODES:
            raise SettingsError(f"RESOURCE_VERIFICATION must be 'local' or 'introspection', got {verification!r}")
        secret = env.get("RESOURCE_INTROSPECTION_SECRET", "")
        if verification == "introspection" and not secret:
            raise SettingsError("RESOURCE_INTROSPECTION_SECRET is required when RESOURCE_VERIFICATION=introspection")
        return cls(
            issuer=issuer,
            issuer_internal_url=internal,
            jwks_url=env_url(env, "RESOURCE_JWKS_URL", f"{internal}/.well-known/jwks.json"),
            public_url=env_url(env, "RESOURCE_PUBLIC_URL", cls.public_url),
            client_id=env_str(env, "RESOURCE_CLIENT_ID", cls.client_id),
            scope=env_str(env, "RESOURCE_SCOPE", cls.scope),
            issuer_timeout=env_float(env, "RESOURCE_ISSUER_TIMEOUT", cls.issuer_timeout, minimum=0.1),
            audience=env_str(env, "RESOURCE_AUDIENCE", cls.audience),
            scopes_supported=env_str(env, "RESOURCE_SCOPES_SUPPORTED", cls.scopes_supported),
            leeway=env_int(env, "RESOURCE_LEEWAY", cls.leeway, minimum=0, maximum=300),
            max_token_bytes=env_int(env, "RESOURCE_MAX_TOKEN_BYTES", cls.max_token_bytes, minimum=512, maximum=65536),
            jwks_timeout=env_float(env, "RESOURCE_JWKS_TIMEOUT", cls.jwks_timeout, minimum=0.1),
            jwks_max_bytes=env_int(env, "RESOURCE_JWKS_MAX_BYTES", cls.jwks_max_bytes, minimum=1024),
            jwks_default_ttl=env_int(env, "RESOURCE_JWKS_DEFAULT_TTL", cls.jwks_default_ttl, minimum=0),
            jwks_min_ttl=env_int(env, "RESOURCE_JWKS_MIN_TTL", cls.jwks_min_ttl, minimum=0),
            jwks_max_ttl=env_int(env, "RESOURCE_JWKS_MAX_TTL", cls.jwks_max_ttl, minimum=1),
            # Tokens with junk kids cause at most one JWKS fetch a second per worker, however configured.
            jwks_cooldown=env_float(env, "RESOURCE_JWKS_COOLDOWN", cls.jwks_cooldown, minimum=1.0),
            jwks_prefetch=env_bool(env, "RESOURCE_JWKS_PREFETCH", cls.jwks_prefetch),
            log_level=env_str(env, "RESOURCE_LOG_LEVEL", cls.log_level).upper(),
            token_cache_size=env_int(
                env, "RESOURCE_TOKEN_CACHE_SIZE", cls.token_cache_size, minimum=0, maximum=1_000_000
            ),
            callback_rate_limit=env_rate_limit(env, "RESOURCE_CALLBACK_RATE_LIMIT", cls.callback_rate_limit),
            verification=verification,
            require_dpop=env_bool(env, "RESOURCE_REQUIRE_DPOP", cls.require_dpop),
            introspection_url=env_url(env, "RESOURCE_INTROSPECTION_URL", f"{internal}/introspect"),
            introspection_client_id=env_str(env, "RESOURCE_INTROSPECTION_CLIENT_ID", cls.introspection_client_id),
            introspection_secret=secret,
        )
