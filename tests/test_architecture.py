"""The layout the package promises: data flows one way, dataset -> ... -> gate -> report."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_medrobust"
ENGINE = ["runner.py", "search.py", "cache.py", "metrics.py", "occlusion", "datasets", "models", "gate"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            prefix = "." * node.level + (node.module or "")
            found.add(prefix)
            # `from . import reporting` names the module in the alias, not in node.module
            found.update(f"{prefix}{'' if prefix.endswith('.') else '.'}{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _modules(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("entry", ENGINE)
def test_engine_modules_do_not_import_reporting_or_the_plugin(entry):
    for module in _modules(entry):
        bad = {i for i in _imports(module) if "reporting" in i or i.rstrip(".").endswith(("plugin", "items"))}
        assert not bad, f"{module.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_gate_decides_without_measuring():
    for module in _modules("gate"):
        imports = _imports(module)
        assert not {i for i in imports if i in ("torch", "..runner", "..models", "..datasets")}, module
