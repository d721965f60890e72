"""One commit per grant (issue 21): every token request is one transaction, on SQLite and PostgreSQL.

The commits are counted by a listener of the test's own on the app's engine (SQLAlchemy's
`commit` event), around each request of the in-process app: whatever the token endpoint
writes (the grant, the status-list index, a client assertion's `jti`, a DPoP proof) commits
once. The issuer's own count (`jwt_split_token_commits`) must agree with it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import event, select, update
from werkzeug.test import TestResponse

from issuer import extensions, statuslist
from issuer.clients import Client, ClientStore
from issuer.db import status_grants, status_lists
from issuer.settings import IssuerSettings
from tests.support.browsing import VERIFIER, WEB_REDIRECT_URI, get_code
from tests.support.dpop import make_proof
from tests.support.tokens import assertion_claims, jwks_json, kid_of, new_rsa_key, sign

APP = "app"
SERVICE = "svc"
TOKEN_URL = "http://issuer.test/token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def settings(on_each_engine: IssuerSettings) -> IssuerSettings:
    return on_each_engine


@pytest.fixture
def app(app: Flask) -> Flask:
    """The conftest's app, with a public client of the password and refresh grants."""
    extensions.of(app).clients.add(Client(APP, frozenset({"password", "refresh_token"})))
    return app


@dataclasses.dataclass
class Counted:
    response: TestResponse
    commits: int  # seen by the engine's listener
    reported: float  # the issuer's jwt_split_token_commits for the grant


def _reported(grant: str) -> float:
    return REGISTRY.get_sample_value("jwt_split_token_commits_total", {"grant": grant}) or 0.0


def _post(app: Flask, client: FlaskClient, proof: str | None = None, **form: str) -> Counted:
    """POST a token request (with a DPoP `proof`); return its response and the commits it made."""
    commits = 0

    def counted(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    engine = extensions.of(app).database.engine
    before = _reported(form["grant_type"])
    event.listen(engine, "commit", counted)
    try:
        response = client.post("/token", data=form, headers={"DPoP": proof} if proof else {})
    finally:
        event.remove(engine, "commit", counted)
    return Counted(response, commits, _reported(form["grant_type"]) - before)


def _ok(counted: Counted) -> dict[str, Any]:
    assert counted.response.status_code == 200, counted.response.get_data(as_text=True)
    body: dict[str, Any] = counted.response.get_json()
    return body


@pytest.fixture(autouse=True)
def _warm(app: Flask, client: FlaskClient) -> None:
    """A first grant: on PostgreSQL it also takes the worker's block of status-list indexes (see the test below)."""
    _ok(_post(app, client, grant_type="password", client_id=APP, username="alice", password="wonderland"))


def test_the_grant_that_takes_a_workers_block_of_status_list_indexes_commits_it_first(
    app: Flask, client: FlaskClient
) -> None:
    """On PostgreSQL a worker takes BLOCK indexes at once, in a transaction of its own (issuer.statuslist)."""
    lists = app.extensions[statuslist.EXTENSION]
    app.extensions[statuslist.EXTENSION] = dataclasses.replace(lists)  # a worker that has no block yet
    form = {"grant_type": "password", "client_id": APP, "username": "alice", "password": "wonderland"}
    block = 0 if extensions.of(app).database.is_sqlite else 1
    first = _post(app, client, **form)
    _ok(first)
    assert (first.commits, first.reported) == (1 + block, 1 + block)
    following = [_post(app, client, **form) for _ in range(3)]
    assert [(counted.commits, counted.reported) for counted in following] == [(1, 1)] * 3


def test_a_password_grant_and_its_refreshes_commit_once_each(app: Flask, client: FlaskClient) -> None:
    login = _post(app, client, grant_type="password", client_id=APP, username="alice", password="wonderland")
    refresh_token = _ok(login)["refresh_token"]
    assert (login.commits, login.reported) == (1, 1)
    for _ in range(2):
        refreshed = _post(app, client, grant_type="refresh_token", client_id=APP, refresh_token=refresh_token)
        refresh_token = _ok(refreshed)["refresh_token"]
        assert (refreshed.commits, refreshed.reported) == (1, 1)


def test_a_refresh_that_moves_its_family_off_a_closed_status_list_commits_once(app: Flask, client: FlaskClient) -> None:
    login = _post(app, client, grant_type="password", client_id=APP, username="alice", password="wonderland")
    database = extensions.of(app).database
    with database.transaction() as conn:  # its list closes (issue 22): the next token moves the family
        conn.execute(update(status_lists).values(open_until=int(time.time())))
    refreshed = _post(app, client, grant_type="refresh_token", client_id=APP, refresh_token=_ok(login)["refresh_token"])
    assert (refreshed.commits, refreshed.reported) == (1, 1)
    slots = [
        jwt.decode(_ok(counted)["access_token"], options={"verify_signature": False})["status"]
        for counted in (login, refreshed)
    ]
    assert slots[0] != slots[1]
    with database.reading() as conn:
        moved = select(status_grants.c.previous_list_id).where(status_grants.c.previous_list_id.is_not(None))
        assert conn.execute(moved).scalars().all() == [slots[0]["status_list"]["uri"].rsplit("/", 1)[1]]


def test_dpop_bound_grants_commit_their_proof_with_the_grant(app: Flask, client: FlaskClient) -> None:
    key = new_rsa_key()
    form = {"client_id": APP, "username": "alice", "password": "wonderland"}
    login = _post(app, client, make_proof(key, "POST", TOKEN_URL), grant_type="password", **form)
    assert _ok(login)["token_type"] == "DPoP"
    assert login.commits == 1
    proof = make_proof(key, "POST", TOKEN_URL)
    refresh = {"client_id": APP, "refresh_token": _ok(login)["refresh_token"]}
    refreshed = _post(app, client, proof, grant_type="refresh_token", **refresh)
    assert _ok(refreshed)["token_type"] == "DPoP"
    assert refreshed.commits == 1
    # The proof was remembered in that one commit: presented again, it is refused.
    replayed = {"client_id": APP, "refresh_token": _ok(refreshed)["refresh_token"]}
    again = _post(app, client, proof, grant_type="refresh_token", **replayed)
    assert again.response.status_code == 400
    assert again.response.get_json()["error"] == "invalid_dpop_proof"


def test_a_code_exchange_commits_once(app: Flask, client: FlaskClient) -> None:
    code = get_code(client, WEB_REDIRECT_URI)
    form = {"client_id": "resource-web", "code": code, "redirect_uri": WEB_REDIRECT_URI, "code_verifier": VERIFIER}
    exchanged = _post(app, client, grant_type="authorization_code", **form)
    _ok(exchanged)
    assert (exchanged.commits, exchanged.reported) == (1, 1)


def _statements(app: Flask, client: FlaskClient, **form: str) -> tuple[TestResponse, list[str]]:
    """POST a token request; return its response and every SQL statement it sent, as sent."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    engine = extensions.of(app).database.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.post("/token", data=form)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return response, sent


def _reading_users(sent: list[str]) -> list[str]:
    """Return the FROM clause (up to its join condition) of each statement in `sent` that reads `users`."""
    reading = [statement for statement in sent if " users" in statement.partition(" WHERE ")[0]]
    return [statement.partition(" FROM ")[2].partition(" WHERE ")[0].partition(" ON ")[0] for statement in reading]


def test_a_refresh_and_a_code_exchange_read_their_user_once_with_their_token_or_code(
    app: Flask, client: FlaskClient
) -> None:
    """The user's scopes come with the statement that locks the token or code (joined, FOR UPDATE on PostgreSQL).

    The grant narrowed to them with a second read of the user by id, one statement of a
    refresh's five; the join already held the user's row.
    """
    login = {"grant_type": "password", "client_id": APP, "username": "alice", "password": "wonderland"}
    refreshed, sent = _statements(
        app,
        client,
        grant_type="refresh_token",
        client_id=APP,
        refresh_token=_ok(_post(app, client, **login))["refresh_token"],
    )
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    assert _reading_users(sent) == ["users JOIN refresh_tokens"]
    code = get_code(client, WEB_REDIRECT_URI)
    form = {"client_id": "resource-web", "code": code, "redirect_uri": WEB_REDIRECT_URI, "code_verifier": VERIFIER}
    exchanged, sent = _statements(app, client, grant_type="authorization_code", **form)
    assert exchanged.status_code == 200, exchanged.get_data(as_text=True)
    assert _reading_users(sent) == ["users JOIN authorization_codes"]


@pytest.fixture
def service(app: Flask) -> Any:
    key = new_rsa_key()
    registered = Client(
        SERVICE, frozenset({"client_credentials"}), scopes=frozenset({"profile"}), auth_method="private_key_jwt"
    )
    extensions.of(app).clients.add(dataclasses.replace(registered, jwks=jwks_json(key)))
    return key


def _assertion(key: Any) -> str:
    return sign(assertion_claims(SERVICE, "http://issuer.test"), key, kid=kid_of(key), typ=None)


def test_a_client_credentials_grant_spends_its_assertion_in_its_one_commit(
    app: Flask, client: FlaskClient, service: Any
) -> None:
    assertion = _assertion(service)
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION}
    granted = _post(app, client, **form, client_assertion=assertion)
    _ok(granted)
    assert (granted.commits, granted.reported) == (1, 1)
    replayed = _post(app, client, **form, client_assertion=assertion)
    assert replayed.response.status_code == 401
    assert replayed.response.get_json()["error"] == "invalid_client"


def test_an_assertion_spent_by_a_refused_grant_stays_spent(app: Flask, client: FlaskClient, service: Any) -> None:
    assertion = _assertion(service)
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION, "client_assertion": assertion}
    refused = _post(app, client, **form, scope="no-such-scope")
    assert refused.response.status_code == 400
    assert refused.response.get_json()["error"] == "invalid_scope"
    replayed = _post(app, client, **form)
    assert replayed.response.status_code == 401
    assert replayed.response.get_json()["error"] == "invalid_client"


def test_a_dpop_proof_spent_by_a_refused_grant_stays_spent(app: Flask, client: FlaskClient) -> None:
    proof = make_proof(new_rsa_key(), "POST", TOKEN_URL)
    form = {"grant_type": "refresh_token", "client_id": APP}
    refused = _post(app, client, proof, **form, refresh_token="not-a-token")
    assert refused.response.get_json()["error"] == "invalid_grant"
    login = {"client_id": APP, "username": "alice", "password": "wonderland"}
    replayed = _post(app, client, proof, grant_type="password", **login)
    assert replayed.response.status_code == 400
    assert replayed.response.get_json()["error"] == "invalid_dpop_proof"


def test_a_grant_whose_client_is_deleted_meanwhile_is_refused_invalid_client(
    app: Flask, client: FlaskClient, service: Any
) -> None:
    """A worker still holding the client (its registry cache) when the CLI deletes it: 401, no token."""
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION}
    _ok(_post(app, client, **form, client_assertion=_assertion(service)))  # the worker caches the client
    ClientStore(extensions.of(app).database).delete(SERVICE)  # the CLI's own store: the worker's cache stays
    refused = _post(app, client, **form, client_assertion=_assertion(service))
    assert refused.response.status_code == 401, refused.response.get_data(as_text=True)
    assert refused.response.get_json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in refused.response.headers
    with extensions.of(
        app
    ).database.reading() as conn:  # the first token's grant (revoked): the refused one rolled back
        assert (
            len(conn.execute(select(status_grants.c.grant_id).where(status_grants.c.client_id == SERVICE)).all()) == 1
        )
