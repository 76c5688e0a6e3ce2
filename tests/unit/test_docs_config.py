"""docs/configuration.md says what the code does: every configuration key, DAG param and DAG-file
environment variable it documents has the code's default, and each limit it states ("at most N",
"1 to N") is the one the code enforces. The tables are read from the page and compared with the
dataclass, the parsed DAGs' params and the source, so the docs cannot drift again."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from es_export.config import ExportConfig
from es_export.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "configuration.md").read_text()


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after a heading line."""
    start = PAGE.index(heading)
    rows = []
    for line in PAGE[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[0]) <= {"-", " "} and cells[0] not in ("key", "param", "variable"):
                rows.append(cells)
        elif rows:
            return rows
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def values(cell: str, count: int) -> list[str]:
    parts = [p.strip().strip("`") for p in re.split(r",\s*", cell)]
    return parts if len(parts) == count else [cell.strip("`")] * count


def literal(text: str):
    """A documented default as a value; NotImplemented for prose ("the data interval's start")."""
    if text in ("none", "empty", "unset"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"[\w.\-*/ ]+", text) and " " not in text.strip():
        return text
    return NotImplemented


VARIABLE = {key: (default, meaning) for cells in table_after("## The Variable `es_message_export_config`")
            for key, default in zip(names(cells[0]), values(cells[1], len(names(cells[0]))), strict=True)
            for meaning in [cells[2]]}


def test_every_configuration_key_is_documented_with_its_default():
    defaults = {f.name: f.default for f in fields(ExportConfig)}
    assert set(VARIABLE) == set(defaults), "documented keys differ from ExportConfig's fields"
    for key, (documented, _) in VARIABLE.items():
        expected = literal(documented)
        assert expected is NotImplemented or expected == (
            defaults[key].value if hasattr(defaults[key], "value") else defaults[key]), (key, documented)


def limits() -> list[tuple[str, int, int]]:
    """(key, lowest, highest) for each key whose meaning says "(L to H)" or "at most N"."""
    found = []
    for key, (_, meaning) in VARIABLE.items():
        if m := re.search(r"\((\d+) to (\d+)\)", meaning):
            found.append((key, int(m.group(1)), int(m.group(2))))
        elif m := re.search(r"\bat most (\d+)\b(?! bytes)", meaning):
            found.append((key, 1, int(m.group(1))))
    return found


@pytest.mark.parametrize(("key", "low", "high"), limits())
def test_every_documented_limit_is_the_one_the_code_enforces(key, low, high):
    ExportConfig(**{key: high})
    ExportConfig(**{key: low})
    with pytest.raises(ConfigError, match=key):
        ExportConfig(**{key: high + 1})


@pytest.mark.parametrize(("dag_id", "heading"), [
    ("es_message_export", "### `es_message_export` (trigger form)"),
    ("es_message_retry", "### `es_message_retry`"),
])
def test_every_dag_param_is_documented_with_its_default(dag_id, heading):
    from support import parse_dag

    params = parse_dag(dag_id).params
    documented = {name: default for cells in table_after(heading)
                  for name, default in zip(names(cells[0]), values(cells[1], len(names(cells[0]))), strict=True)}
    assert set(documented) == set(params.keys()), dag_id
    for name, default in documented.items():
        expected = literal(default)
        assert expected is NotImplemented or expected == params[name], (dag_id, name, default, params[name])


def test_every_dag_file_environment_variable_has_the_code_default():
    source = "\n".join(p.read_text() for folder in ("include", "dags", "plugins")
                       for p in (ROOT / folder).rglob("*.py"))
    rows = table_after("### Read when the DAG files are parsed")
    assert rows
    for cells in rows:
        for name in names(cells[0]):
            assert f'"{name}"' in source, f"{name} is documented but the code never reads it"
            found = re.search(rf'os\.environ\.get\("{name}",\s*"([^"]*)"\)', source)
            documented = cells[1].strip("`")
            if found and found.group(1) and literal(documented) is not NotImplemented:
                assert literal(found.group(1)) == literal(documented), (name, found.group(1), documented)
