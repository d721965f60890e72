"""Unit tests for issuer.apis: the APIs tokens may be asked for, and which one a grant is for."""

from __future__ import annotations

import pytest

from issuer.apis import Api, ApiStore, InvalidApi, InvalidTarget
from issuer.db import Database
from tests.support.threads import together


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


# -- resource URIs: the other names of an API (RFC 9728 `resource`, RFC 8707 section 2) ---------

ORDERS_URL = "http://localhost:8002"


@pytest.fixture
def orders(apis: ApiStore) -> Api:
    apis.delete("orders-api")
    return apis.add("orders-api", "orders:read", [ORDERS_URL, "https://orders.example/api/"])


def test_an_api_keeps_its_resource_uris(apis: ApiStore, orders: Api) -> None:
    assert orders.resource_uris == {ORDERS_URL, "https://orders.example/api/"}
    assert apis.get("orders-api") == orders
    assert apis.list() == [Api("jwt-split-api", frozenset({"profile", "admin"})), orders]


def test_a_resource_uri_names_its_api_whose_audience_the_token_carries(apis: ApiStore, orders: Api) -> None:
    for uri in (ORDERS_URL, "https://orders.example/api/"):
        assert apis.choose(uri, default="jwt-split-api", allowed=_anyone) == orders


def test_resource_uris_are_compared_exactly(apis: ApiStore, orders: Api) -> None:
    for near in (ORDERS_URL + "/", "https://orders.example/api", "HTTP://localhost:8002", "http://localhost:8002/x"):
        with pytest.raises(InvalidTarget):
            apis.choose(near, default="jwt-split-api", allowed=_anyone)


def test_a_client_limited_to_other_apis_cannot_ask_by_a_resource_uri(apis: ApiStore, orders: Api) -> None:
    with pytest.raises(InvalidTarget):
        apis.choose(ORDERS_URL, default="jwt-split-api", allowed=lambda audience: audience == "jwt-split-api")
    allowed = apis.choose(ORDERS_URL, default="jwt-split-api", allowed=lambda audience: audience == "orders-api")
    assert allowed.audience == "orders-api"


def test_a_resource_uri_names_one_api(apis: ApiStore, orders: Api) -> None:
    with pytest.raises(InvalidApi, match="already names API 'orders-api'"):
        apis.add("billing-api", "x", [ORDERS_URL])
    assert apis.get("billing-api") is None  # nothing of the refused registration stays
    apis.add("https://audience.example", "x")
    with pytest.raises(InvalidApi, match=r"already names API 'https://audience\.example'"):
        apis.add("billing-api", "x", ["https://billing.example", "https://audience.example"])
    with pytest.raises(InvalidApi, match="is a resource URI of API 'orders-api'"):
        apis.add(ORDERS_URL, "x")


def test_an_api_given_its_own_audience_as_a_resource_uri_keeps_just_the_audience(apis: ApiStore) -> None:
    assert apis.add("https://billing.example", "x", ["https://billing.example"]).resource_uris == frozenset()


@pytest.mark.parametrize(
    "uri",
    [
        "not a url",
        "unregistered-api",
        "ftp://orders.example/",
        "https://",
        "https://orders.example/#fragment",
        "https://orders.example/#",
        "https://orders.example/?q=1",
        "https://caf\u00e9.example/",
        "https://orders.example/\x00",
        "https://[::1/",
        "https://orders.example/" + "a" * 2048,
    ],
)
def test_a_resource_uri_must_be_an_absolute_http_url_without_fragment(apis: ApiStore, uri: str) -> None:
    with pytest.raises(InvalidApi, match="absolute http"):
        apis.add("billing-api", "x", [uri])
    assert apis.get("billing-api") is None
    with pytest.raises(InvalidTarget):  # and asking by it never reaches the database
        apis.choose(uri, default="jwt-split-api", allowed=_anyone)


def test_deleting_an_api_frees_its_resource_uris(apis: ApiStore, orders: Api) -> None:
    assert apis.delete("orders-api") is True
    assert apis.resolve(ORDERS_URL) is None
    assert apis.add("billing-api", "x", [ORDERS_URL]).resource_uris == {ORDERS_URL}


# -- replacing a registration ---------------------------------------------------------------------


def test_replace_gives_an_existing_api_exactly_the_new_scopes_and_uris(apis: ApiStore, orders: Api) -> None:
    replaced, existed = apis.replace("orders-api", "orders:write", ["https://orders.example/v2"])
    assert existed is True
    assert (
        apis.get("orders-api")
        == replaced
        == Api("orders-api", frozenset({"orders:write"}), frozenset({"https://orders.example/v2"}))
    )
    assert apis.resolve(ORDERS_URL) is None


def test_replace_registers_a_new_api(apis: ApiStore) -> None:
    api, existed = apis.replace("billing-api", "x", ["https://billing.example"])
    assert existed is False
    assert apis.get("billing-api") == api


def test_replace_cannot_take_another_apis_uri_and_changes_nothing(apis: ApiStore, orders: Api) -> None:
    apis.add("billing-api", "x", ["https://billing.example"])
    with pytest.raises(InvalidApi, match="already names API 'orders-api'"):
        apis.replace("billing-api", "y", [ORDERS_URL])
    assert apis.get("billing-api") == Api("billing-api", frozenset({"x"}), frozenset({"https://billing.example"}))


def test_add_without_replace_changes_nothing_of_an_existing_api(apis: ApiStore, orders: Api) -> None:
    with pytest.raises(InvalidApi, match="already exists"):
        apis.add("orders-api", "y", ["https://other.example"])
    assert apis.get("orders-api") == orders


def test_replacing_one_api_from_several_processes_at_once_succeeds(apis: ApiStore, orders: Api) -> None:
    results = together(6, lambda: apis.replace("orders-api", "orders:read orders:write", [ORDERS_URL]))
    assert all(not isinstance(result, BaseException) for result in results), results
    assert apis.get("orders-api") == Api(
        "orders-api", frozenset({"orders:read", "orders:write"}), frozenset({ORDERS_URL})
    )


def test_registering_a_new_api_from_several_processes_at_once_succeeds(apis: ApiStore) -> None:
    results = together(6, lambda: apis.replace("billing-api", "x", ["https://billing.example"])[1])
    assert sorted(map(repr, results)) == ["False"] + ["True"] * 5  # one added it, the others replaced it
    assert apis.get("billing-api") == Api("billing-api", frozenset({"x"}), frozenset({"https://billing.example"}))


# -- the default API's resource URIs, seeded from ISSUER_AUDIENCE_RESOURCE_URIS --------------------


def test_seed_adds_the_resource_uris_the_default_api_lacks_and_keeps_the_operators(apis: ApiStore) -> None:
    apis.replace("jwt-split-api", "profile", ["https://operator.example"])
    apis.seed("jwt-split-api", "profile admin", ["http://localhost:8001"])
    assert apis.get("jwt-split-api") == Api(
        "jwt-split-api", frozenset({"profile"}), frozenset({"https://operator.example", "http://localhost:8001"})
    )


def test_seed_leaves_a_uri_that_names_another_api_to_it(
    apis: ApiStore, orders: Api, caplog: pytest.LogCaptureFixture
) -> None:
    apis.seed("jwt-split-api", "profile admin", [ORDERS_URL, "http://localhost:8001"])
    assert apis.resolve(ORDERS_URL) == orders
    assert apis.resolve("http://localhost:8001") == apis.get("jwt-split-api")
    assert "names another API" in caplog.text


def test_seeding_from_workers_starting_at_once_succeeds(database: Database) -> None:
    results = together(
        6, lambda: ApiStore(database).seed("jwt-split-api", "profile admin", ["http://localhost:8001", "http://a.test"])
    )
    assert results == [None] * 6
    assert ApiStore(database).list() == [
        Api("jwt-split-api", frozenset({"profile", "admin"}), frozenset({"http://localhost:8001", "http://a.test"}))
    ]


def test_an_api_registered_to_require_dpop_reads_back_so_until_replaced_without(apis: ApiStore) -> None:
    assert apis.get("orders-api") == Api("orders-api", frozenset({"orders:read", "orders:write"}))
    assert apis.get("orders-api").require_dpop is False  # type: ignore[union-attr]
    api, existed = apis.replace("orders-api", "orders:read", require_dpop=True)
    assert (existed, api.require_dpop) == (True, True)
    assert apis.get("orders-api") == api
    assert [a.audience for a in apis.list() if a.require_dpop] == ["orders-api"]
    assert apis.add("strict-api", "x", require_dpop=True) == apis.get("strict-api")
    assert apis.replace("orders-api", "orders:read")[0].require_dpop is False
    assert apis.get("orders-api").require_dpop is False  # type: ignore[union-attr]
