"""Token Status Lists (issuer.statuslist): the bit encoding, the served list, and every path that revokes."""

from __future__ import annotations

import base64
import dataclasses
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from issuer import create_app, extensions, statuslist
from issuer.apis import ApiStore
from issuer.clients import Client, ClientStore
from issuer.db import Database, refresh_tokens, status_grants, status_lists
from issuer.keys import KeyStore
from issuer.prune import prune
from issuer.settings import IntrospectionSettings, IssuerSettings
from issuer.statuslist import StatusLists, bit, decode, encode, registered, revoke_grants, set_bit
from jwt_verifier.jose import load_verification_key
from shared.settings import SettingsError
from tests.support.browsing import VERIFIER, csrf_token, get_code

DEMO_USERS = "alice:wonderland:profile admin;bob:builder:profile"
ISSUER = "http://issuer.test"
REDIRECT = "http://rs.test/callback"


@pytest.fixture
def settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return dataclasses.replace(
        issuer_settings, demo_users=DEMO_USERS, web_redirect_uris=(REDIRECT,), refresh_reuse_grace=0
    )


# -- encoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "byte", "value"), [(0, 0, 0x01), (7, 0, 0x80), (8, 1, 0x01), (13, 1, 0x20)])
def test_index_i_is_bit_i_mod_8_of_byte_i_div_8_least_significant_first(index: int, byte: int, value: int) -> None:
    buffer = bytearray(4)
    assert set_bit(buffer, index)
    assert buffer[byte] == value
    assert sum(buffer) == value  # no other bit
    assert bit(bytes(buffer), index) == 1
    assert not set_bit(buffer, index)  # already INVALID


def test_lst_is_zlib_deflate_in_base64url_without_padding() -> None:
    bits = bytes([0b10111001, 0b00000000, 0b11111111] + [0] * 61)
    lst = encode(bits)
    assert not {"=", "+", "/"} & set(lst)
    raw = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
    assert raw[0] & 0x0F == 8  # CMF: the DEFLATE method of the zlib format (RFC 1950)
    assert zlib.decompress(raw) == bits
    assert decode(lst) == bits


def test_the_draft_example_decodes() -> None:
    """draft-ietf-oauth-status-list-21 section 4.1's example: indexes 0, 3, 4, 5, 7, 8, 9, 13, 15 are 1."""
    bits = bytes([0xB9, 0xA3])
    assert [i for i in range(16) if bit(bits, i)] == [0, 3, 4, 5, 7, 8, 9, 13, 15]
    assert decode(encode(bits)) == bits


# -- settings -------------------------------------------------------------------------------------


def test_settings_read_the_status_list_variables() -> None:
    settings = IssuerSettings.from_env(
        {"ISSUER_STATUS_LIST_TTL": "2", "ISSUER_STATUS_LIST_CAPACITY": "8192", "ISSUER_STATUS_LIST_VALIDITY": "3600"}
    )
    assert (settings.status_list_ttl, settings.status_list_capacity, settings.status_list_validity) == (2, 8192, 3600)


@pytest.mark.parametrize(
    ("name", "value"),
    [("ISSUER_STATUS_LIST_CAPACITY", "1001"), ("ISSUER_STATUS_LIST_CAPACITY", "8"), ("ISSUER_STATUS_LIST_TTL", "0")],
)
def test_bad_status_list_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        IssuerSettings.from_env({name: value})


# -- helpers ----------------------------------------------------------------------------------------


def _login(client: FlaskClient, username: str = "alice", password: str = "wonderland") -> dict[str, Any]:
    response = client.post("/token", data={"grant_type": "password", "username": username, "password": password})
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def _refresh(client: FlaskClient, refresh_token: str, client_id: str = "cli") -> TestResponse:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    return client.post("/token", data=form)


def _reference(access_token: str) -> dict[str, Any]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    reference: dict[str, Any] = claims["status"]["status_list"]
    return reference


def _list_claims(client: FlaskClient, uri: str) -> dict[str, Any]:
    """Fetch a list and verify it with the issuer's JWKS, as an API does."""
    response = client.get(uri.removeprefix(ISSUER))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/statuslist+jwt"
    token = response.get_data(as_text=True)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "statuslist+jwt"
    keys = dict(load_verification_key(jwk) for jwk in client.get("/.well-known/jwks.json").get_json()["keys"])
    claims: dict[str, Any] = jwt.decode(token, keys[header["kid"]], algorithms=["RS256"], options={"verify_aud": False})
    return claims


def _status(client: FlaskClient, access_token: str) -> int:
    """Return the status of an access token in its list: 0 VALID, 1 INVALID."""
    reference = _reference(access_token)
    claims = _list_claims(client, reference["uri"])
    return bit(decode(claims["status_list"]["lst"]), reference["idx"])


# -- the claim and the list ---------------------------------------------------------------------------


def test_an_access_token_refers_to_its_index_in_a_status_list(client: FlaskClient) -> None:
    body = _login(client)
    reference = _reference(body["access_token"])
    assert isinstance(reference["idx"], int)
    assert reference["uri"].startswith(f"{ISSUER}/statuslists/")
    claims = _list_claims(client, reference["uri"])
    assert claims["sub"] == reference["uri"]
    assert claims["iss"] == ISSUER
    assert claims["ttl"] == 1
    assert claims["iat"] <= time.time() < claims["exp"]
    assert claims["status_list"]["bits"] == 1
    assert bit(decode(claims["status_list"]["lst"]), reference["idx"]) == 0


def test_the_refresh_token_and_id_token_carry_no_status(client: FlaskClient) -> None:
    body = _login(client)
    assert body["refresh_token"].count(".") == 0


def test_every_token_of_a_refresh_family_shares_its_index_and_each_login_gets_another(client: FlaskClient) -> None:
    first = _login(client)
    refreshed = _refresh(client, first["refresh_token"]).get_json()
    again = _refresh(client, refreshed["refresh_token"]).get_json()
    other = _login(client)
    references = [_reference(body["access_token"]) for body in (first, refreshed, again, other)]
    assert references[0] == references[1] == references[2]
    assert references[3] != references[0]


def test_a_full_list_makes_way_for_a_new_one(app: Flask) -> None:
    with app.app_context():
        small = dataclasses.replace(statuslist.current(), capacity=8)
        slots = [
            small.for_token(client_id="cli", audience="jwt-split-api", scope="x", registered=_seeded(app))
            for _ in range(9)
        ]
    assert len({slot.list_id for slot in slots}) == 2
    assert sorted(slot.idx for slot in slots[:8]) == list(range(8))
    assert slots[8].idx == 0


def test_a_list_past_its_validity_takes_no_more_indexes(app: Flask) -> None:
    with app.app_context():
        closing = dataclasses.replace(statuslist.current(), validity=0)  # each list closes as it opens
        first = closing.for_token(client_id="cli", audience="jwt-split-api", scope="x", registered=_seeded(app))
        second = closing.for_token(client_id="cli", audience="jwt-split-api", scope="x", registered=_seeded(app))
    assert first.list_id != second.list_id
    assert first.idx == second.idx == 0


def _close_every_list(app: Flask) -> None:
    """Close every list now, as its validity running out does."""
    with extensions.of(app).database.transaction() as conn:
        conn.execute(update(status_lists).values(open_until=int(time.time())))


def test_a_family_whose_list_closed_moves_to_the_open_list_and_its_revocation_sets_both_indexes(
    app: Flask, client: FlaskClient
) -> None:
    first = _login(client)
    _close_every_list(app)
    moved = _refresh(client, first["refresh_token"]).get_json()
    again = _refresh(client, moved["refresh_token"]).get_json()
    other = _login(client)
    old, new = _reference(first["access_token"]), _reference(moved["access_token"])
    assert new["uri"] != old["uri"]  # the open list, not the closed one
    assert _reference(again["access_token"]) == new  # its index while that list is open
    assert _reference(other["access_token"])["uri"] == new["uri"]
    client.post("/revoke", data={"token": again["refresh_token"], "client_id": "cli"})
    assert [_status(client, body["access_token"]) for body in (first, moved, again)] == [1, 1, 1]
    assert _status(client, other["access_token"]) == 0


def test_revoking_an_access_token_of_a_familys_previous_index_ends_it_and_sets_its_new_index(
    app: Flask, client: FlaskClient
) -> None:
    first = _login(client)
    _close_every_list(app)
    moved = _refresh(client, first["refresh_token"]).get_json()
    assert _reference(moved["access_token"])["uri"] != _reference(first["access_token"])["uri"]
    assert client.post("/revoke", data={"token": first["access_token"], "client_id": "cli"}).status_code == 200
    assert _status(client, first["access_token"]) == 1
    assert _status(client, moved["access_token"]) == 1
    assert _refresh(client, moved["refresh_token"]).status_code == 400


def test_a_family_revoked_before_its_move_is_born_invalid_in_the_open_list(app: Flask, client: FlaskClient) -> None:
    first = _login(client)
    _close_every_list(app)
    database = extensions.of(app).database
    with database.transaction() as conn:  # revoked meanwhile, by a revocation that set no bit
        conn.execute(update(refresh_tokens).values(revoked_at=int(time.time())))
    with app.test_request_context():
        slot = statuslist.slot_for("cli", "", "jwt-split-api", "profile", first["refresh_token"], _seeded(app))
    assert slot is not None
    assert slot.list_id not in _reference(first["access_token"])["uri"]
    assert _status(client, first["access_token"]) == 1
    with database.reading() as conn:
        (bits,) = conn.execute(select(status_lists.c.bits).where(status_lists.c.id == slot.list_id)).one()
    assert bit(bits, slot.idx) == 1


def test_a_family_whose_new_list_closes_while_its_previous_index_lives_stays_and_that_list_lives_on(
    app: Flask, client: FlaskClient
) -> None:
    first = _login(client)
    _close_every_list(app)
    moved = _refresh(client, first["refresh_token"]).get_json()
    _close_every_list(app)  # within an access token's lifetime of the move: the first index still lives
    stayed = _refresh(client, moved["refresh_token"]).get_json()
    assert _reference(stayed["access_token"]) == _reference(moved["access_token"])  # never a third live index
    list_id = _reference(stayed["access_token"])["uri"].rsplit("/", 1)[1]
    with extensions.of(app).database.reading() as conn:
        expires_at = conn.execute(select(status_lists.c.expires_at).where(status_lists.c.id == list_id)).scalar_one()
    assert expires_at >= time.time() + 600 - 5  # as long as the token it just issued
    assert _reference(stayed["access_token"])["uri"] in client.get("/statuslists").get_json()["status_lists"]
    client.post("/revoke", data={"token": stayed["refresh_token"], "client_id": "cli"})
    assert [_status(client, body["access_token"]) for body in (first, moved, stayed)] == [1, 1, 1]


class _Clock:
    """The status lists' `time`: a clock the test moves."""

    def __init__(self, now: int) -> None:
        self.now = now

    def time(self) -> float:
        return float(self.now)


def test_the_aggregation_names_at_most_two_lists_however_many_validity_periods_pass(
    settings: IssuerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    hourly = dataclasses.replace(settings, status_list_validity=3600, access_token_ttl=600)
    client = create_app(hourly).test_client()
    clock = _Clock(int(time.time()))
    monkeypatch.setattr(statuslist, "time", clock)
    families = [_login(client), _login(client, "bob", "builder")]  # refreshed throughout, and a new login each time
    issued: list[tuple[int, str]] = []  # (when, list URI) of every access token
    seen: set[str] = set()
    for _ in range(40):  # 20 validity periods
        clock.now += 1801
        families = [_refresh(client, body["refresh_token"]).get_json() for body in families[:2]] + [_login(client)]
        issued += [(clock.now, _reference(body["access_token"])["uri"]) for body in families]
        named = client.get("/statuslists").get_json()["status_lists"]
        assert len(named) <= 2
        assert {uri for when, uri in issued if when + 600 > clock.now} <= set(named)  # every live token's list
        seen.update(named)
    assert len(seen) >= 20  # the lists did turn over


def test_etag_and_if_none_match_answer_304(client: FlaskClient) -> None:
    uri = _reference(_login(client)["access_token"])["uri"]
    path = uri.removeprefix(ISSUER)
    first = client.get(path)
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert first.headers["Cache-Control"] == "public, max-age=1"
    assert client.get(path).get_data() == first.get_data()  # the same signed bytes: not signed again
    cached = client.get(path, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.headers["ETag"] == etag
    assert cached.get_data() == b""
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_revocation_changes_the_etag(client: FlaskClient) -> None:
    body = _login(client)
    path = _reference(body["access_token"])["uri"].removeprefix(ISSUER)
    etag = client.get(path).headers["ETag"]
    assert client.post("/revoke", data={"token": body["refresh_token"], "client_id": "cli"}).status_code == 200
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 200


@pytest.mark.parametrize("list_id", ["0" * 32, "not-a-list", "A" * 32, "x" * 300])
def test_an_unknown_list_is_404_json(client: FlaskClient, list_id: str) -> None:
    response = client.get(f"/statuslists/{list_id}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_an_expired_list_is_404_and_pruned(app: Flask, client: FlaskClient) -> None:
    uri = _reference(_login(client)["access_token"])["uri"]
    database = extensions.of(app).database
    later = int(time.time()) + 400 * 24 * 3600
    assert prune(database, later).status_lists == 1
    assert client.get(uri.removeprefix(ISSUER)).status_code == 404
    assert client.get("/statuslists").get_json()["status_lists"] == []


def test_a_live_list_is_not_pruned(app: Flask, client: FlaskClient) -> None:
    uri = _reference(_login(client)["access_token"])["uri"]
    assert prune(extensions.of(app).database).status_lists == 0
    assert client.get(uri.removeprefix(ISSUER)).status_code == 200


def test_the_aggregation_lists_the_current_lists_and_the_metadata_names_it(client: FlaskClient) -> None:
    uri = _reference(_login(client)["access_token"])["uri"]
    for document in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        assert client.get(document).get_json()["status_list_aggregation_endpoint"] == f"{ISSUER}/statuslists"
    response = client.get("/statuslists")
    assert response.get_json() == {"status_lists": [uri]}
    assert response.headers["Cache-Control"] == "public, max-age=1"


def test_status_lists_off_issue_no_status_claim_and_serve_no_lists(settings: IssuerSettings) -> None:
    assert IssuerSettings.from_env({"ISSUER_STATUS_LISTS": "false"}).status_lists is False
    assert IssuerSettings.from_env({}).status_lists is True
    client = create_app(dataclasses.replace(settings, status_lists=False)).test_client()
    body = _login(client)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert "status" not in claims
    refreshed = _refresh(client, body["refresh_token"])
    assert refreshed.status_code == 200
    assert "status" not in jwt.decode(refreshed.get_json()["access_token"], options={"verify_signature": False})
    for document in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        assert "status_list_aggregation_endpoint" not in client.get(document).get_json()
    assert client.get("/statuslists").status_code == 404
    assert client.get(f"/statuslists/{'0' * 32}").status_code == 404
    revoke = {"token": refreshed.get_json()["access_token"], "token_type_hint": "access_token", "client_id": "cli"}
    assert client.post("/revoke", data=revoke).status_code == 200  # nothing to set: 200, as for any token
    with extensions.of(client.application).database.engine.connect() as conn:
        assert conn.execute(select(status_grants)).all() == []


# -- every revocation path sets the bit ----------------------------------------------------------------


def test_revoking_the_refresh_token_sets_the_bit_of_its_access_tokens(client: FlaskClient) -> None:
    body = _login(client)
    other = _login(client)
    assert _status(client, body["access_token"]) == 0
    client.post("/revoke", data={"token": body["refresh_token"], "client_id": "cli"})
    assert _status(client, body["access_token"]) == 1
    assert _status(client, other["access_token"]) == 0  # another login's tokens stay valid


def test_revoking_an_access_token_sets_its_bit_and_ends_its_family(client: FlaskClient) -> None:
    body = _login(client)
    assert client.post("/revoke", data={"token": body["access_token"], "client_id": "cli"}).status_code == 200
    assert _status(client, body["access_token"]) == 1
    assert _refresh(client, body["refresh_token"]).status_code == 400


def test_revoking_another_clients_or_a_forged_access_token_sets_nothing(client: FlaskClient) -> None:
    body = _login(client)
    client.post("/revoke", data={"token": body["access_token"], "client_id": "resource-web"})
    header, payload, _ = body["access_token"].split(".")
    client.post("/revoke", data={"token": f"{header}.{payload}.AAAA", "client_id": "cli"})
    assert _status(client, body["access_token"]) == 0


def test_refresh_token_reuse_sets_the_bit(client: FlaskClient) -> None:
    body = _login(client)
    refreshed = _refresh(client, body["refresh_token"]).get_json()
    assert _refresh(client, body["refresh_token"]).status_code == 400  # reuse: no grace in these settings
    assert _status(client, refreshed["access_token"]) == 1


def test_deleting_the_user_sets_the_bits_of_their_tokens(app: Flask, client: FlaskClient) -> None:
    alice, bob = _login(client), _login(client, "bob", "builder")
    extensions.of(app).users.delete("alice")
    assert _status(client, alice["access_token"]) == 1
    assert _status(client, bob["access_token"]) == 0


def _code_tokens(client: FlaskClient, **overrides: str) -> dict[str, Any]:
    code = get_code(client, REDIRECT, **overrides)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "resource-web",
        "code_verifier": VERIFIER,
    }
    response = client.post("/token", data=form)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def test_the_issuers_logout_sets_the_bits_of_that_sessions_tokens(client: FlaskClient) -> None:
    body = _code_tokens(client)
    refreshed = _refresh(client, body["refresh_token"], "resource-web").get_json()
    token = csrf_token(client.get("/logout").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 200
    assert _status(client, body["access_token"]) == 1
    assert _status(client, refreshed["access_token"]) == 1


def test_an_rp_initiated_logout_sets_the_bits_of_that_sessions_tokens(client: FlaskClient) -> None:
    body = _code_tokens(client, scope="openid profile")
    response = client.get("/logout", query_string={"id_token_hint": body["id_token"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _status(client, body["access_token"]) == 1


def test_a_reused_code_sets_the_bits_of_what_its_first_use_gave(client: FlaskClient) -> None:
    code = get_code(client, REDIRECT)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "resource-web",
        "code_verifier": VERIFIER,
    }
    first = client.post("/token", data=form).get_json()
    assert client.post("/token", data=form).status_code == 400
    assert _status(client, first["access_token"]) == 1


PUBLIC = frozenset({"password", "refresh_token"})


def test_deleting_the_client_sets_the_bits_of_its_tokens(app: Flask, client: FlaskClient) -> None:
    extensions.of(app).clients.add(Client("app-1", PUBLIC))
    response = client.post(
        "/token", data={"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": "app-1"}
    )
    body = response.get_json()
    other = _login(client)
    extensions.of(app).clients.delete("app-1")
    assert _status(client, body["access_token"]) == 1
    assert _status(client, other["access_token"]) == 0


def test_narrowing_the_client_sets_the_bits_of_what_it_no_longer_permits_and_a_refresh_gets_a_new_index(
    app: Flask, client: FlaskClient
) -> None:
    clients = extensions.of(app).clients
    clients.add(Client("app-2", PUBLIC))
    form = {"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": "app-2"}
    admin = client.post("/token", data=form).get_json()
    profile = client.post("/token", data={**form, "scope": "profile"}).get_json()
    clients.replace(Client("app-2", PUBLIC, scopes=frozenset({"profile"})))
    assert _status(client, admin["access_token"]) == 1
    assert _status(client, profile["access_token"]) == 0  # still permitted
    narrowed = _refresh(client, admin["refresh_token"], "app-2").get_json()
    assert narrowed["scope"] == "profile"
    assert _reference(narrowed["access_token"]) != _reference(admin["access_token"])
    assert _status(client, narrowed["access_token"]) == 0


def test_narrowing_a_user_sets_the_bits_of_grants_holding_more_and_a_refresh_gets_a_new_index(
    app: Flask, client: FlaskClient
) -> None:
    admin = _login(client)  # alice: profile admin
    profile = client.post(
        "/token", data={"grant_type": "password", "username": "alice", "password": "wonderland", "scope": "profile"}
    ).get_json()
    bobs = _login(client, "bob", "builder")
    extensions.of(app).users.update("alice", scope="profile")
    assert _status(client, admin["access_token"]) == 1
    assert _status(client, profile["access_token"]) == 0  # still permitted
    assert _status(client, bobs["access_token"]) == 0  # another user's
    narrowed = _refresh(client, admin["refresh_token"]).get_json()
    assert narrowed["scope"] == "profile"
    assert _reference(narrowed["access_token"]) != _reference(admin["access_token"])
    assert _status(client, narrowed["access_token"]) == 0
    extensions.of(app).users.update("alice", name="Alice")  # no scope given: nothing ends
    assert _status(client, narrowed["access_token"]) == 0


def test_narrowing_an_api_sets_the_bits_of_grants_holding_more_and_keeps_identity_scopes(
    app: Flask, client: FlaskClient
) -> None:
    admin = _login(client)
    profile = client.post(
        "/token", data={"grant_type": "password", "username": "alice", "password": "wonderland", "scope": "profile"}
    ).get_json()
    apis = extensions.of(app).apis
    apis.replace("jwt-split-api", "profile")
    assert _status(client, admin["access_token"]) == 1
    assert _status(client, profile["access_token"]) == 0
    narrowed = _refresh(client, admin["refresh_token"]).get_json()
    assert (narrowed["scope"], _status(client, narrowed["access_token"])) == ("profile", 0)
    # Once the API no longer defines `profile`, a browser login's `openid profile` holds the
    # user's identity scope, which a refresh keeps (issuer.oidc): it stays valid. A grant of the
    # API's `profile` without `openid` holds what the API lost: it ends.
    openid = _code_tokens(client, scope="openid profile")
    apis.replace("jwt-split-api", "admin")
    assert _status(client, openid["access_token"]) == 0
    assert _status(client, narrowed["access_token"]) == 1


# -- on both databases ----------------------------------------------------------------------------------


def _lists(database: Database, **options: Any) -> StatusLists:
    """Status lists on `database`; allocation and bits need no signing key."""
    values: dict[str, Any] = {"capacity": 1024, "validity": 3600, "ttl": 1, "access_token_ttl": 600} | options
    return StatusLists(database, cast(KeyStore, None), ISSUER, **values)


def _register(database: Database, *client_ids: str) -> None:
    """Register the clients a test's tokens are for: a token's slot is taken only for a registered client."""
    store = ClientStore(database)
    for client_id in client_ids:
        store.add(Client(client_id, frozenset({"refresh_token"})))
    if ApiStore(database).get("api") is None:
        ApiStore(database).add("api", "x")


def _seeded(app: Flask) -> statuslist.Registered:
    """The revisions of the built-in `cli` client and the default API, as a grant would read them."""
    return registered(extensions.of(app).database, "cli", "jwt-split-api")


def test_concurrent_allocations_get_distinct_indexes(database: Database) -> None:
    lists = _lists(database, capacity=64)
    _register(database, "cli")
    now = registered(database, "cli", "api")
    with ThreadPoolExecutor(max_workers=8) as pool:
        slots = list(
            pool.map(lambda _: lists.for_token(client_id="cli", audience="api", scope="x", registered=now), range(100))
        )
    assert len(set(slots)) == 100
    by_list = Counter(slot.list_id for slot in slots)
    assert sorted(by_list.values(), reverse=True)[:1] == [64]  # the first list filled exactly
    assert sum(by_list.values()) == 100


def test_concurrent_revocations_of_one_list_lose_no_bit(database: Database) -> None:
    lists = _lists(database)
    _register(database, *(f"svc-{i}" for i in range(40)))
    slots = [
        lists.for_token(
            client_id=f"svc-{i}", audience="api", scope="x", registered=registered(database, f"svc-{i}", "api")
        )
        for i in range(40)
    ]

    def revoke(i: int) -> None:
        with database.transaction() as conn:
            revoke_grants(conn, status_grants.c.client_id == f"svc-{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(revoke, range(0, 40, 2)))
    with database.reading() as conn:
        (bits,) = conn.execute(select(status_lists.c.bits).where(status_lists.c.id == slots[0].list_id)).one()
    assert [bit(bits, slot.idx) for slot in slots] == [1 - i % 2 for i in range(40)]


def test_introspection_answers_inactive_for_a_revoked_access_token(app: Flask, client: FlaskClient) -> None:
    secret = "s" * 40
    app.extensions["issuer.introspection"] = IntrospectionSettings(client_id="resource-api", secret=secret)
    auth = {"Authorization": "Basic " + base64.b64encode(f"resource-api:{secret}".encode()).decode()}
    revoked, kept = _login(client), _login(client)
    client.post("/revoke", data={"token": revoked["refresh_token"], "client_id": "cli"})
    answers = [
        client.post("/introspect", data={"token": body["access_token"]}, headers=auth).get_json()
        for body in (revoked, kept)
    ]
    assert answers[0] == {"active": False}
    assert answers[1]["active"] is True


@pytest.mark.parametrize("hint", ["refresh_token", "access_token", None])
def test_revoke_finds_an_access_token_whatever_the_hint(app: Flask, client: FlaskClient, hint: str | None) -> None:
    # RFC 7009 section 2.1: a token the hint does not find is looked up as the other types too.
    body = _login(client)
    form = {"token": body["access_token"], "client_id": "cli"} | ({"token_type_hint": hint} if hint else {})
    assert client.post("/revoke", data=form).status_code == 200
    with app.app_context():
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert statuslist.current().revoked(claims)
    assert _refresh(client, body["refresh_token"]).status_code == 400  # its family ended with it


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", None])
def test_revoke_finds_a_refresh_token_whatever_the_hint(client: FlaskClient, hint: str | None) -> None:
    body = _login(client)
    form = {"token": body["refresh_token"], "client_id": "cli"} | ({"token_type_hint": hint} if hint else {})
    assert client.post("/revoke", data=form).status_code == 200
    assert _refresh(client, body["refresh_token"]).status_code == 400


def test_a_list_closed_by_filling_up_leaves_the_aggregation_once_its_tokens_expire(
    settings: IssuerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full list is closed when the next one opens: its families move at their next token, and it
    # lives only as long as the tokens already issued from it, not for the rest of its validity.
    small = dataclasses.replace(settings, status_list_capacity=8, access_token_ttl=600)
    client = create_app(small).test_client()
    clock = _Clock(int(time.time()))
    monkeypatch.setattr(statuslist, "time", clock)
    family = _login(client)
    first = _reference(family["access_token"])["uri"]
    for _ in range(20):  # fills the first list and two more
        _login(client, "bob", "builder")
    clock.now += 601  # every token issued so far has expired
    moved = _refresh(client, family["refresh_token"]).get_json()
    assert _reference(moved["access_token"])["uri"] != first
    named = client.get("/statuslists").get_json()["status_lists"]
    assert first not in named
    assert len(named) <= 2
