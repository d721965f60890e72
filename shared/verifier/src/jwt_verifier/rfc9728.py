"""OAuth 2.0 Protected Resource Metadata (RFC 9728): what a client needs to know to call an API.

Section 3: the metadata of the resource identified by `https://api.example/path` is served at
`https://api.example/.well-known/oauth-protected-resource/path` (the well-known segment goes
between the host and the path), and its `resource` member must be identical to that
identifier (section 3.3), so a client can check it was not sent elsewhere. Section 5.1: every
`WWW-Authenticate` challenge names the metadata URL in `resource_metadata`.
"""

from __future__ import annotations

from typing import TypedDict
from urllib.parse import urlsplit

from jwt_verifier.config import VerifierConfig

WELL_KNOWN = "/.well-known/oauth-protected-resource"


class ProtectedResourceMetadata(TypedDict):
    """The members of section 2 this library publishes."""

    resource: str
    authorization_servers: list[str]
    scopes_supported: list[str]
    bearer_methods_supported: list[str]
    dpop_signing_alg_values_supported: list[str]
    dpop_bound_access_tokens_required: bool


def metadata_path(resource: str) -> str:
    """Return the path the metadata of `resource` is served at (section 3.1)."""
    path = urlsplit(resource).path.rstrip("/")
    return WELL_KNOWN + path


def metadata_url(resource: str) -> str:
    """Return the URL of the metadata of `resource` (section 3.1)."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{metadata_path(resource)}"


def metadata(config: VerifierConfig) -> ProtectedResourceMetadata:
    """Return the API's metadata document (section 2).

    Only the Authorization header is a bearer method here: a browser cookie some APIs also
    read is not one of RFC 6750's methods (header, form body, query), so it is not listed.
    The DPoP members (RFC 9728 section 2, RFC 9449 section 7) name the proof algorithms
    accepted and whether bearer use of a token is refused.
    """
    return {
        "resource": config.resource,
        "authorization_servers": [config.issuer],
        "scopes_supported": list(config.scopes_supported),
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(config.dpop_algorithms),
        "dpop_bound_access_tokens_required": config.require_dpop,
    }
