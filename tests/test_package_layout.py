"""The layout the README promises: the plugin contract at the top of the package, the parts
below it in subpackages, and no import circles, counting lazy imports inside functions (they
still make two modules depend on each other) but not ``TYPE_CHECKING`` blocks (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import leakbench

PACKAGE = Path(leakbench.__file__).parent
CONTRACT = {"leakbench", "leakbench.types", "leakbench.hookspecs", "leakbench.registry", "leakbench.errors"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """leakbench modules imported anywhere in ``tree`` outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from leakbench.results import leaderboard` imports a module
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    """Who imports whom, by explicit imports (a package's ``__init__`` gathering its modules is
    an edge from the package to them, not back)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        graph[name] = _imports(ast.parse(path.read_text()), modules) - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles_between_modules():
    assert _cycles(_graph()) == []


def test_the_contract_does_not_reach_into_the_parts_below_it():
    """types, hookspecs, registry and errors are what a plugin author reads; they stand alone
    (the registry may load the built-in plugins through their entry points, never by import)."""
    graph = _graph()
    for module in CONTRACT:
        below = {d for d in graph[module] if d not in CONTRACT}
        assert not below, f"{module} imports {sorted(below)}"


def test_every_part_is_a_subpackage_and_the_top_holds_only_the_contract():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert {f"leakbench.{m}" for m in top} == CONTRACT - {"leakbench"}
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == {
        "cli", "data", "engine", "results", "runs"}


def test_the_parts_follow_the_data_flow():
    """What the README promises: each part imports only the contract and the parts before it
    (data -> engine -> results -> runs -> cli), so a reader can go top to bottom."""
    order = ["data", "engine", "results", "runs", "cli"]

    def part(module: str) -> str | None:
        pieces = module.split(".")
        return pieces[1] if len(pieces) > 1 and pieces[1] in order else None

    backwards = [(module, dep) for module, deps in _graph().items() if part(module)
                 for dep in deps if part(dep) and order.index(part(dep)) > order.index(part(module))]
    assert backwards == []
