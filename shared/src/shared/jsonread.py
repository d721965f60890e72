"""Read JSON that a peer sent: any failure to parse it, however deep it nests, is a ValueError.

Every input is hostile, the issuer's answers included: `json.loads` raises RecursionError (not
ValueError) on arrays nested deeper than the interpreter's stack allows, which fit easily in a
few kilobytes. Callers treat every failure here as "the peer answered nonsense".
"""

from __future__ import annotations

import json
from typing import Any


def read_json(data: bytes) -> Any:
    """Parse UTF-8 JSON from a peer, raising ValueError on anything it cannot read."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("the JSON is nested too deeply") from exc
