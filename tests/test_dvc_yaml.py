"""dvc.yaml lists, for every stage, exactly the `lib` modules its script imports (directly or through other
lib modules), so an edit to a module reruns every stage it can affect and no other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def lib_imports(path: Path) -> set[str]:
    """`lib/<module>.py` paths imported anywhere in `path`, including imports inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {f"lib/{n.split('.')[1]}.py" for n in names
                  if n.startswith("lib.") and (ROOT / f"lib/{n.split('.')[1]}.py").exists()}
    return found


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
