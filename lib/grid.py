"""The grid of a search (`search.yaml`): its params and seeds, read and checked, and its cells in running order.

A cell is one run: a value for `seed` and for every key of the grid. A key may also be a params section whose
values are mappings, each setting several of its keys together (`prune: [{method: structured, ratio: 0.5}, …]`):
an ablation that pairs values instead of crossing them. Cells run one after another in the
workspace, so a stage reruns only when a param it reads differs from the cell before. The running order makes
that rare for early stages: the key read by the earliest stage of dvc.yaml varies slowest (`seed`, then
`dataset.*`, which the teacher reads, then the student's keys, then pruning's), so every cell of a teacher
runs back to back and the teacher trains once for all of them.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lib.config import PARAMS_FILE, Params, from_dict
from lib.errors import UserError
from lib.exps import assignments, flatten

GRID_FILE = Path("search.yaml")
SEED = "seed"
TEACHER_STAGE = "train_teacher"


@dataclass(frozen=True)
class Grid:
    values: dict[str, list]  # dotted params.yaml key (or section: linked values) → the values to try, in order
    seeds: list[int]

    def value(self, params: dict[str, Any], key: str) -> Any:
        """The value of grid key `key` in a run's flat params (a linked key's: a mapping of its sub-keys)."""
        first = self.values[key][0]
        return {sub: params.get(f"{key}.{sub}") for sub in first} if isinstance(first, dict) else params.get(key)

    def params_set(self) -> set[str]:
        """Every dotted params.yaml key the grid sets."""
        return {k for key, values in self.values.items() for k in flat_cell({key: values[0]})}


def cell_text(cell: dict[str, Any]) -> str:
    """`key=value, …`: a cell as the `-S` flags that run it."""
    flat = flat_cell(cell)
    return assignments(flat, list(flat))


def flat_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell (or any key → value mapping of the grid) as dotted params.yaml key → value, a linked value's
    keys under its section."""
    flat = {}
    for key, value in cell.items():
        flat.update({f"{key}.{sub}": v for sub, v in value.items()} if isinstance(value, dict) else {key: value})
    return flat


def _check_seeds(seeds: Any) -> list[int]:
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise UserError(f"seeds: got {seeds!r}; expected a list of seeds (non-negative integers), e.g. [42, 43]")
    if len(set(seeds)) < len(seeds):
        raise UserError(f"seeds: {seeds!r} lists a seed twice; list each once")
    return seeds


def _check_linked(key: str, values: list, params: dict[str, Any]) -> None:
    """Linked values: mappings that all set the same keys of section `key`."""
    subs = values[0] if isinstance(values[0], dict) else {}
    if not subs or any(not isinstance(v, dict) or v.keys() != subs.keys() for v in values):
        raise UserError(f"grid.{key}: {values!r} mixes mappings with other values or sets different keys; linked "
                        f"values are mappings that each set the same keys of {key}, e.g. "
                        "[{method: structured, ratio: 0.5}, {method: unstructured, ratio: 0.75}]")
    unknown = [f"{key}.{sub}" for sub in subs if f"{key}.{sub}" not in params]
    if unknown:
        raise UserError(f"grid.{key}: {', '.join(unknown)} is not a key of params.yaml; a linked value sets keys of "
                        f"the section {key}, one of: {', '.join(k for k in params if k.startswith(f'{key}.'))}")


def unknown_key(key: str, params: dict[str, Any]) -> str:
    """What to say of `key`, not a key of params.yaml (`params`: its flat keys): the keys there are."""
    return (f"{key!r} is not a key of params.yaml; write a dotted key as `dvc exp run -S` takes it, one of: "
            f"{', '.join(k for k in params if k != SEED)}")


def read_yaml(path: Path) -> Any:
    """The content of a YAML file that a person wrote (a grid, a preset); a syntax error says so, with the file."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}") from None


def params_content(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml's content as the mapping a grid or a preset is checked against (empty for an empty file)."""
    return yaml.safe_load(Path(path).read_text()) or {}


def _check_values(key: str, values: Any, params: dict[str, Any]) -> list:
    if key == SEED:
        raise UserError("grid: `seed` is not a grid key; list the seeds under `seeds:` at the top level")
    linked = isinstance(values, list) and any(isinstance(v, dict) for v in values)
    if key not in params and not (linked and any(k.startswith(f"{key}.") for k in params)):
        raise UserError(f"grid: {unknown_key(key, params)}")
    if not isinstance(values, list) or not values:
        raise UserError(f"grid.{key}: got {values!r}; expected a non-empty list of values, e.g. [0.25, 0.5]")
    if len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
        raise UserError(f"grid.{key}: {values!r} lists a value twice; list each once")
    if linked:
        _check_linked(key, values, params)
    return values


def parse_grid(data: Any, params: dict[str, Any]) -> Grid:
    """A grid from the mapping of a grid file; `params` is params.yaml's content, whose keys the grid may vary."""
    if not isinstance(data, dict) or set(data) != {"grid", "seeds"}:
        raise UserError(f"the grid file holds {sorted(data) if isinstance(data, dict) else data!r}; expected "
                        "two keys: `seeds:` (a list) and `grid:` (dotted params.yaml key → list of values)")
    if not isinstance(data["grid"], dict) or not data["grid"]:
        raise UserError(f"grid: got {data['grid']!r}; expected a mapping of dotted params.yaml key → list of values")
    flat = flatten(params)
    values = {str(key): _check_values(str(key), vals, flat) for key, vals in data["grid"].items()}
    return Grid(values=values, seeds=_check_seeds(data["seeds"]))


def load_grid(path: str | Path = GRID_FILE, params_file: str | Path = PARAMS_FILE) -> Grid:
    """Read and check a grid file against the keys of `params_file`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file {path} not found; write one (see docs/search.md) or pass --grid FILE")
    return parse_grid(read_yaml(path), params_content(params_file))


def stage_params(dvc_yaml: dict) -> list[tuple[str, list[str]]]:
    """(stage, the params.yaml params it lists) of every stage, in dvc.yaml's order (its stages run in order)."""
    return [(name, [p for p in stage.get("params") or [] if isinstance(p, str)])
            for name, stage in (dvc_yaml.get("stages") or {}).items()]


def first_stage(key: str, stages: list[tuple[str, list[str]]]) -> int:
    """Index of the first stage that reads `key` (a param listed as itself or as a section above it, or, for
    a section, a param under it); len(stages) for a key no stage reads."""
    for index, (_, params) in enumerate(stages):
        if any(key == p or key.startswith(f"{p}.") or p.startswith(f"{key}.") for p in params):
            return index
    return len(stages)


def running_order(keys: list[str], stages: list[tuple[str, list[str]]]) -> list[str]:
    """`seed` and the grid's keys, the one read by the earliest stage first (ties: seed, then the file's order)."""
    return sorted([SEED, *(k for k in keys if k != SEED)], key=lambda k: first_stage(k, stages))


def ordered_cells(grid: Grid, stages: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """Every cell of the grid, each a mapping key → value with `seed` first, in running order."""
    keys = running_order(list(grid.values), stages)
    choices = [grid.seeds if k == SEED else grid.values[k] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def teacher_keys(cell: dict[str, Any], stages: list[tuple[str, list[str]]]) -> list[str]:
    """The keys of a cell that the teacher (or a stage before it) reads: cells that agree on them share it."""
    teacher = next((i for i, (name, _) in enumerate(stages) if name == TEACHER_STAGE), -1)
    return [k for k in cell if first_stage(k, stages) <= teacher]


def check_recipe(params: dict, cell: dict[str, Any]) -> None:
    """Raise the stages' UserError if params.yaml's content `params`, with the cell's keys set, is a recipe
    they would refuse (a value out of range, an unknown model, a width the student does not have)."""
    from lib.models import check_params  # torch: only when a recipe is about to run

    check_params(from_dict(Params, with_cell(params, cell)))


def with_cell(params: dict, cell: dict[str, Any]) -> dict:
    """A copy of params.yaml's content with the cell's dotted keys set."""
    params = copy.deepcopy(params)
    for key, value in flat_cell(cell).items():
        *sections, leaf = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        node[leaf] = value
    return params
