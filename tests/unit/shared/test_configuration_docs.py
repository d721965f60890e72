"""docs/configuration.md lists exactly the variables each service reads, with their defaults.

The lists come from the settings themselves (`variables()`, declared once with
`jwt_verifier.env.setting`), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from issuer.settings import IssuerSettings
from jwt_verifier.env import Variable
from reports_api import ReportsSettings
from resource_server.settings import ResourceSettings

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
SERVICES = {
    "Issuer": IssuerSettings.variables,
    "Resource": ResourceSettings.variables,
    "Reports API": ReportsSettings.variables,
}
ROW = re.compile(r"^\| (`[A-Z0-9_]+`(?: / `[A-Z0-9_]+`)*) \| ([^|]*) \|")


def _documented(section: str) -> dict[str, str]:
    """Return each variable of a `## section` of the document, with the start of its default cell."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in body.splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        names = [name.strip("`") for name in match[1].split(" / ")]
        cell = match[2].strip()
        # `A` / `B` | `1` / `2`: one default each.
        defaults = cell.split(" / ") if len(names) > 1 else [cell]
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"{name} is documented twice"
            rows[name] = default
    return rows


@pytest.mark.parametrize("section", SERVICES)
def test_the_document_lists_exactly_the_variables_the_service_reads(section: str) -> None:
    read = {variable.name for variable in SERVICES[section]()}
    documented = set(_documented(section))
    assert sorted(read - documented) == [], "read but not documented"
    assert sorted(documented - read) == [], "documented but not read"


@pytest.mark.parametrize("section", SERVICES)
def test_the_document_gives_each_variables_default(section: str) -> None:
    documented = _documented(section)
    variables: list[Variable] = SERVICES[section]()
    for variable in variables:
        cell = documented[variable.name]
        if variable.default:
            assert cell.startswith(f"`{variable.default}`"), f"{variable.name}: {cell!r} should start with the default"
        else:
            # No value: unset, empty, or generated; the cell says so in words.
            assert not cell.startswith("`"), f"{variable.name}: {cell!r} names a default the code does not have"
