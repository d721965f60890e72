"""A user's scopes narrowed while a grant for them is being made: the grant is seen and ended, or sees the change.

`users update --scope` ends, in its transaction, the tokens of the user's grants that hold more
(issuer.narrowing). A refresh, a code exchange or a device grant reads the user to narrow what
it gives; one that read the user before the change and wrote its status-list row after the
change had read the user's grants would never be ended. They lock the user's row with the
token or code they spend (issuer.db.with_username), so the change waits for them and then ends
what they wrote. On PostgreSQL, where the two run at once (SQLite has one writer): the grant
here is made to wait at its row's insert by a lock the test holds, while the change runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import jwt
import pytest
from flask import Flask
from sqlalchemy import create_engine, delete, text

from issuer import extensions, statuslist
from issuer.clients import Client
from issuer.db import status_grants
from issuer.settings import IssuerSettings
from issuer.users import UserStore

APP = "app"


@pytest.fixture
def settings(on_postgresql: IssuerSettings) -> IssuerSettings:
    return on_postgresql


def test_a_refresh_racing_a_users_narrowing_gives_no_token_of_the_scope_they_lost(
    app: Flask, issuer_postgres_url: str
) -> None:
    extensions.of(app).clients.add(Client(APP, frozenset({"password", "refresh_token"})))
    client = app.test_client()
    login = {"grant_type": "password", "client_id": APP, "username": "alice", "password": "wonderland"}
    first = client.post("/token", data=login)
    assert first.status_code == 200, first.get_data(as_text=True)
    database = extensions.of(app).database
    with database.transaction() as conn:  # its next token takes a new row (a narrowing of its client forgot it)
        conn.execute(delete(status_grants))
    answers: dict[str, Any] = {}
    other = create_engine(issuer_postgres_url)
    try:
        with other.begin() as held:
            held.execute(text("LOCK TABLE status_grants IN SHARE MODE"))  # the refresh waits at its insert

            def refresh() -> None:
                form = {
                    "grant_type": "refresh_token",
                    "client_id": APP,
                    "refresh_token": first.get_json()["refresh_token"],
                }
                answers["refresh"] = client.post("/token", data=form)

            def narrow() -> None:
                answers["narrowed"] = UserStore(database, extensions.of(app).users.hasher).update(
                    "alice", scope="profile"
                )

            refreshing = threading.Thread(target=refresh)
            refreshing.start()
            time.sleep(1.0)  # it read alice and waits for the table
            narrowing = threading.Thread(target=narrow)
            narrowing.start()
            time.sleep(1.0)  # the narrowing ran (or waits for the refresh)
        refreshing.join(timeout=20)
        narrowing.join(timeout=20)
    finally:
        other.dispose()
    assert answers["narrowed"].scopes == frozenset({"profile"})
    refreshed = answers["refresh"]
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    claims = jwt.decode(refreshed.get_json()["access_token"], options={"verify_signature": False})
    with app.app_context():
        revoked = statuslist.current().revoked(claims)
    assert "admin" not in claims["scope"].split() or revoked, f"a token of {claims['scope']!r} outlived the narrowing"
