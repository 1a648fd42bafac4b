"""The Pareto front of a search: the recipes that no other recipe beats at the same size (or latency) or less.

A recipe is a cell's grid params without the seed; its runs are its seeds. Its accuracy and cost are the means
over its runs of the deployed model's figures (INT8 TFLite, `metrics/headline.json`). A search's runs are the
finished runs of `dvc exp show --json` that are cells of its grid on top of today's params.yaml: their seed is
one of the grid's, each grid key has one of its values and every other param is params.yaml's.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

from lib.artifacts import DEPLOYED, headline_metric
from lib.errors import UserError
from lib.exps import Run, collect_runs, comparable, differences
from lib.grid import Grid, cell_text
from lib.stats import summary

ACC, AUC, KB, MS, MMACS = (headline_metric(DEPLOYED, key) for key in ("acc", "auc", "kb", "ms", "mmacs"))
METRICS = [ACC, AUC, KB, MS, MMACS]
COSTS = {"size": KB, "latency": MS}  # each front: accuracy against one of these


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy, cost) points that no other point dominates, cheapest first.

    A point dominates another when its accuracy is at least as high and its cost at most as high, and one of the
    two strictly; equal points do not dominate each other. A point with a NaN is left out (and dominates none).
    """
    finite = [i for i, (acc, cost) in enumerate(points) if not (math.isnan(acc) or math.isnan(cost))]

    def dominated(i: int) -> bool:
        acc, cost = points[i]
        return any(points[j][0] >= acc and points[j][1] <= cost and (points[j][0] > acc or points[j][1] < cost)
                   for j in finite)

    return sorted((i for i in finite if not dominated(i)), key=lambda i: (points[i][1], -points[i][0]))


def is_cell(run: Run, grid: Grid, current: dict[str, Any]) -> bool:
    """Whether a run is a cell of `grid` on top of `current` (params.yaml's recipe, exps.workspace_recipe)."""
    if comparable(run.seed) not in map(comparable, grid.seeds):
        return False
    if any(comparable(grid.value(run.params, key)) not in map(comparable, values)
           for key, values in grid.values.items()):
        return False
    other, grid_keys = differences(run.params, current), grid.params_set()
    return not set(other["changed"]) - grid_keys and not set(other["missing"]) - grid_keys


def recipe_label(params: dict[str, Any], grid: Grid) -> str:
    """A recipe named by the grid keys that take more than one value (`all runs` if none does)."""
    return cell_text({k: grid.value(params, k) for k, values in grid.values.items() if len(values) > 1}) or "all runs"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _position(run: Run, grid: Grid) -> list[int]:
    """Where a cell's run stands in the grid: the index of each of its values in the grid's lists, then its seed's."""
    def index(values: list, value: Any) -> int:
        return [comparable(v) for v in values].index(comparable(value))

    return [*(index(values, grid.value(run.params, key)) for key, values in grid.values.items()),
            index(grid.seeds, run.seed)]


def _cells(runs: list[Run], grid: Grid) -> list[dict]:
    return [{"experiment": r.name, "rev": r.rev, "seed": r.seed, "recipe": recipe_label(r.params, grid),
             "params": {k: grid.value(r.params, k) for k in grid.values},
             "metrics": {m: _finite(r.metrics.get(m, math.nan)) for m in METRICS}} for r in runs]


def _recipes(cells: list[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """Mean ± std of every metric per recipe, smallest first, each with the fronts it is on; and each front's
    recipes, cheapest first."""
    groups: dict[str, list[dict]] = {}
    for cell in cells:
        groups.setdefault(cell["recipe"], []).append(cell)
    recipes = [{"recipe": name, "params": members[0]["params"], "seeds": [c["seed"] for c in members],
                "summary": {m: summary([math.nan if c["metrics"][m] is None else c["metrics"][m] for c in members])
                            for m in METRICS}} for name, members in groups.items()]

    def mean(recipe: dict, metric: str) -> float:
        value = recipe["summary"][metric]["mean"]
        return math.nan if value is None else value

    recipes.sort(key=lambda r: (mean(r, KB), -mean(r, ACC)))
    fronts = {front: pareto_front([(mean(r, ACC), mean(r, cost)) for r in recipes])
              for front, cost in COSTS.items()}
    for i, recipe in enumerate(recipes):
        recipe["front"] = [front for front, members in fronts.items() if i in members]
    return recipes, {front: [recipes[i]["recipe"] for i in members] for front, members in fronts.items()}


def _missing(cells: list[dict], grid: Grid) -> list[str]:
    """The cells of the grid that no run stands for, as `seed=…, key=…`."""
    done = {comparable([c["seed"], c["params"]]) for c in cells}
    keys = list(grid.values)
    return [cell_text({"seed": seed, **dict(zip(keys, combo))})
            for seed in grid.seeds for combo in itertools.product(*grid.values.values())
            if comparable([seed, dict(zip(keys, combo))]) not in done]


def search_report(shown: list, grid: Grid, current: dict[str, Any] | None) -> dict:
    """The search as one JSON-ready mapping: every cell's run, every recipe's mean ± std, the fronts."""
    if current is None:
        raise UserError("params.yaml not found: the search's cells are read as changes to its recipe; "
                        "run from the project root")
    found = collect_runs(shown)
    runs = [r for r in found.runs if is_cell(r, grid, current)]
    if not runs:
        raise UserError(f"none of the {len(found.runs)} finished runs is a cell of the grid on top of today's "
                        "params.yaml; run the grid first (`python -m lib.search run`), or put back the params.yaml "
                        "the search ran on")
    cells = _cells(sorted(runs, key=lambda r: _position(r, grid)), grid)
    recipes, fronts = _recipes(cells)
    left_out = len(found.runs) - len(runs)
    return {"grid": {"values": grid.values, "seeds": grid.seeds}, "metrics": METRICS, "cells": cells,
            "recipes": recipes, "fronts": fronts, "missing": _missing(cells, grid),
            "notes": [f"left out {left_out} finished run(s) that are not cells of the grid on top of params.yaml"]
            * bool(left_out)}
