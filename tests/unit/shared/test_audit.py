"""Unit tests for shared.audit: a fixed list of events and fields, one schema-valid JSON line each."""

from __future__ import annotations

import getpass
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from shared import audit, web
from shared.logs import JsonFormatter, RequestIdFilter
from tests.support.schema import audit_schema, errors

DOCS = Path(__file__).resolve().parents[3] / "docs" / "observability.md"


@pytest.fixture
def trail() -> Iterator[io.StringIO]:
    """Collect the audit logger's lines as the services write them (JSON, request id filter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("issuer"))
    handler.addFilter(RequestIdFilter())
    audit.log.addHandler(handler)
    try:
        yield stream
    finally:
        audit.log.removeHandler(handler)


@pytest.fixture
def command_line() -> Iterator[None]:
    """Undo `use_command_line` after the test: it marks the whole process."""
    handlers, propagate = list(audit.log.handlers), audit.log.propagate
    try:
        yield
    finally:
        audit._Process.source, audit._Process.actor = "system", None
        audit.log.handlers[:] = handlers
        audit.log.propagate = propagate


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _valid(entry: dict[str, Any]) -> dict[str, Any]:
    assert errors(entry, audit_schema()) == []
    assert entry["msg"] == entry["event"]
    return entry


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    web.init_app(app)
    audit.init_app(app, address=lambda: "203.0.113.7")

    @app.post("/login")
    def login() -> str:
        audit.emit("login.failed", subject="alice", client="cli")
        return "no"

    @app.get("/tick")
    def tick() -> str:
        audit.emit("key.activated", kid="k" * 43, source="system")
        return "ok"

    return app


def test_emit_writes_one_schema_valid_line_per_event_outside_a_request(trail: io.StringIO) -> None:
    audit.emit("key.staged", kid="A" * 43)
    (entry,) = _lines(trail)
    assert _valid(entry)["audit"] is True
    assert (entry["logger"], entry["event"], entry["source"], entry["kid"]) == (
        "jwt_split.audit",
        "key.staged",
        "system",
        "A" * 43,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])  # RFC 3339, UTC


def test_a_request_gives_the_source_address_request_id_and_endpoint(app: Flask, trail: io.StringIO) -> None:
    response = app.test_client().post("/login", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200
    (entry,) = _lines(trail)
    assert _valid(entry)["source"] == "http"
    assert (entry["address"], entry["request_id"], entry["endpoint"]) == ("203.0.113.7", "req-42", "login")
    assert (entry["subject"], entry["client"]) == ("alice", "cli")


def test_a_step_the_service_takes_on_its_own_in_a_request_is_system_without_an_address(
    app: Flask, trail: io.StringIO
) -> None:
    app.test_client().get("/tick", headers={"X-Request-ID": "req-43"})
    (entry,) = _lines(trail)
    assert _valid(entry)["source"] == "system"
    assert "address" not in entry
    assert entry["request_id"] == "req-43"


def test_without_an_address_rule_the_peer_is_the_address(trail: io.StringIO) -> None:
    app = Flask(__name__)
    audit.init_app(app)
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "198.51.100.2"}):
        audit.emit("rate_limit.hit", limit="password-address")
    assert _lines(trail)[0]["address"] == "198.51.100.2"


@pytest.mark.parametrize(
    ("event", "fields", "message"),
    [
        ("login.maybe", {}, "unknown audit event 'login.maybe'"),
        ("login.failed", {"password": "hunter2"}, "unknown audit fields ['password']"),
        ("login.failed", {"token": "x", "username": "y"}, "unknown audit fields ['token', 'username']"),
        ("token.revoked", {"tokens": "3"}, "audit field 'tokens' must be a int"),
        ("token.revoked", {"tokens": True}, "audit field 'tokens' must be a int"),
        ("user.changed", {"changes": "scope"}, "audit field 'changes' must be a list"),
        ("key.retired", {"kid": "k", "reason": "bored"}, "unknown audit reason 'bored'"),
        ("login.failed", {"source": "http"}, "only source='system' may be given"),
    ],
)
def test_emit_refuses_what_is_not_in_the_lists(
    trail: io.StringIO, event: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(audit.AuditError, match=re.escape(message)):
        audit.emit(event, **fields)
    assert trail.getvalue() == ""


def test_fields_given_as_none_are_left_out_and_long_values_cut(trail: io.StringIO) -> None:
    audit.emit("login.failed", subject=None, client="c" * 500)
    (entry,) = _lines(trail)
    assert "subject" not in entry
    assert entry["client"] == "c" * audit.MAX_TEXT


def test_the_operator_log_level_never_silences_the_trail(trail: io.StringIO) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        audit.emit("user.deleted", subject="carol", subject_id="0" * 32)
    finally:
        root.setLevel(level)
    assert _lines(trail)[0]["event"] == "user.deleted"


def test_a_command_is_source_cli_with_the_os_user_on_the_current_stderr(
    command_line: None, capsys: pytest.CaptureFixture[str]
) -> None:
    audit.use_command_line("issuer-cli")
    audit.use_command_line("issuer-cli")  # twice: still one handler, one line per event
    audit.emit("user.created", subject="carol", subject_id="f" * 32)
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    entry = _valid(json.loads(line))
    assert (entry["source"], entry["service"]) == ("cli", "issuer-cli")
    assert entry["actor"]
    assert "address" not in entry


def test_a_uid_without_a_name_is_named_by_its_number(monkeypatch: pytest.MonkeyPatch) -> None:
    def nameless() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", nameless)
    assert audit._os_user() == f"uid:{os.getuid()}"


def test_audit_lines_are_separable_from_access_lines(app: Flask) -> None:
    """One stream, as the services write it: the logger and the marker tell the trail apart."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("issuer"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        app.test_client().post("/login")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    entries = _lines(stream)
    trail = [e for e in entries if e.get("audit") is True]
    rest = [e for e in entries if "audit" not in e]
    assert [e["logger"] for e in trail] == ["jwt_split.audit"]
    assert [e["logger"] for e in rest] == ["access"]
    assert rest[0]["msg"] == "request"


def test_client_authentication_failures_and_replays_are_events_with_a_stable_reason(trail: io.StringIO) -> None:
    audit.emit("client.auth_failed", client="svc", reason="wrong_secret")
    audit.emit("client.auth_failed", reason="unknown_client")
    audit.emit("client.assertion_replayed", client="svc")
    lines = [_valid(entry) for entry in _lines(trail)]
    assert [(entry["event"], entry.get("client"), entry.get("reason")) for entry in lines] == [
        ("client.auth_failed", "svc", "wrong_secret"),
        ("client.auth_failed", None, "unknown_client"),
        ("client.assertion_replayed", "svc", None),
    ]
    with pytest.raises(audit.AuditError, match="unknown audit reason 'the secret was hunter2'"):
        audit.emit("client.auth_failed", reason="the secret was hunter2")


def test_the_schema_requires_a_reason_for_a_failure_and_a_client_for_a_replay() -> None:
    line = {
        "ts": "2026-12-01T23:00:00.000Z",
        "level": "info",
        "service": "issuer",
        "pid": 7,
        "logger": "jwt_split.audit",
        "msg": "client.auth_failed",
        "audit": True,
        "event": "client.auth_failed",
        "source": "system",
    }
    assert errors(line, audit_schema()) == ["$: 'reason' is required"]
    assert errors({**line, "reason": "unreadable"}, audit_schema()) != []  # a key step's reason
    assert errors({**line, "reason": "wrong_secret"}, audit_schema()) == []
    replay = {**line, "msg": "client.assertion_replayed", "event": "client.assertion_replayed"}
    assert errors(replay, audit_schema()) == ["$: 'client' is required"]


def test_schema_and_docs_name_every_event_and_field() -> None:
    schema = audit_schema()
    assert set(schema["properties"]["event"]["enum"]) == set(audit.EVENTS)
    assert set(audit.FIELDS) <= set(schema["properties"])
    assert schema["properties"]["reason"]["enum"] == list(audit.REASONS)
    docs = DOCS.read_text(encoding="utf-8")
    section = docs[docs.index("## Audit trail") :]
    missing = [name for name in [*audit.EVENTS, *schema["properties"]] if f"`{name}`" not in section]
    assert missing == []


def test_the_schema_check_refuses_a_line_with_a_field_it_does_not_know() -> None:
    line = {
        "ts": "2026-12-01T23:00:00.000Z",
        "level": "info",
        "service": "issuer",
        "pid": 7,
        "logger": "jwt_split.audit",
        "msg": "login.failed",
        "audit": True,
        "event": "login.failed",
        "source": "system",
    }
    assert errors(line, audit_schema()) == []
    assert errors({**line, "password": "x"}, audit_schema()) == ["$: 'password' is not allowed"]
    assert errors({**line, "source": "http"}, audit_schema()) == [
        "$: 'address' is required",
        "$: 'request_id' is required",
    ]
