"""The modules of include/ import each other in layers: no circle, not even through an import inside a
function (which only hides one), so each module can be read knowing only the ones below it."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def modules() -> dict[str, Path]:
    found = {}
    for path in INCLUDE.rglob("*.py"):
        parts = list(path.relative_to(INCLUDE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's own modules `name` imports, anywhere in its file; `from a import b` names a.b when
    that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: the package uses absolute imports only"
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
    return {m for m in found if m in known and m != name}


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return []


def test_the_modules_of_include_import_each_other_without_a_circle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert "es_export_airflow.dispatch" in graph["es_export_airflow.batch_sensor"]  # the graph sees imports
    assert find_circle(graph) == []


def test_a_circle_is_found():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
