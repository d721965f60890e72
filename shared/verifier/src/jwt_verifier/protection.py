"""What an integration builds for one app: the JWKS client, the verifier and the protector, from a config.

Both integrations (`jwt_verifier.flask`, `jwt_verifier.fastapi`) build their protection here,
so the wiring of a `VerifierConfig` into a `JwksClient`, a `Verifier` and a
`ResourceProtector` is written once. `Protection.close()` stops the background threads that
wiring started (the JWKS client's and the status lists' refreshers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jwt_verifier.config import VerifierConfig
from jwt_verifier.dpop_scheme import DPoPPolicy
from jwt_verifier.jwks import JwksClient
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.rfc9728 import metadata_url
from jwt_verifier.status import StatusChecked, with_status_lists
from jwt_verifier.verifier import KeySource, TokenVerifier, Verifier

__all__ = ["Protection", "build"]


@dataclass(frozen=True)
class Protection:
    """What `init_app` built for one app; `local` says the verifier is the library's own (never blocking on a loop)."""

    config: VerifierConfig
    jwks: JwksClient
    verifier: TokenVerifier
    protector: ResourceProtector
    metadata_url: str
    local: bool = True

    def close(self) -> None:
        """Stop the background threads of the JWKS client and (a local verifier's) status lists; idempotent.

        A verifier passed to `build` is the caller's: it is not closed here.
        """
        self.jwks.close()
        if self.local and isinstance(self.verifier, StatusChecked):
            self.verifier.close()

    def __enter__(self) -> Protection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def build(
    config: VerifierConfig,
    *,
    cookie: str | None = None,
    verifier: TokenVerifier | None = None,
    keys: Callable[[JwksClient], KeySource] | None = None,
) -> Protection:
    """Build the protection `config` describes; `verifier` replaces local verification, `keys` wraps the JWKS client.

    A local verifier checks token status lists (`jwt_verifier.status`); the protector takes
    DPoP-bound tokens as `config` says (`jwt_verifier.dpop_scheme`).
    """
    jwks = JwksClient(config)
    local = verifier is None
    verifier = verifier or Verifier(
        jwks if keys is None else keys(jwks),
        issuer=config.issuer,
        audience=config.audience,
        leeway=config.leeway,
        max_token_bytes=config.max_token_bytes,
        cache_size=config.token_cache_size,
    )
    if local:  # token status (jwt_verifier.status) is checked on every use of a token
        verifier = with_status_lists(verifier, config, jwks)
    return Protection(
        config=config,
        jwks=jwks,
        verifier=verifier,
        protector=ResourceProtector(
            verifier, cookie=cookie, scopes=frozenset(config.scopes_supported), dpop=DPoPPolicy.from_config(config)
        ),
        metadata_url=metadata_url(config.resource),
        local=local,
    )
