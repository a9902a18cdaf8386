"""The dependency rule between the top-level packages (docs/architecture.md), checked on imports.

orchestration -> pipelines -> features; trainers -> features only (never Spark).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "features": {"pipelines", "orchestration", "trainers", "dagster", "apache_beam", "great_expectations", "torch"},
    "pipelines": {"orchestration", "trainers", "dagster", "torch"},
    "trainers": {"pipelines", "orchestration", "pyspark", "dagster", "apache_beam", "great_expectations"},
    "orchestration": {"trainers"} - {"trainers"},  # the outermost layer may import any other
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "layer rule broken:\n" + "\n".join(offenders)
