"""Unit tests for shared.jsonread: a peer's JSON either parses or raises ValueError."""

from __future__ import annotations

import pytest

from shared.jsonread import read_json


def test_json_is_parsed() -> None:
    assert read_json(b'{"keys": [1, "two"]}') == {"keys": [1, "two"]}


@pytest.mark.parametrize(
    "data",
    [b"[" * 20_000 + b"]" * 20_000, b'{"a": ' + b"{" * 20_000, b"", b"not json", b"\xff\xfe\xfd", b'{"a": 1'],
    ids=["nested-arrays", "nested-objects", "empty", "text", "not-utf8", "truncated"],
)
def test_anything_unreadable_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: that is the whole contract
        read_json(data)
