"""Named presets: recipes measured over seeds that change a few params of params.yaml (presets/NAME.yaml).

    python -m lib.preset                     # the presets, each with the first line of its file
    python -m lib.preset NAME [--dry-run]    # `make repro PRESET=NAME`: the pipeline with the preset's values

A preset file maps dotted params.yaml keys to one value each, the way `dvc exp run -S` takes them; its comments
say what it was measured to give and cost. Running one is `dvc exp run -S key=value …` in the workspace: the
pipeline with those values, recorded as an experiment of the commit (`dvc exp show`), its results and its
params.yaml left in the workspace as after any `dvc exp run -S`. Before anything runs, the preset is checked as
the stages would check it, so a preset that a later params.yaml broke fails at once, not after the teacher.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

from lib import cli
from lib.config import PARAMS_FILE
from lib.errors import UserError
from lib.exps import flatten
from lib.grid import SEED, check_recipe, params_content, read_yaml, unknown_key
from lib.search import command

PRESETS = Path("presets")


def names(folder: Path = PRESETS) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yaml"))


def summary(path: Path) -> str:
    """The first comment line of a preset file: what it is."""
    first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
    return first.lstrip("# ").strip()


def load_preset(name: str, folder: Path = PRESETS, params_file: Path = PARAMS_FILE) -> dict[str, Any]:
    """The preset's dotted key → value, each key one of params.yaml and the whole a recipe the stages accept."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"preset {name!r} not found ({path}); the presets are: {', '.join(names(folder)) or 'none'}")
    preset = read_yaml(path)
    if not isinstance(preset, dict) or not preset:
        raise UserError(f"{path}: expected a mapping of dotted params.yaml key → value, e.g. `train.epochs: 12`")
    params = params_content(params_file)
    known = flatten(params)
    for key in preset:
        if key == SEED:
            raise UserError(f"{path}: a preset is a recipe and leaves the seed to params.yaml; remove `seed` "
                            "(run it at another seed with `dvc exp run -S seed=… -S …`)")
        if key not in known:
            raise UserError(f"{path}: {unknown_key(key, known)}")
    try:
        check_recipe(params, preset)
    except UserError as err:
        raise UserError(f"{path} is not a valid recipe: {err}; change the preset") from None
    return preset


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="a preset: presets/NAME.yaml; none lists them")
    parser.add_argument("--dry-run", action="store_true", help="print the preset's `dvc exp run`; run nothing")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.name is None:
        listed = names()
        width = max(map(len, listed), default=0) + 2
        print("\n".join(f"{name:<{width}}{summary(PRESETS / f'{name}.yaml')}" for name in listed))
        return
    cmd = command(load_preset(args.name))
    if args.dry_run:
        print(" ".join(cmd))
        return
    if shutil.which("dvc") is None:
        raise UserError("`dvc` is not on PATH; run from the project's virtual environment (`make repro PRESET=…`)")
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"the preset {args.name} failed: `{' '.join(cmd)}` (its output above)")


if __name__ == "__main__":
    cli.run(main)
