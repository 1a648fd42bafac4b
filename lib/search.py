"""A search over a grid of recipes: the best model at each size and latency budget, as a Pareto front.

    python -m lib.search run [--grid search.yaml] [--dry-run] [--start N]    # `make search` runs both
    python -m lib.search front [--grid search.yaml] [--exps FILE] [--out plots/search]

`run` runs every cell of the grid (lib.grid) with `dvc exp run -S …`, one after another in the workspace, each
cell giving the seed and every grid key. The cells of one teacher run back to back, so DVC finds train_teacher
up to date and skips it: the teacher trains once per seed (and per value of a grid key it reads, such as
`dataset.image_size`). Queued experiments would each train their teacher again, as DVC's run cache cannot
restore a stage with `cache: false` outputs. Afterwards the workspace is put back as it was (lib.workspace).
Each cell's log is kept in .dvc/tmp/search/.

`front` reads the finished runs from `dvc exp show --json` (or --exps, e.g. the saved experiments.json) and
writes the out folder: experiments.json (the runs read, without this machine's executor details), search.json
(every cell, mean ± std per recipe, the fronts), cells.csv, front.png, and front.md, which
`python -m lib.report --write` places in README.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from lib import cli, workspace
from lib.errors import UserError
from lib.exps import assignment, load_exp_show, portable, workspace_recipe
from lib.grid import (GRID_FILE, TEACHER_STAGE, cell_text, check_recipe, flat_cell, load_grid, ordered_cells,
                      params_content, stage_params, teacher_keys)
from lib.io import atomic_path, write_json
from lib.pareto import search_report
from lib.search_render import cells_csv, front_markdown, plot

OUT = Path("plots/search")
LOGS = Path(".dvc/tmp/search")
TEACHER_RAN = f"Running stage '{TEACHER_STAGE}'"
TEACHER_SKIPPED = f"Stage '{TEACHER_STAGE}' didn't change, skipping"


def command(cell: dict[str, Any]) -> list[str]:
    """`dvc exp run` with every key of the cell set, so no value of the cell before it carries over."""
    return ["dvc", "exp", "run", *(arg for key, value in flat_cell(cell).items()
                                   for arg in ("-S", assignment(key, value)))]


def check_cells(cells: list[dict[str, Any]]) -> None:
    """Refuse, before the first cell runs, a cell whose params the stages would refuse (values, models)."""
    params = params_content()
    for cell in cells:
        try:
            check_recipe(params, cell)
        except UserError as err:
            raise UserError(f"the cell {cell_text(cell)} is not a valid recipe: {err}; "
                            "change the grid") from None


def run_logged(cmd: list[str], log: Path) -> int:
    """Run `cmd`, its output shown and written to `log`; its exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
    return proc.returncode


def teacher_summary(cells: list[dict[str, Any]], trained: list[bool], stages: list) -> str:
    """How often the teacher trained, and which cell retrained the teacher of the cell before it."""
    groups = {cell_text({k: c[k] for k in teacher_keys(c, stages)}) for c in cells}
    lines = [f"{TEACHER_STAGE} ran in {sum(trained)} of {len(trained)} cells; the grid has {len(groups)} teacher(s)"]
    for i in range(1, len(trained)):
        same = teacher_keys(cells[i], stages)
        if trained[i] and all(cells[i][k] == cells[i - 1][k] for k in same):
            lines.append(f"warning: cell {i + 1} retrained the teacher of cell {i}: a dependency of "
                         f"{TEACHER_STAGE} changed between them (code or data edited during the search?)")
    return "\n".join(lines)


def run_grid(grid_file: Path, dry_run: bool = False, start: int = 1, logs: Path = LOGS) -> None:
    stages = stage_params(yaml.safe_load(Path("dvc.yaml").read_text()))
    cells = ordered_cells(load_grid(grid_file), stages)
    if not 1 <= start <= len(cells):
        raise UserError(f"--start: got {start}; the grid has cells 1 to {len(cells)}")
    if dry_run:
        print("\n".join(f"{i:>3}  {' '.join(command(c))}" for i, c in enumerate(cells, 1) if i >= start))
        return
    if shutil.which("dvc") is None:
        raise UserError("`dvc` is not on PATH; run from the project's virtual environment (`make search`)")
    check_cells(cells)
    trained = []
    with workspace.kept():
        for i, cell in enumerate(cells[start - 1:], start):
            print(f"== cell {i}/{len(cells)}: {cell_text(cell)}", flush=True)
            log = logs / f"cell-{i:03d}.log"
            if run_logged(command(cell), log) != 0:
                raise UserError(f"cell {i} failed, see {log}; the cells before it are recorded (`dvc exp show`); "
                                f"once fixed, run the rest with --start {i}")
            trained.append(TEACHER_RAN in log.read_text())
    print(teacher_summary(cells[start - 1:], trained, stages))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def build_front(grid_file: Path, exps: Path | None = None, out: Path = OUT) -> str:
    """Write the out folder from the finished runs; returns the front's Markdown."""
    grid = load_grid(grid_file)
    shown = load_exp_show(exps)
    report = search_report(shown, grid, workspace_recipe())
    if exps is None:
        write_json(out / "experiments.json", portable(shown))
    write_json(out / "search.json", report)
    write_text(out / "cells.csv", cells_csv(report))
    plot(report, out / "front.png")
    markdown = front_markdown(report)
    write_text(out / "front.md", markdown)
    return markdown


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run every cell of the grid in the workspace, one after another")
    front = commands.add_parser("front", help="write the Pareto front of the finished runs of the grid")
    for sub in (run, front):
        sub.add_argument("--grid", type=Path, default=GRID_FILE, help=f"the grid file (default {GRID_FILE})")
    run.add_argument("--dry-run", action="store_true", help="print each cell's `dvc exp run`, in order; run none")
    run.add_argument("--start", type=int, default=1, help="first cell to run (1-based), to finish a search that "
                     "stopped; the cells are numbered as --dry-run lists them")
    front.add_argument("--exps", type=Path, help="`dvc exp show --json` output, e.g. plots/search/experiments.json; "
                       "default: run it in the current repository (and save it as experiments.json in --out)")
    front.add_argument("--out", type=Path, default=OUT, help=f"folder of the files written (default {OUT})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "run":
        run_grid(args.grid, args.dry_run, args.start)
    else:
        print(build_front(args.grid, args.exps, args.out), end="")


if __name__ == "__main__":
    cli.run(main)
