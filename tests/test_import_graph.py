"""The package's import graph has no cycle: every ``lightning_mp3d`` import in every module (at module level or inside a
function, where a lazy import only hides a cycle) is an edge, read from the source with ``ast``, and the graph over
modules is acyclic; and every module imports on its own."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import lightning_mp3d

PACKAGE = "lightning_mp3d"
MODULES = sorted(m.name for m in pkgutil.walk_packages(lightning_mp3d.__path__, f"{PACKAGE}."))


def _source(module: str) -> Path:
    root = Path(lightning_mp3d.__file__).parent.parent
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from a import b`` is an edge to ``a.b`` when that is a module)."""
    known = set(MODULES) | {PACKAGE}
    graph: dict[str, set[str]] = {}
    for module in known:
        path = _source(module)
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in known and t != module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert graph["lightning_mp3d.evaluation"], "the graph reader found no edges: it is broken, not the package clean"
    assert cycles(graph) == []


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)
