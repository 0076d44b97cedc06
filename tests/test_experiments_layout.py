"""experiments/ is organised in sub-packages whose imports run one way:

    reports  <-  harness  <-  query, tools  <-  commands (and cli)

A report reads the results dict and never the loop that wrote it; a tool stands
alone beside the harness (it may use the harness's leaf helpers: run files,
metrics); only the commands see everything. Imports inside functions count too.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "experiments"
#: What each sub-package must not import (module prefixes). The query binds a run's networks with
#: the harness's binding and predicates, so it sits above the harness and may import them.
FORBIDDEN = {
    "reports": ("experiments.harness", "experiments.query", "experiments.tools", "experiments.commands",
                "experiments.cli"),
    "harness": ("experiments.query", "experiments.tools", "experiments.commands", "experiments.cli"),
    "query": ("experiments.tools", "experiments.commands", "experiments.cli"),
    "tools": ("experiments.harness", "experiments.reports", "experiments.query", "experiments.commands",
              "experiments.cli"),
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path):
            for prefix in FORBIDDEN[package]:
                if module == prefix or module.startswith(prefix + "."):
                    bad.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    assert (ROOT / package / "__init__.py").is_file()
    assert violations(package) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path, monkeypatch):
    """The rule is not vacuous: a lazy import of the harness from a report is caught."""
    fake = tmp_path / "experiments"
    (fake / "reports").mkdir(parents=True)
    (fake / "reports" / "bad.py").write_text("def f():\n    from experiments.harness.image_stage0 import Predicates\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    assert violations("reports") == ["experiments/reports/bad.py imports experiments.harness.image_stage0"]
