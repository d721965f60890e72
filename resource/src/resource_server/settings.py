"""Resource settings: one frozen object built once from `RESOURCE_*` environment variables.

The verifier's settings are the library's `VerifierConfig` (`RESOURCE_ISSUER`,
`RESOURCE_AUDIENCE`, `RESOURCE_PUBLIC_URL`, `RESOURCE_LEEWAY`, `RESOURCE_JWKS_*`, ...), read
with the `RESOURCE_` prefix; the rest is declared here, once. The resource holds no secret
but the introspection one, used only in introspection mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from jwt_verifier import VerifierConfig
from jwt_verifier.env import Variable, choice, number, read, setting, upper, url, variables
from shared.settings import Environ, SettingsError, issuer_internal_url_setting, rate_limit, verifier_from_env

PREFIX = "RESOURCE_"
VERIFICATION_MODES = ("local", "introspection")
OPENID_SCOPES = ("openid", "profile", "email")

# The resource's own defaults for the verifier's settings; the others are the library's.
VERIFIER_DEFAULTS: dict[str, Any] = {
    "issuer": "http://localhost:8000",
    "audience": "jwt-split-api",
    "resource": "http://localhost:8001",
    # The API's scopes, published in its RFC 9728 metadata.
    "scopes_supported": ("profile", "admin"),
}


def _default_verifier() -> VerifierConfig:
    return VerifierConfig(**VERIFIER_DEFAULTS)


@dataclass(frozen=True)
class ResourceSettings:
    """Everything the resource is configured with; see docs/configuration.md."""

    verifier: VerifierConfig = field(default_factory=_default_verifier)
    issuer_internal_url: str = issuer_internal_url_setting(
        "the issuer as the resource reaches it: JWKS, code exchange, refresh, revocation"
    )
    client_id: str = setting("CLIENT_ID", "resource-web", doc="the browser login's client id")
    scope: str = setting("SCOPE", "profile admin", doc="the scope the login asks for beside openid profile email")
    issuer_timeout: float = setting("ISSUER_TIMEOUT", 5.0, parse=number(0.1), doc="back-channel calls' timeout")
    log_level: str = setting("LOG_LEVEL", "INFO", parse=upper, doc="log level")
    # Per client address and worker (in memory): each callback costs a code exchange at the issuer.
    callback_rate_limit: str = setting(
        "CALLBACK_RATE_LIMIT", "10 per minute", parse=rate_limit, doc="/callback requests per client address"
    )
    verification: str = setting(
        "VERIFICATION", "local", parse=choice(*VERIFICATION_MODES), doc="local, or introspection at the issuer"
    )
    introspection_url: str = setting(
        "INTROSPECTION_URL",
        "http://localhost:8000/introspect",
        parse=url,
        derive=lambda read: f"{read['issuer_internal_url']}/introspect",
        shown="$RESOURCE_ISSUER_INTERNAL_URL/introspect",
        doc="the issuer's introspection endpoint",
    )
    introspection_client_id: str = setting(
        "INTROSPECTION_CLIENT_ID", "resource-api", doc="the resource's client id for introspection"
    )
    introspection_secret: str = setting("INTROSPECTION_SECRET", "", secret=True, doc="its secret")

    def __post_init__(self) -> None:
        if self.verification == "introspection" and not self.introspection_secret:
            raise SettingsError("RESOURCE_INTROSPECTION_SECRET is required when RESOURCE_VERIFICATION=introspection")

    @property
    def issuer(self) -> str:
        """Return the issuer's public URL (the verifier's expected `iss`): where the browser is sent."""
        return self.verifier.issuer

    @property
    def public_url(self) -> str:
        """Return the resource's public URL (the verifier's RFC 9728 resource identifier)."""
        return self.verifier.resource

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
    def secure_cookies(self) -> bool:
        """Return whether cookies get the Secure flag (the resource is served over HTTPS)."""
        return self.public_url.startswith("https://")

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> ResourceSettings:
        """Build settings from the environment, naming the variable of any bad value."""
        env = os.environ if environ is None else environ
        verifier = verifier_from_env(cls, PREFIX, env, VERIFIER_DEFAULTS)
        return read(cls, env, PREFIX, given={"verifier": verifier}, context={"issuer": verifier.issuer})

    @classmethod
    def variables(cls) -> list[Variable]:
        """List every variable the resource reads, with its default as docs/configuration.md writes it."""
        shown = {"jwks_url": "$RESOURCE_ISSUER_INTERNAL_URL/.well-known/jwks.json"}
        return [
            *variables(VerifierConfig, PREFIX, defaults=VERIFIER_DEFAULTS, shown=shown),
            *variables(cls, PREFIX),
        ]
