"""dvc.yaml lists, for every stage, exactly the `lib` modules its script imports (directly or through other
lib modules), so an edit to a module reruns every stage it can affect and no other. A package (`lib/task`,
`lib/sources`) is one dependency: its folder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
TRAINING_MODULES = {"lib/training.py", "lib/losses.py", "lib/distributed.py", "lib/augment.py", "lib/loader.py"}


def lib_dep(module: str) -> str | None:
    """`lib.x` or `lib.x.y` → its dependency: `lib/x.py`, or the folder `lib/x` of a package."""
    parts = module.split(".")
    if parts[0] != "lib" or len(parts) < 2:
        return None
    if (ROOT / "lib" / parts[1]).is_dir():
        return f"lib/{parts[1]}"
    return f"lib/{parts[1]}.py" if (ROOT / f"lib/{parts[1]}.py").exists() else None


def type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """Imports under `if TYPE_CHECKING:`: read by type checkers, never run, so no dependency."""
    return {node for block in ast.walk(tree) if isinstance(block, ast.If) and
            isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
            for stmt in block.body for node in ast.walk(stmt)}


def lib_imports(path: Path) -> set[str]:
    """Dependencies imported anywhere in `path` (a file, or every file of a package folder), including
    imports inside functions."""
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    found = set()
    for file in files:
        tree = ast.parse(file.read_text())
        for node in set(ast.walk(tree)) - type_checking_only(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found |= {dep for dep in map(lib_dep, names) if dep}
    return found - {str(path.relative_to(ROOT))}


def transitive_lib_imports(script: Path) -> set[str]:
    seen: set[str] = set()
    todo = lib_imports(script)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo |= lib_imports(ROOT / module)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_lib_modules_it_imports(stage):
    script = ROOT / f"stages/{stage}.py"
    deps = {d for d in STAGES[stage]["deps"] if d.startswith("lib/")}
    assert f"stages/{stage}.py" in STAGES[stage]["deps"]
    assert deps == transitive_lib_imports(script), (
        f"missing: {sorted(transitive_lib_imports(script) - deps)}, "
        f"not imported: {sorted(deps - transitive_lib_imports(script))}")


@pytest.mark.parametrize("stage", ["export_onnx", "to_tflite", "quantize", "benchmark"])
def test_conversion_and_benchmark_stages_do_not_depend_on_training_code(stage):
    assert not transitive_lib_imports(ROOT / f"stages/{stage}.py") & TRAINING_MODULES


def test_prepare_data_does_not_depend_on_the_model_registry():
    assert "lib/models.py" not in transitive_lib_imports(ROOT / "stages/prepare_data.py")
