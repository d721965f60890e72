"""Unit tests for jwt_verifier.config: the one place the verifier's defaults live."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from jwt_verifier.config import VerifierConfig
from jwt_verifier.verifier import Verifier


def test_the_jwks_url_defaults_to_the_issuers_well_known_jwks() -> None:
    config = VerifierConfig(issuer="https://issuer.example/", audience="api", resource="https://api.example")
    assert config.jwks_url == "https://issuer.example/.well-known/jwks.json"


def test_a_given_jwks_url_is_kept() -> None:
    config = VerifierConfig(
        issuer="https://i.example", audience="api", resource="https://a.example", jwks_url="http://x/j"
    )
    assert config.jwks_url == "http://x/j"


def test_the_config_is_frozen() -> None:
    config = VerifierConfig(issuer="https://i.example", audience="api", resource="https://a.example")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.audience = "other"  # type: ignore[misc]


def test_the_verifiers_own_defaults_are_the_configs() -> None:
    parameters = inspect.signature(Verifier).parameters
    assert parameters["leeway"].default == VerifierConfig.leeway
    assert parameters["max_token_bytes"].default == VerifierConfig.max_token_bytes
    assert parameters["cache_size"].default == VerifierConfig.token_cache_size
