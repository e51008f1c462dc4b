"""robustcheck's modules import one another without cycles, function-level imports included.

A cycle works only as long as nobody reorders an import; it also says that two modules know
each other's internals. Every ``import`` and ``from ... import`` statement counts, at any
level (inside functions and ``if TYPE_CHECKING:`` blocks too), relative names resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "robustcheck"


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules one module imports, by any statement at any level."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_is_built_from_every_statement(tmp_path: Path) -> None:
    graph = import_graph()
    assert "robustcheck.registry" in graph["robustcheck.spec"] or any(
        "robustcheck.registry" in graph[m] for m in graph if m.startswith("robustcheck.spec.")
    )
    # a function-level import counts: the registry loads the built-ins inside manager()
    assert "robustcheck.builtin" in graph["robustcheck.registry"]
    # a relative import resolves, a name imported from a package resolves to its module
    module = tmp_path / "y.py"
    module.write_text(
        "from . import z\nfrom ..registry import table\n"
        "def f():\n    from robustcheck.checks import base\n"
    )
    known = {"robustcheck.x.z", "robustcheck.registry", "robustcheck.checks"}
    graph_of = imports_of("robustcheck.x.y", module, known | {"robustcheck.checks.base"})
    assert graph_of == {"robustcheck.x.z", "robustcheck.registry", "robustcheck.checks.base"}


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
