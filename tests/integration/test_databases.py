"""The PostgreSQL and Redis fixtures start real servers that keep what they are given."""

from __future__ import annotations

import psycopg
import pytest
import redis

SEEN: dict[str, str] = {}


def test_postgres_keeps_a_table_written_through_psycopg(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://postgres:")
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO users VALUES (%s, %s), (%s, %s)", (1, "alice", 2, "bob"))
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT id, name FROM users ORDER BY id").fetchall()
    assert rows == [(1, "alice"), (2, "bob")]


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_database_of_its_own(postgres_url: str, turn: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        conn.execute("CREATE TABLE marker (turn text)")  # would clash if the next test saw it
    assert name is not None
    assert tables == (0,)
    assert name[0] not in SEEN.values()
    SEEN[turn] = name[0]


def test_postgres_listens_on_loopback_only(postgres_server: str) -> None:
    with psycopg.connect(postgres_server) as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), current_setting('fsync')").fetchone()
    assert row == ("127.0.0.1", "off")


def test_redis_keeps_a_value_set(redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(redis_server)
    try:
        assert client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()
