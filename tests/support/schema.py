"""A small JSON Schema check: the keywords docs/audit-event.schema.json uses, as draft 2020-12 defines them.

jsonschema is not among the locked dependencies; this covers `type`, `const`, `enum`,
`pattern`, `minLength`, `maxLength`, `minimum`, `minItems`, `items`, `properties`, `required`,
`additionalProperties` (false), `allOf`, `if`/`then` and `not`, and refuses any other keyword
so that the schema cannot quietly use one it does not check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

AUDIT_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "audit-event.schema.json"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
}
_ANNOTATIONS = {"$schema", "title", "description"}
_KEYWORDS = {
    "type",
    "const",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "minItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "allOf",
    "if",
    "then",
    "not",
}


def audit_schema() -> dict[str, Any]:
    """Return the audit line's schema."""
    schema: dict[str, Any] = json.loads(AUDIT_SCHEMA.read_text(encoding="utf-8"))
    return schema


def errors(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Return why `instance` does not match `schema` (empty when it does)."""
    unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"{path}: the schema uses keywords this check does not know: {sorted(unknown)}")
    found: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        wanted = _TYPES[kind]
        if not isinstance(instance, wanted) or (kind == "integer" and isinstance(instance, bool)):
            return [f"{path}: {instance!r} is not of type {kind}"]
    if "const" in schema and not _same(instance, schema["const"]):
        found.append(f"{path}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and not any(_same(instance, option) for option in schema["enum"]):
        found.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            found.append(f"{path}: {instance!r} does not match {schema['pattern']}")
        if len(instance) < schema.get("minLength", 0) or len(instance) > schema.get("maxLength", len(instance)):
            found.append(f"{path}: {instance!r} has a length out of bounds")
    if isinstance(instance, int) and not isinstance(instance, bool) and instance < schema.get("minimum", instance):
        found.append(f"{path}: {instance} is below {schema['minimum']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            found.append(f"{path}: fewer than {schema['minItems']} items")
        for index, item in enumerate(instance):
            found += errors(item, schema.get("items", {}), f"{path}[{index}]")
    if isinstance(instance, dict):
        found += [f"{path}: {name!r} is required" for name in schema.get("required", ()) if name not in instance]
        properties = schema.get("properties", {})
        for name, value in instance.items():
            if name in properties:
                found += errors(value, properties[name], f"{path}.{name}")
            elif schema.get("additionalProperties", True) is False:
                found.append(f"{path}: {name!r} is not allowed")
    for part in schema.get("allOf", ()):
        found += errors(instance, part, path)
    if "if" in schema and not errors(instance, schema["if"], path):
        found += errors(instance, schema.get("then", {}), path)
    if "not" in schema and not errors(instance, schema["not"], path):
        found.append(f"{path}: matches what is forbidden: {schema['not']}")
    return found


def _same(a: Any, b: Any) -> bool:
    """Compare as JSON does: true is not 1."""
    return type(a) is type(b) and a == b
