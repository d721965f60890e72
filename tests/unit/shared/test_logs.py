"""Unit tests for shared.logs: one JSON object per line, tagged with the request id."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from typing import Any

import pytest
from flask import Flask, g

from shared import logs
from shared.logs import JsonFormatter, RequestIdFilter


def _record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), **attrs: Any) -> logging.LogRecord:
    record = logging.LogRecord("issuer.tokens", logging.WARNING, __file__, 1, msg, args, None)
    for name, value in attrs.items():
        setattr(record, name, value)
    return record


def test_formatter_writes_one_json_line_with_the_basics() -> None:
    line = JsonFormatter("issuer").format(_record())
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "hello world"
    assert (entry["level"], entry["service"], entry["logger"]) == ("warning", "issuer", "issuer.tokens")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert "request_id" not in entry


def test_formatter_merges_fields_and_request_id() -> None:
    entry = json.loads(
        JsonFormatter("resource").format(_record(request_id="req-7", fields={"sub": "alice", "kid": "k1"}))
    )
    assert (entry["request_id"], entry["sub"], entry["kid"]) == ("req-7", "alice", "k1")


def test_formatter_ignores_fields_that_are_not_a_dict() -> None:
    entry = json.loads(JsonFormatter("issuer").format(_record(fields=["not", "a", "dict"])))
    assert "not" not in entry
    assert entry["msg"] == "hello world"


def test_formatter_renders_values_json_cannot_as_text() -> None:
    entry = json.loads(JsonFormatter("issuer").format(_record(fields={"when": object})))
    assert entry["when"] == str(object)


def test_formatter_includes_the_exception() -> None:
    try:
        raise ValueError("kaput")
    except ValueError:
        record = _record(exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter("issuer").format(record))
    assert "ValueError: kaput" in entry["exc"]


def test_request_id_filter_tags_records_inside_a_request() -> None:
    app = Flask(__name__)
    record = _record()
    with app.test_request_context("/"):
        g.request_id = "abc123"
        assert RequestIdFilter().filter(record) is True
    assert record.request_id == "abc123"  # type: ignore[attr-defined]


def test_request_id_filter_leaves_records_outside_a_request_alone() -> None:
    record = _record()
    assert RequestIdFilter().filter(record) is True
    assert not hasattr(record, "request_id")


def test_configure_sends_json_lines_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("issuer", "DEBUG")
    logging.getLogger("issuer.test").debug("configured", extra={"fields": {"kid": "k9"}})
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert (entry["service"], entry["msg"], entry["kid"], entry["level"]) == ("issuer", "configured", "k9", "debug")


def test_configure_sets_the_level_and_quietens_werkzeug(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("resource", "WARNING")
    logging.getLogger("resource.test").info("dropped")
    logging.getLogger("werkzeug").info("also dropped")
    assert stream.getvalue() == ""
    assert logging.getLogger("werkzeug").level == logging.WARNING
