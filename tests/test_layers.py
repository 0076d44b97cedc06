"""Imports run one way: neural.common <- neural <- pipelines <- cache <- logic <- experiments.

Every module of the five packages is parsed (``ast``), imports inside functions
included, because a lazy import reaches up the layers just as much as a
top-level one does; it only hides the dependency until a code path runs.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# bottom first: a package may import only the packages at or below it
LAYERS = ("neural", "pipelines", "cache", "logic", "experiments")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute dotted name a (possibly relative) ``from`` import refers to."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        parts.append("__init__")  # relative imports resolve against the package itself
    return ".".join(parts)


def imported_packages(path: Path, root: Path = ROOT, layers=LAYERS) -> list[tuple[int, str]]:
    """(line, dotted name) for every import of a project package in the file."""
    module = module_name(path, root)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [_resolve(module, node)]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in layers:
                found.append((node.lineno, name))
    return found


def layer_violations(layers=LAYERS, root=ROOT) -> list[str]:
    rank = {name: i for i, name in enumerate(layers)}
    bad = []
    for package in layers:
        for path in sorted((root / package).rglob("*.py")):
            for line, name in imported_packages(path, root, layers):
                if rank[name.split(".")[0]] > rank[package]:
                    bad.append(f"{path.relative_to(root)}:{line} imports {name}")
    return bad


def package_graph(layers=LAYERS, root=ROOT) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in layers}
    for package in layers:
        for path in (root / package).rglob("*.py"):
            for _, name in imported_packages(path, root, layers):
                top = name.split(".")[0]
                if top != package:
                    graph[package].add(top)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in the package graph, as a path, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_reaches_up(package):
    bad = [v for v in layer_violations() if v.startswith(package + "/")]
    assert not bad, "imports against the order " + " <- ".join(LAYERS) + ":\n" + "\n".join(bad)


def test_the_bottom_module_imports_nothing_of_the_project():
    """``neural/common.py`` (errors, vocabulary, atomic files, config helpers) is what every layer may
    import, so it may import none of them."""
    assert imported_packages(ROOT / "neural" / "common.py") == []


def test_no_cycles_between_packages():
    assert find_cycle(package_graph()) is None


def test_the_checker_sees_function_level_relative_and_cyclic_imports(tmp_path):
    """The checker itself: a lazy import inside a function, a relative import that
    climbs out of its package, and a two-package cycle are all caught."""
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    (tmp_path / "low" / "__init__.py").write_text("")
    (tmp_path / "high" / "__init__.py").write_text("import low\n")
    (tmp_path / "low" / "lazy.py").write_text("def f():\n    from high.x import y\n    return y\n")
    (tmp_path / "low" / "rel.py").write_text("from ..high import z\n")
    found = layer_violations(("low", "high"), root=tmp_path)
    assert found == ["low/lazy.py:2 imports high.x", "low/rel.py:1 imports high"]
    assert find_cycle(package_graph(("low", "high"), root=tmp_path)) == ["high", "low", "high"]


MAX_LINES = 400


def test_modules_stay_small():
    big = [f"{p.relative_to(ROOT)}: {n} lines"
           for package in LAYERS for p in sorted((ROOT / package).rglob("*.py"))
           if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not big, f"modules over {MAX_LINES} lines (split them by responsibility):\n" + "\n".join(big)
