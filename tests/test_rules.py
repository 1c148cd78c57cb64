"""The layering rules of ARCHITECTURE.md, checked on the source (AST, no imports run).

- no step imports another step (relative imports count);
- only the `pipeline/tracking` package imports mlflow, only `pipeline/study` imports optuna;
- the torch-and-numpy layers (data, augment, models, engine, metrics, plots) import neither
  tracking nor study nor a step, so they run where MLflow is not installed (the GPU machine);
- no function in pipeline/ is longer than 60 lines; pipeline/steps/ stays under 800 lines.
Each rule is also run on a small bad example, so a rule that can never fail fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
MAX_FUNCTION_LINES = 60
MAX_STEPS_LINES = 800
LOWER_LAYERS = (
    "data",
    "augment",
    "models",
    "engine",
    "metrics",
    "plots",
    "values",
    "config",
    "files",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module an import statement of `source` names (for
    `from a import b`: both a and a.b, since b may be a module)."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def long_functions(source: str) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append((node.name, length))
    return out


def sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, module_name(path), path.read_text()


def step_imports_step(module: str, names: set[str]) -> set[str]:
    if not module.startswith("pipeline.steps."):
        return set()
    steps = {n for n in names if n.startswith("pipeline.steps.") and n.count(".") == 2}
    return steps - {module}


def forbidden_library(module: str, names: set[str], library: str, home: str) -> bool:
    uses = any(n == library or n.startswith(f"{library}.") for n in names)
    return uses and not (module == home or module.startswith(f"{home}."))


def lower_layer_imports_upper(module: str, names: set[str]) -> set[str]:
    if module.split(".")[1:2] and module.split(".")[1] not in LOWER_LAYERS:
        return set()
    upper = ("pipeline.tracking", "pipeline.study", "pipeline.steps", "mlflow", "optuna")
    return {n for n in names if n.startswith(upper)}


def violations(path_module_sources) -> list[str]:
    out = []
    for path, module, source in path_module_sources:
        names = imports(source, module, path.name == "__init__.py")
        for other in sorted(step_imports_step(module, names)):
            out.append(f"{module} imports the step {other}")
        for library, home in (("mlflow", "pipeline.tracking"), ("optuna", "pipeline.study")):
            if forbidden_library(module, names, library, home):
                out.append(f"{module} imports {library} (only {home} may)")
        for name in sorted(lower_layer_imports_upper(module, names)):
            out.append(f"{module} (a lower layer) imports {name}")
        for function, length in long_functions(source):
            out.append(f"{module}.{function} is {length} lines (max {MAX_FUNCTION_LINES})")
    return out


def test_the_package_keeps_the_rules():
    assert violations(sources()) == []


def test_the_steps_stay_thin():
    total = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "steps").glob("*.py"))
    assert total <= MAX_STEPS_LINES, total


BAD = {
    "pipeline.steps.train": "from . import tune\nfrom .main import main\n",
    "pipeline.steps.compare": "import pipeline.steps.prepare\n",
    "pipeline.fit": "import mlflow.pytorch\n",
    "pipeline.leaderboard": "from optuna import trial\n",
    "pipeline.engine": "from pipeline import tracking\n",
    "pipeline.models.cnn": "from pipeline.study import space\n",
    "pipeline.report": "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES,
}


@pytest.mark.parametrize("module", sorted(BAD))
def test_each_rule_catches_a_bad_example(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    assert violations([(path, module, BAD[module])]), module


def test_allowed_imports_pass():
    ok = [
        (PACKAGE / "tracking" / "log.py", "pipeline.tracking.log", "import mlflow\n"),
        (PACKAGE / "study" / "search.py", "pipeline.study.search", "import optuna\n"),
        (PACKAGE / "steps" / "train.py", "pipeline.steps.train", "from pipeline import fit\n"),
    ]
    assert violations(ok) == []
