"""Unit tests for jwt_verifier.rfc9728: where the metadata lives and what it says."""

from __future__ import annotations

import pytest

from jwt_verifier.config import VerifierConfig
from jwt_verifier.rfc9728 import metadata, metadata_path, metadata_url


@pytest.mark.parametrize(
    ("resource", "path", "url"),
    [
        ("https://api.example", "/.well-known/oauth-protected-resource", None),
        ("https://api.example/", "/.well-known/oauth-protected-resource", None),
        ("http://localhost:8001", "/.well-known/oauth-protected-resource", None),
        (
            "https://api.example/orders/v1",
            "/.well-known/oauth-protected-resource/orders/v1",
            "https://api.example/.well-known/oauth-protected-resource/orders/v1",
        ),
    ],
)
def test_the_well_known_segment_goes_between_host_and_path(resource: str, path: str, url: str | None) -> None:
    assert metadata_path(resource) == path
    origin = resource.split("/", 3)
    assert metadata_url(resource) == (url or f"{origin[0]}//{origin[2]}{path}")


def test_the_metadata_names_the_resource_its_issuer_scopes_and_the_header_only() -> None:
    config = VerifierConfig(
        issuer="https://issuer.example", audience="orders", resource="https://api.example", scopes_supported=("a", "b")
    )
    assert metadata(config) == {
        "resource": "https://api.example",
        "authorization_servers": ["https://issuer.example"],
        "scopes_supported": ["a", "b"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "dpop_bound_access_tokens_required": False,
    }
