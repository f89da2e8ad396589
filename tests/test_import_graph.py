"""The library's import graph: no circle inside harness/, and nothing in harness/ imports the zoo.

Read from the source (ast), so every import counts, function-level and ``TYPE_CHECKING`` ones included: a
circle hidden inside a function is still a circle, only deferred to the first call. The zoo (the folder
``models/``, installed as ``harness_zoo``) imports the harness and registers itself with it through the
``harness.zoo`` entry points; the harness never imports it, so there is no circle between the two either.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "harness"
ZOO_PACKAGES = ("harness_zoo", "models")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(LIBRARY.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in its body; ``from package import module`` names the module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


GRAPH = {name: {target for target in imported(name, path) if target in MODULES and target != name}
         for name, path in MODULES.items()}  # fmt: skip


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_every_library_module():
    assert {"harness.cli", "harness.config", "harness.loading", "harness.registry", "harness.checks.base"} <= set(GRAPH)
    assert "harness.config" in GRAPH["harness.cli"]  # the reader sees module-level imports ...
    assert "harness.registry" in GRAPH["harness.loading"]  # ... and function-level ones


def test_the_cycle_finder_finds_a_circle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_inside_harness():
    assert cycles(GRAPH) == [], "import circles (each a set of modules that import each other)"


def test_nothing_in_harness_imports_the_zoo():
    offenders = {
        name: sorted(target for target in imported(name, path) if target.split(".")[0] in ZOO_PACKAGES)
        for name, path in MODULES.items()
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}
    mentions = [str(path.relative_to(REPO)) for path in MODULES.values() if "harness_zoo" in path.read_text()]
    assert mentions == []  # not even by name in a string: the zoo registers itself


def test_the_zoo_registers_itself_through_an_entry_point():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["harness.zoo"]
    assert declared == {"reference": "harness_zoo:ZOO"}
    import harness_zoo
    from harness.loading import zoo_names

    assert set(harness_zoo.ZOO) <= set(zoo_names())  # through the entry point (or conftest.py, not installed)
