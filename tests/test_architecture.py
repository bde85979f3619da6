"""The layout is the architecture: data flows one way, and these tests keep it so.

Only imports at module level count (a connector's SDK or a sibling loaded inside a function
is how heavy parts stay lazy, and cannot make an import circle at start-up).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "src" / "funnelvalue"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the funnelvalue modules it imports at module level."""
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("funnelvalue"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else str(node.module))
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("funnelvalue")}
        graph[name] = found - {name}
    return graph


GRAPH = _imports()


def _reaches(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in GRAPH.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_there_are_no_import_circles() -> None:
    circles = sorted(name for name in GRAPH if name in _reaches(name))
    assert circles == []


@pytest.mark.parametrize(
    "bottom", ["funnelvalue.vocabulary", "funnelvalue.redact", "funnelvalue.frames"]
)
def test_the_shared_words_depend_on_nothing(bottom: str) -> None:
    assert GRAPH[bottom] == set()


def test_errors_depend_only_on_redaction() -> None:
    assert GRAPH["funnelvalue.errors"] == {"funnelvalue.redact"}


UPPER = {
    "funnelvalue.cli",
    "funnelvalue.pipeline",
    "funnelvalue.inspection",
    "funnelvalue.doctor",
    "funnelvalue.report",
    "funnelvalue.htmlreport",
}


@pytest.mark.parametrize("layer", ["sources", "destinations", "ledger"])
def test_parts_never_import_the_orchestrator_or_the_renderers(layer: str) -> None:
    parts = [name for name in GRAPH if name.startswith(f"funnelvalue.{layer}")]
    assert parts
    assert {name: sorted(_reaches(name) & UPPER) for name in parts} == {name: [] for name in parts}


def test_sources_and_destinations_do_not_know_each_other_or_the_ledger() -> None:
    for name in GRAPH:
        reached = _reaches(name)
        if name.startswith("funnelvalue.sources"):
            assert not any(
                r.startswith(("funnelvalue.destinations", "funnelvalue.ledger")) for r in reached
            ), name
        if name.startswith("funnelvalue.destinations"):
            assert not any(
                r.startswith(("funnelvalue.sources", "funnelvalue.ledger")) for r in reached
            ), name


def test_the_cli_only_parses_calls_and_renders() -> None:
    allowed = {
        "funnelvalue",  # __version__
        "funnelvalue.doctor",
        "funnelvalue.errors",
        "funnelvalue.inspection",
        "funnelvalue.mapping",
        "funnelvalue.pipeline",
        "funnelvalue.progress",
        "funnelvalue.redact",
        "funnelvalue.report",
        "funnelvalue.settings",
        "funnelvalue.stopping",
    }
    assert GRAPH["funnelvalue.cli"] <= allowed
