"""Unit tests for jwt_verifier.protection: one Protection, built once for both integrations."""

from __future__ import annotations

from typing import Any

from jwt_verifier import fastapi as fastapi_integration
from jwt_verifier import flask as flask_integration
from jwt_verifier.config import VerifierConfig
from jwt_verifier.protection import Protection, build
from jwt_verifier.status import StatusChecked
from jwt_verifier.verifier import Verifier

CONFIG = VerifierConfig(
    issuer="https://issuer.example",
    audience="orders-api",
    resource="https://orders.example",
    scopes_supported=("orders:read",),
    leeway=3,
    jwks_prefetch=False,
)


class Remote:
    """A verifier of another kind (introspection, say)."""

    def verify(self, token: str) -> dict[str, Any]:
        return {"sub": token}


def test_both_integrations_use_the_one_protection() -> None:
    assert flask_integration.Protection is Protection
    assert fastapi_integration.Protection is Protection


def test_build_wires_the_config_into_a_local_verifier_and_protector() -> None:
    found = build(CONFIG, cookie="access")
    try:
        assert found.local
        # A local verifier checks token status lists around the library's Verifier.
        assert isinstance(found.verifier, StatusChecked)
        inner = found.verifier.inner
        assert isinstance(inner, Verifier)
        assert (inner.issuer, inner.audience, inner.leeway) == (
            "https://issuer.example",
            "orders-api",
            3,
        )
        assert found.protector.cookie == "access"
        assert found.metadata_url == "https://orders.example/.well-known/oauth-protected-resource"
    finally:
        found.close()  # its background threads
        found.jwks.session.close()


def test_a_given_verifier_replaces_local_verification() -> None:
    remote = Remote()
    found = build(CONFIG, verifier=remote)
    try:
        assert not found.local
        assert found.verifier is remote
    finally:
        found.close()  # its background threads
        found.jwks.session.close()
