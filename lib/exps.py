"""Experiments as `dvc exp show --json` lists them: finished runs, one per (recipe, seed), and their recipes' names.

A *recipe* is a run's params without `seed`. The baseline recipe is called `default`: by default the recipe of
the workspace's params.yaml, what `dvc repro` runs today. Every other recipe is named by the params it changes,
e.g. `prune.iterative_steps=1`: the `-S` flags that made it.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import io
import json
import math
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import yaml

from lib.artifacts import HEADLINE_PATH
from lib.config import Params
from lib.errors import UserError

HEADLINE = HEADLINE_PATH
PREDICTIONS = "plots/benchmark/predictions.csv"
WORKSPACE = "workspace"
PARAMS_FILE = "params.yaml"
DEFAULT_RECIPE = "default"


@dataclass(frozen=True)
class Run:
    """One finished run: its recipe params (seed removed), its seed and its numeric headline metrics."""

    name: str
    rev: str
    seed: Any
    params: dict[str, Any]
    metrics: dict[str, float]
    is_commit: bool = False  # a baseline commit (or the workspace), not a `dvc exp` experiment


@dataclass(frozen=True)
class Experiments:
    runs: list[Run]
    notes: list[str] = field(default_factory=list)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → {"a.b.c": leaf}."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """Every numeric leaf as `<artifact>.<metric>`; a null (e.g. AUC of a one-class split) becomes NaN."""
    flat = flatten(metrics)
    return {key: math.nan if value is None else float(value) for key, value in flat.items()
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))}


def _exp_show_text(path: Path | None) -> str:
    if path is not None:
        if not path.is_file():
            raise UserError(f"--exps: file {path} not found; write one with `dvc exp show --json > {path}`")
        return path.read_text()
    try:
        result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    except FileNotFoundError as err:
        raise UserError("`dvc` is not on PATH; install DVC or pass --exps FILE") from err
    if result.returncode != 0:
        raise UserError(f"`dvc exp show --json` failed: {result.stderr.strip()}; "
                        "run inside the DVC repository or pass --exps FILE")
    return result.stdout


def load_exp_show(path: str | Path | None = None) -> list:
    """The JSON of `dvc exp show --json`: read from `path`, or run in the current repository."""
    text = _exp_show_text(None if path is None else Path(path))
    try:
        shown = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"the experiments JSON is not valid JSON ({err}); expected `dvc exp show --json` output") \
            from err
    if not isinstance(shown, list):
        raise UserError(f"the experiments JSON is a {type(shown).__name__}; expected the list that "
                        "`dvc exp show --json` (DVC 3) writes")
    return shown


def load_exp_shows(paths: Iterable[str | Path] | None) -> list:
    """Several saved `dvc exp show --json` outputs as one, in the order given; none: the current repository's."""
    return [entry for path in paths or [None] for entry in load_exp_show(path)]


def portable(shown: list, excluded: Iterable[str] = (), commits: bool = True) -> list:
    """`dvc exp show --json` without each queued run's local executor record (its log path and pid on the
    machine that ran it); the executor's state, which the comparison reads, is kept. The runs `excluded`
    names (see `is_named`) are left out, and without `commits` the commits' and workspace's own: an
    experiment entirely, a commit by its results, as its row holds its experiments."""
    shown = copy.deepcopy(shown)
    excluded = set(excluded)
    for baseline in shown:
        if not commits or is_named(baseline, excluded):
            baseline.pop("data", None)
        experiments = [exp for exp in baseline.get("experiments") or []
                       if not any(is_named(rev, excluded) for rev in exp.get("revs") or [])]
        for exp in experiments:
            (exp.get("executor") or {}).pop("local", None)
        if baseline.get("experiments") is not None:
            baseline["experiments"] = experiments
    return shown


def run_name(entry: dict) -> str:
    """The name a run goes by: the experiment's, the commit's branch or tag, else its short rev."""
    return entry.get("name") or (WORKSPACE if entry["rev"] == WORKSPACE else entry["rev"][:7])


def is_named(entry: dict, names: Iterable[str]) -> bool:
    """Whether one of `names` is the entry's run name or the start (7 characters or more) of its rev."""
    return any(name == run_name(entry) or (len(name) >= 7 and entry["rev"].startswith(name)) for name in names)


def experiment_entries(shown: list) -> list[tuple[dict, str | None, bool]]:
    """(rev entry, executor state, is a commit) for the workspace, every baseline commit and every experiment."""
    entries = []
    for baseline in shown:
        entries.append((baseline, None, True))
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            entries += [(rev, state, False) for rev in exp.get("revs") or []]
    return entries


@functools.cache
def optional_params(cls: type = Params, prefix: str = "") -> Mapping[str, Any]:
    """Every params.yaml key that may be left out, dotted, with the value the stages then take (lib.config).

    Read once per process: the dataclasses do not change, and every run read asks for it.
    """
    optional = {}
    for f, hint in ((f, typing.get_type_hints(cls)[f.name]) for f in dataclasses.fields(cls)):
        if dataclasses.is_dataclass(hint):
            optional.update(optional_params(hint, f"{prefix}{f.name}."))
        elif f.default is not dataclasses.MISSING:
            optional[prefix + f.name] = f.default
    return types.MappingProxyType(optional)


def entry_params(entry: dict) -> dict[str, Any]:
    """An entry's params, dotted; those of a file other than params.yaml prefixed `<file>:` as `-S` wants them.

    A run made before an optional key of params.yaml existed lacks it: it gets the key's default, which keeps
    what the code did before the key, so that it compares as a run of the same recipe made today.
    """
    params = {}
    for file, content in ((entry.get("data") or {}).get("params") or {}).items():
        own = flatten(content.get("data") or {}, "" if file == PARAMS_FILE else f"{file}:")
        params.update({**optional_params(), **own} if file == PARAMS_FILE else own)
    return params


def _run_from(entry: dict, state: str | None, is_commit: bool, metrics_file: str) -> Run | str:
    """A Run, or the reason this entry is not one."""
    name = run_name(entry)
    if state not in (None, "success"):
        return f"skipped {name}: {state}"
    data = entry.get("data")
    if entry.get("error") or not data:
        msg = (entry.get("error") or {}).get("msg", "no data")
        return f"skipped {name}: {msg}"
    metrics = (data.get("metrics") or {}).get(metrics_file, {}).get("data")
    if not metrics:
        return f"skipped {name}: no {metrics_file}"
    params = entry_params(entry)
    seed = params.pop("seed", None)
    return Run(name=name, rev=entry["rev"], seed=seed, params=params, metrics=numeric_metrics(metrics),
               is_commit=is_commit)


def collect_runs(shown: list, metrics_file: str = HEADLINE, excluded: Iterable[str] = (),
                 commits: bool = True) -> Experiments:
    """Finished runs with headline metrics, one per (recipe params, seed), so no seed is counted twice.

    A clean workspace repeats the run of its commit: the commit is kept, since `git show` can read its files.
    Otherwise the first run of a (recipe, seed) is kept: the workspace, then commits, then experiments. The
    runs `excluded` names (experiments, or commits by name or rev; see `is_named`) are left out first, so
    another run of their recipe and seed can take their place; without `commits`, so are the commits' and the
    workspace's own results, leaving the `dvc exp` experiments.
    """
    notes = []
    kept: dict[str, Run] = {}
    excluded = tuple(excluded)  # read once per entry below
    entries = experiment_entries(shown)
    unknown = [name for name in excluded if not any(is_named(entry, [name]) for entry, _, _ in entries)]
    if unknown:
        raise UserError(f"--exclude: no run is named {', '.join(unknown)}; runs: "
                        f"{', '.join(dict.fromkeys(run_name(entry) for entry, _, _ in entries))}")
    left_out = [run_name(entry) for entry, _, _ in entries if is_named(entry, excluded)]
    notes += [f"left out {len(left_out)} run(s) by --exclude: {', '.join(left_out)}"] * bool(left_out)
    for entry, state, is_commit in entries:
        if is_named(entry, excluded) or (is_commit and not commits):
            continue
        run = _run_from(entry, state, is_commit, metrics_file)
        if isinstance(run, str):
            notes.append(run)
            continue
        key = comparable([run.params, run.seed])
        earlier = kept.get(key)
        same_metrics = earlier is not None and comparable(earlier.metrics) == comparable(run.metrics)
        if earlier is None or (earlier.rev == WORKSPACE and same_metrics):
            kept[key] = run
        else:
            notes.append(f"skipped {run.name}: same params and seed as {earlier.name}")
    if not kept:
        raise UserError(f"no finished experiment with {metrics_file} ({'; '.join(notes) or 'none listed'}); "
                        "run the pipeline or queue seeds with `dvc exp run --queue -S seed=43` and `dvc queue start`")
    return Experiments(runs=list(kept.values()), notes=notes)


def comparable(value: Any) -> str:
    """A value as a comparable key; a whole float counts as its integer (params.yaml's `0` is lib.config's 0.0)."""
    return json.dumps(_whole(value), sort_keys=True)


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return [_whole(v) for v in value] if isinstance(value, list) else value


def varying_keys(params: Iterable[dict[str, Any]]) -> list[str]:
    """The keys whose value (a missing key counting as null) differs between the given params."""
    params = list(params)
    keys = sorted({k for p in params for k in p})
    return [k for k in keys if len({comparable(p.get(k)) for p in params}) > 1]


def varying_params(shown: list) -> list[str]:
    """The params whose value differs between the rows of `dvc exp show --json` that have params."""
    return varying_keys(p for p in (entry_params(entry) for entry, _, _ in experiment_entries(shown)) if p)


def assignment(key: str, value: Any) -> str:
    """`key=value` as a `-S` flag writes it."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def assignments(params: dict[str, Any], keys: list[str]) -> str:
    """`key=value, …` for `keys`: a recipe written as the `-S` flags that make it."""
    return ", ".join(assignment(k, params.get(k)) for k in keys)


def recipe_labels(runs: list[Run], baseline: dict[str, Any] | None = None) -> list[str]:
    """Each run's recipe name, in the order of `runs`.

    Without `baseline`, a recipe is named by all the params that differ between recipes. With `baseline` (a
    recipe's params), that recipe is `default` and every other one is named by what it changes.
    """
    keys = varying_keys(r.params for r in runs)
    labels = []
    for run in runs:
        if baseline is not None and comparable(run.params) == comparable(baseline):
            labels.append(DEFAULT_RECIPE)
            continue
        changed = [k for k in keys
                   if baseline is None or comparable(run.params.get(k)) != comparable(baseline.get(k))]
        labels.append(assignments(run.params, changed) or "all runs")
    return labels


def commit_recipe(runs: list[Run]) -> dict[str, Any]:
    """The params of the first commit's run (the current commit's, when `dvc exp show` ran), else the first run's.

    The recipe that `dvc exp run -S …` changed, so the natural baseline.
    """
    return next((r.params for r in runs if r.is_commit), runs[0].params)


def workspace_recipe(repo: Path = Path(".")) -> dict[str, Any] | None:
    """The recipe of `repo`'s params.yaml (its params dotted, `seed` removed), or None where there is none."""
    path = repo / PARAMS_FILE
    if not path.is_file():
        return None
    params = flatten(yaml.safe_load(path.read_text()) or {})
    params.pop("seed", None)
    return params


def _from_params_file(params: dict[str, Any]) -> dict[str, Any]:
    """A recipe's params.yaml params: those of other files are prefixed `<file>:` (see entry_params)."""
    return {key: value for key, value in params.items() if ":" not in key}


def default_recipe(runs: list[Run], current: dict[str, Any] | None) -> dict[str, Any]:
    """The params of the recipe to call `default`: the runs' recipe whose params.yaml params are `current` (the
    workspace's, see workspace_recipe), so that `default` is what `dvc repro` runs today; where no run has
    them, or there is no params.yaml, the recipe of the commit (commit_recipe)."""
    if current is not None:
        for run in runs:
            if not any(differences(run.params, current).values()):
                return run.params
    return commit_recipe(runs)


def differences(recipe: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any] | None:
    """How a recipe differs from params.yaml's (`current`): `changed`, the recipe's value of every key whose
    value params.yaml does not have; `missing`, the keys of params.yaml the recipe lacks. None without one."""
    if current is None:
        return None
    own, optional = _from_params_file(recipe), optional_params()

    def same(key: str, value: Any) -> bool:  # an optional key params.yaml leaves out has its default
        if key in current:
            return comparable(current[key]) == comparable(value)
        return key in optional and comparable(optional[key]) == comparable(value)

    return {"changed": {key: value for key, value in sorted(own.items()) if not same(key, value)},
            "missing": sorted(key for key in current if key not in own)}


def read_predictions(rev: str, repo: Path = Path(".")) -> str | None:
    """The benchmark's predictions CSV of a run: the file for the workspace, `git show` for a revision."""
    if rev == WORKSPACE:
        path = repo / PREDICTIONS
        return path.read_text() if path.is_file() else None
    result = subprocess.run(["git", "show", f"{rev}:{PREDICTIONS}"], cwd=repo, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def correct_by_artifact(csv_text: str) -> dict[str, np.ndarray]:
    """Artifact → boolean array 'prediction == label', ordered by test image index."""
    rows: dict[str, list[tuple[int, bool]]] = {}
    for row in csv.DictReader(io.StringIO(csv_text)):
        rows.setdefault(row["artifact"], []).append((int(row["index"]), row["label"] == row["predicted"]))
    return {name: np.array([ok for _, ok in sorted(pairs)]) for name, pairs in rows.items()}
