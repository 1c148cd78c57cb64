"""Packaging: conda.yaml agrees with pyproject.toml, and every third-party package that
pipeline/ imports is declared."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "skops": "skops"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower()


def test_conda_yaml_lists_the_same_dependencies():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]
    assert [p for p in pip if p != "-e ."] == pyproject()["project"]["dependencies"]
    python = next(d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python"))
    floor = re.search(r">=(\d+\.\d+)", pyproject()["project"]["requires-python"]).group(1)
    assert python == f"python={floor}"


def test_every_imported_package_is_declared():
    project = pyproject()["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    declared = {name_of(r) for r in [*project["dependencies"], *extras]}  # ray is an extra
    imported = set()
    for path in (ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"pipeline"}
    missing = {DISTRIBUTIONS.get(m, m) for m in third_party} - declared
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_python_floor_covers_the_standard_library_used():
    assert ">=3.11" in pyproject()["project"]["requires-python"]  # tomllib
