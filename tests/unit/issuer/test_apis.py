"""Unit tests for issuer.apis: the APIs tokens may be asked for, and which one a grant is for."""

from __future__ import annotations

import pytest

from issuer.apis import Api, ApiStore, InvalidApi, InvalidTarget
from issuer.db import Database


@pytest.fixture
def apis(database: Database) -> ApiStore:
    store = ApiStore(database)
    store.add("orders-api", "orders:read orders:write")
    store.add("jwt-split-api", "profile admin")
    return store


def _anyone(_audience: str) -> bool:
    return True


def test_an_added_api_is_listed_with_its_scopes(apis: ApiStore) -> None:
    assert apis.list() == [
        Api("jwt-split-api", frozenset({"profile", "admin"})),
        Api("orders-api", frozenset({"orders:read", "orders:write"})),
    ]
    assert apis.get("orders-api") == Api("orders-api", frozenset({"orders:read", "orders:write"}))


def test_an_api_is_registered_once(apis: ApiStore) -> None:
    with pytest.raises(InvalidApi, match="already exists"):
        apis.add("orders-api", "x")


@pytest.mark.parametrize("audience", ["", "two words", "caf\u00e9", "nul\x00", "a" * 256])
def test_an_audience_must_be_printable_ascii_without_spaces(apis: ApiStore, audience: str) -> None:
    with pytest.raises(InvalidApi, match="printable ASCII"):
        apis.add(audience, "x")
    assert apis.get(audience) is None  # and looking it up never reaches the database


def test_delete_removes_an_api(apis: ApiStore) -> None:
    assert apis.delete("orders-api") is True
    assert apis.delete("orders-api") is False
    assert apis.get("orders-api") is None


def test_seed_keeps_the_scopes_an_operator_gave_the_default_api(apis: ApiStore) -> None:
    apis.seed("jwt-split-api", "profile")
    assert apis.get("jwt-split-api") == Api("jwt-split-api", frozenset({"profile", "admin"}))
    apis.seed("new-default", "read")
    assert apis.get("new-default") == Api("new-default", frozenset({"read"}))


def test_no_resource_means_the_default_api(apis: ApiStore) -> None:
    assert apis.choose(None, default="jwt-split-api", allowed=_anyone).audience == "jwt-split-api"


def test_a_named_resource_is_that_api(apis: ApiStore) -> None:
    assert apis.choose("orders-api", default="jwt-split-api", allowed=_anyone).audience == "orders-api"


def test_an_unknown_resource_is_an_invalid_target(apis: ApiStore) -> None:
    with pytest.raises(InvalidTarget):
        apis.choose("https://evil.example/api", default="jwt-split-api", allowed=_anyone)


def test_an_api_the_client_may_not_ask_for_is_an_invalid_target(apis: ApiStore) -> None:
    with pytest.raises(InvalidTarget):
        apis.choose("orders-api", default="jwt-split-api", allowed=lambda audience: audience == "jwt-split-api")
