"""The search (lib.grid, lib.pareto, lib.search_render, lib.workspace, lib.search): the Pareto function, the
running order of the cells, the front of `dvc exp show --json`-shaped runs, the workspace put back, and a
two-cell search on a copy of the tiny project that must reuse its teacher."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import random
import re
from pathlib import Path

import pytest
import yaml

from conftest import built_once, copy_project, init_repo, run
from lib import workspace
from lib.errors import UserError
from lib.grid import (Grid, first_stage, load_grid, ordered_cells, parse_grid, stage_params, teacher_keys,
                      with_cell)
from lib.pareto import ACC, KB, MS, pareto_front, search_report
from lib.search import LOGS, TEACHER_RAN, TEACHER_SKIPPED, check_cells, command, teacher_summary
from lib.search_render import cells_csv, front_markdown, plot, point_label, spread

ROOT = Path(__file__).resolve().parents[1]
STAGES = stage_params(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, cost): `a` at least as good in both and better in one, written out apart from lib.pareto."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


# ------------------------------------------------------------------ the Pareto function
def test_pareto_front_keeps_the_points_nothing_beats_cheapest_first():
    points = [(0.90, 100.0), (0.85, 120.0), (0.88, 60.0), (0.80, 40.0), (0.88, 70.0), (0.95, 500.0)]
    assert pareto_front(points) == [3, 2, 0, 5]  # (0.85, 120) and (0.88, 70) are beaten, the rest by cost


def test_pareto_front_equal_points_both_stay_and_nan_never_counts():
    assert pareto_front([(0.9, 10.0), (0.9, 10.0)]) == [0, 1]
    assert pareto_front([(0.9, 10.0), (0.9, 12.0)]) == [0]  # same accuracy, larger: dominated
    assert pareto_front([(0.9, 10.0), (0.8, 10.0)]) == [0]  # same size, less accurate: dominated
    assert pareto_front([(math.nan, 1.0), (0.5, 5.0), (0.99, math.nan)]) == [1]
    assert pareto_front([]) == []


def test_pareto_front_agrees_with_the_definition_on_random_points():
    rng = random.Random(0)
    for _ in range(200):
        points = [(rng.choice([0.8, 0.85, 0.9, 0.95]), rng.choice([10.0, 20.0, 30.0, 40.0]))
                  for _ in range(rng.randint(1, 9))]
        front = pareto_front(points)
        assert front == sorted(front, key=lambda i: (points[i][1], -points[i][0]))
        for i, point in enumerate(points):
            beaten = any(dominates(other, point) for other in points)
            assert (i in front) == (not beaten), (points, i)


# ------------------------------------------------------------------ the grid and its running order
def test_cells_vary_the_latest_stage_fastest_and_group_each_teacher():
    grid = Grid({"prune.ratio": [0.25, 0.5], "student": ["mobilenetv2", "mnasnet"],
                 "dataset.image_size": [28, 24]}, seeds=[42, 43])
    cells = ordered_cells(grid, STAGES)
    assert len(cells) == 16
    assert all(list(c) == ["seed", "dataset.image_size", "student", "prune.ratio"] for c in cells)
    assert first_stage("seed", STAGES) <= first_stage("dataset.image_size", STAGES) \
        < first_stage("student", STAGES) < first_stage("prune.ratio", STAGES)
    teachers = [tuple(c[k] for k in teacher_keys(c, STAGES)) for c in cells]
    assert teacher_keys(cells[0], STAGES) == ["seed", "dataset.image_size"]
    assert [key for key, _ in itertools.groupby(teachers)] == list(dict.fromkeys(teachers))  # each one run
    assert len(set(teachers)) == 4 and sum(a != b for a, b in zip(teachers, teachers[1:])) == 3
    assert [c["prune.ratio"] for c in cells[:4]] == [0.25, 0.5, 0.25, 0.5]  # innermost, in the file's order
    assert len({json.dumps(c, sort_keys=True) for c in cells}) == 16


def test_every_cell_sets_the_seed_and_every_grid_key():
    cell = {"seed": 42, "student_width": 0.5, "quantize.per_channel": True, "student": "mobilenetv2"}
    assert command(cell) == ["dvc", "exp", "run", "-S", "seed=42", "-S", "student_width=0.5", "-S",
                             "quantize.per_channel=true", "-S", "student=mobilenetv2"]
    changed = with_cell(PARAMS, {"prune.ratio": 0.25, "student": "mnasnet"})
    assert changed["prune"]["ratio"] == 0.25 and changed["student"] == "mnasnet"
    assert PARAMS["prune"]["ratio"] != 0.25 and changed["prune"]["lr"] == PARAMS["prune"]["lr"]


PAIRED = {"prune": [{"method": "structured", "ratio": 0.5}, {"method": "unstructured", "ratio": 0.75}]}


def test_linked_values_set_their_keys_together_in_pairs_not_crossed():
    grid = parse_grid({"seeds": [42, 43], "grid": PAIRED}, PARAMS)
    cells = ordered_cells(grid, STAGES)
    assert [(c["seed"], c["prune"]["method"]) for c in cells] == [
        (42, "structured"), (42, "unstructured"), (43, "structured"), (43, "unstructured")]
    assert teacher_keys(cells[1], STAGES) == ["seed"]
    assert first_stage("prune", STAGES) == first_stage("prune.ratio", STAGES)
    assert command(cells[1]) == ["dvc", "exp", "run", "-S", "seed=42", "-S", "prune.method=unstructured",
                                 "-S", "prune.ratio=0.75"]
    changed = with_cell(PARAMS, cells[1])
    assert changed["prune"]["method"] == "unstructured" and changed["prune"]["ratio"] == 0.75
    assert changed["prune"]["lr"] == PARAMS["prune"]["lr"]
    check_cells(cells)


@pytest.mark.parametrize("data, message", [
    ({"seeds": [42], "grid": {"prune": [{"method": "structured"}, "unstructured"]}}, "mixes mappings"),
    ({"seeds": [42], "grid": {"prune": [{"method": "structured"}, {"ratio": 0.5}]}}, "sets different keys"),
    ({"seeds": [42], "grid": {"prune": [{"methd": "structured"}]}}, "prune.methd is not a key of params.yaml"),
    ({"seeds": [42], "grid": {"prune.ration": [0.5]}}, "'prune.ration' is not a key of params.yaml"),
    ({"seeds": [42], "grid": {"seed": [1, 2]}}, "list the seeds under `seeds:`"),
    ({"seeds": [42], "grid": {"prune.ratio": []}}, "expected a non-empty list"),
    ({"seeds": [42], "grid": {"prune.ratio": [0.5, 0.5]}}, "lists a value twice"),
    ({"seeds": [42, 42], "grid": {"prune.ratio": [0.5]}}, "lists a seed twice"),
    ({"seeds": "42", "grid": {"prune.ratio": [0.5]}}, "expected a list of seeds"),
    ({"seeds": [42], "grid": {"prune.ratio": [0.5]}, "extra": 1}, "expected two keys"),
])
def test_a_bad_grid_says_what_to_fix(data, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_grid(data, PARAMS)


COMMITTED_GRIDS = sorted(["search.yaml", *(str(p.relative_to(ROOT)) for p in ROOT.glob("plots/*/*.yaml"))])


@pytest.mark.parametrize("path", COMMITTED_GRIDS)
def test_every_committed_grid_is_valid_and_every_cell_a_recipe_the_stages_accept(monkeypatch, path):
    """The grid files the docs' commands run (`lib.search run --grid`, `lib.compare --grid`) still fit params.yaml."""
    monkeypatch.chdir(ROOT)
    grid = load_grid(ROOT / path, ROOT / "params.yaml")
    cells = ordered_cells(grid, STAGES)
    assert len(cells) == len(grid.seeds) * math.prod(len(v) for v in grid.values.values())
    check_cells(cells)


def test_check_cells_refuses_a_recipe_the_stages_would_refuse():
    with pytest.raises(UserError, match="student_width"):
        check_cells([{"seed": 42, "student": "mobilenetv3_small", "student_width": 0.35}])


def test_teacher_summary_warns_of_a_cell_that_retrained_its_neighbour_s_teacher():
    cells = ordered_cells(Grid({"prune.ratio": [0.25, 0.5]}, seeds=[42, 43]), STAGES)
    assert teacher_summary(cells, [False, False, True, False], STAGES).splitlines() == [
        "train_teacher ran in 1 of 4 cells; the grid has 2 teacher(s)"]
    assert "warning: cell 2 retrained the teacher of cell 1" in teacher_summary(cells, [True, True, True, False],
                                                                                 STAGES)


# ------------------------------------------------------------------ the front of finished runs
def rev(name: str, seed: int, student: str, ratio: float, headline: tuple[float, float, float],
        other: int = 1) -> dict:
    """One entry of `dvc exp show --json` (DVC 3) with the INT8 headline (accuracy, KiB, ms)."""
    acc, kb, ms = headline
    return {"rev": f"{name}-rev", "name": name, "error": None, "data": {
        "params": {"params.yaml": {"data": {"seed": seed, "student": student, "prune": {"ratio": ratio},
                                            "other": other}}},
        "metrics": {"metrics/headline.json": {"data": {"int8_tflite": {
            "acc": acc, "auc": None, "kb": kb, "ms": ms, "mmacs": 1.5}}}}}}


def exp_show(revs: list[dict]) -> list:
    return [{**revs[0], "experiments": [{"executor": {"state": "success"}, "revs": [r]} for r in revs[1:]]}]


SEARCHED = exp_show([
    rev("main", 1, "a", 0.25, (0.90, 100.0, 1.0)),
    rev("e1", 2, "a", 0.25, (0.92, 100.0, 1.0)),
    rev("e2", 1, "a", 0.5, (0.88, 60.0, 0.8)), rev("e3", 2, "a", 0.5, (0.86, 60.0, 0.8)),
    rev("e4", 1, "b", 0.25, (0.85, 120.0, 1.2)), rev("e5", 2, "b", 0.25, (0.85, 120.0, 1.2)),
    rev("e6", 1, "b", 0.5, (0.80, 40.0, 0.9)),  # seed 2 of this recipe never ran
    rev("other-param", 1, "b", 0.5, (0.99, 1.0, 0.1), other=2),  # not today's params.yaml: left out
    rev("other-seed", 3, "b", 0.5, (0.99, 1.0, 0.1)), rev("other-value", 1, "c", 0.5, (0.99, 1.0, 0.1)),
])
GRID = Grid({"student": ["a", "b"], "prune.ratio": [0.25, 0.5]}, seeds=[1, 2])
CURRENT = {"student": "a", "prune.ratio": 0.5, "other": 1}


def test_front_of_the_grid_s_runs_mean_over_seeds_and_leaves_other_runs_out():
    report = search_report(SEARCHED, GRID, CURRENT)
    assert [c["experiment"] for c in report["cells"]] == ["main", "e1", "e2", "e3", "e4", "e5", "e6"]
    by_name = {r["recipe"]: r for r in report["recipes"]}
    assert by_name["student=a, prune.ratio=0.25"]["summary"][ACC]["mean"] == pytest.approx(0.91)
    assert by_name["student=a, prune.ratio=0.25"]["summary"][ACC]["std"] == pytest.approx(0.0141421356)
    assert report["fronts"] == {"size": ["student=b, prune.ratio=0.5", "student=a, prune.ratio=0.5",
                                         "student=a, prune.ratio=0.25"],
                                "latency": ["student=a, prune.ratio=0.5", "student=a, prune.ratio=0.25"]}
    assert by_name["student=b, prune.ratio=0.25"]["front"] == []
    assert report["missing"] == ["seed=2, student=b, prune.ratio=0.5"]
    assert report["notes"] == ["left out 3 finished run(s) that are not cells of the grid on top of params.yaml"]
    for front, cost in (("size", KB), ("latency", MS)):  # nothing beats a recipe on the front
        points = {r["recipe"]: (r["summary"][ACC]["mean"], r["summary"][cost]["mean"]) for r in report["recipes"]}
        assert not any(dominates(other, points[name]) for name in report["fronts"][front] for other in points.values())


def paired_rev(name: str, seed: int, method: str, ratio: float, acc: float) -> dict:
    entry = rev(name, seed, "a", ratio, (acc, 100.0, 1.0))
    entry["data"]["params"]["params.yaml"]["data"]["prune"]["method"] = method
    return entry


def test_a_linked_key_names_its_recipes_by_every_key_it_sets_and_keeps_only_its_pairs():
    shown = exp_show([paired_rev("main", 1, "structured", 0.5, 0.90), paired_rev("e1", 2, "structured", 0.5, 0.92),
                      paired_rev("e2", 1, "unstructured", 0.75, 0.80),
                      paired_rev("crossed", 1, "unstructured", 0.5, 0.99)])  # not a pair of the grid: left out
    grid = Grid(PAIRED, seeds=[1, 2])
    report = search_report(shown, grid, {"student": "a", "prune.method": "structured", "prune.ratio": 0.5, "other": 1})
    assert [c["experiment"] for c in report["cells"]] == ["main", "e1", "e2"]
    assert [r["recipe"] for r in report["recipes"]] == ["prune.method=structured, prune.ratio=0.5",
                                                        "prune.method=unstructured, prune.ratio=0.75"]
    assert report["cells"][2]["params"] == {"prune": {"method": "unstructured", "ratio": 0.75}}
    assert report["missing"] == ["seed=2, prune.method=unstructured, prune.ratio=0.75"]
    assert "method=unstructured ratio=0.75" in cells_csv(report)


def test_no_run_of_the_grid_says_what_to_do():
    with pytest.raises(UserError, match="run the grid first"):
        search_report(SEARCHED, GRID, {**CURRENT, "other": 3})


def test_front_renders_as_markdown_csv_and_plot(tmp_path):
    report = search_report(SEARCHED, GRID, CURRENT)
    markdown = front_markdown(report)
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[:2] for row in rows] == [["| `b`", "`0.5`"], ["| `a`", "`0.5`"], ["| `a`", "`0.25`"]]
    assert "3 of 4 recipes are on the Pareto front" in " ".join(markdown.split())
    assert "| 0.8 ± n/a |" in rows[0] and rows[1].endswith("| size, latency |") and rows[0].endswith("| size |")
    assert max(map(len, markdown.splitlines())) <= 120 and "`seed=2, student=b, prune.ratio=0.5`" in markdown
    table = list(csv.DictReader(io.StringIO(cells_csv(report))))
    assert len(table) == 7 and table[0]["experiment"] == "main" and table[0]["student"] == "a"
    assert table[0][ACC] == "0.9" and table[0]["seed"] == "1"
    plot(report, tmp_path / "front.png")
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_names_each_point_by_its_values_and_keeps_close_names_apart():
    recipe = {"recipe": "student=a, prune.ratio=0.5", "params": {"student": "a", "prune.ratio": 0.5, "seed": 1}}
    assert point_label(recipe, ["student", "prune.ratio"]) == "a, 0.5"
    assert point_label({"recipe": "all runs", "params": {}}, []) == "all runs"
    # display coordinates: two points 3 units apart share a line and must part; a far one stays where it is
    down = spread([(100, 200), (102, 197), (400, 198)], width=50, height=10)
    assert down[0] == 0 and down[2] == 0 and down[1] == 10
    assert spread([(100, 200), (100, 200), (100, 200)], width=50, height=10) == [0, 10, 20]


def test_report_places_the_committed_front_in_the_readme(tmp_path, monkeypatch):
    from lib.report import NO_SEARCH, SEARCH_BLOCK, SEARCH_FRONT, blocks, committed_blocks

    bench = json.loads((ROOT / "metrics/benchmark.json").read_text())
    assert blocks(bench, search="| front |\n")[SEARCH_BLOCK] == "| front |"
    monkeypatch.chdir(tmp_path)
    for path in ("metrics/benchmark.json", "params.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text())
    assert committed_blocks()[SEARCH_BLOCK] == NO_SEARCH
    SEARCH_FRONT.parent.mkdir(parents=True)
    SEARCH_FRONT.write_text(front_markdown(search_report(SEARCHED, GRID, CURRENT)))
    assert committed_blocks()[SEARCH_BLOCK].startswith("3 of 4 recipes")


# ------------------------------------------------------------------ the workspace put back
def test_workspace_puts_back_params_lock_and_uncached_outputs(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "x", "outs": [
        "models/m.bin", {"metrics/m.json": {"cache": False}}, {"plots/curves": {"cache": False}}]}}}))
    files = {"params.yaml": "seed: 1  # an uncommitted edit\n", "dvc.lock": "lock\n", "metrics/m.json": "{}\n",
             "plots/curves/a.tsv": "a\n"}
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    checkouts = []
    monkeypatch.setattr(workspace, "checkout", checkouts.append)
    assert workspace.kept_paths(tmp_path) == ["params.yaml", "dvc.lock", "metrics/m.json", "plots/curves"]
    with pytest.raises(RuntimeError), workspace.kept(tmp_path):
        (tmp_path / "params.yaml").write_text("seed: 2\n")
        (tmp_path / "metrics/m.json").unlink()
        (tmp_path / "plots/curves/b.tsv").write_text("b\n")
        raise RuntimeError("a cell failed")
    assert {p: (tmp_path / p).read_text() for p in files} == files
    assert not (tmp_path / "plots/curves/b.tsv").exists() and checkouts == [tmp_path]
    assert list((tmp_path / workspace.SNAPSHOT_DIR).iterdir()) == []


def _committed_repo(repo: Path) -> str:
    """A committed git + DVC repository with an empty dvc.yaml; the branch HEAD is on."""
    (repo / "dvc.yaml").write_text("stages: {}\n")
    init_repo(repo)
    return run(["git", "symbolic-ref", "HEAD"], repo).stdout.strip()


def test_workspace_puts_head_back_on_its_branch_after_a_killed_experiment(tmp_path, monkeypatch):
    branch = _committed_repo(tmp_path)
    monkeypatch.setattr(workspace, "checkout", lambda repo: None)
    with pytest.raises(RuntimeError), workspace.kept(tmp_path):
        run(["git", "checkout", "-q", "--detach"], tmp_path)  # what a killed `dvc exp run` leaves
        raise RuntimeError("a cell was killed")
    assert run(["git", "symbolic-ref", "HEAD"], tmp_path).stdout.strip() == branch


def test_workspace_leaves_a_head_moved_elsewhere_and_says_so(tmp_path, monkeypatch, capsys):
    branch = _committed_repo(tmp_path)
    monkeypatch.setattr(workspace, "checkout", lambda repo: None)
    with workspace.kept(tmp_path):
        run(["git", "checkout", "-q", "--detach"], tmp_path)
        run(["git", "commit", "-q", "--allow-empty", "-m", "two"], tmp_path)  # not the branch's commit
    assert workspace.git_head(tmp_path)[0] == ""
    name = branch.removeprefix("refs/heads/")
    assert f"HEAD was on {name} and is now detached at" in capsys.readouterr().err


def test_the_pipeline_s_uncached_outputs_are_kept_and_its_models_left_to_the_cache():
    kept = workspace.uncached_outputs(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    assert {"metrics/headline.json", "metrics/teacher.json", "plots/benchmark"} <= set(kept)
    assert not any(path.startswith(("models/", "data/")) for path in kept)


# ------------------------------------------------------------------ a search on the tiny project
SEARCH_GRID = {"seeds": [42], "grid": {"quantize.per_channel": [False, True]}}  # reruns quantize onwards only
NAMES = [name for name, _ in STAGES]
EARLY_STAGES = set(NAMES[:NAMES.index("quantize")])  # the stages no quantize param reaches


KEPT = ("params.yaml", "dvc.lock", "metrics/headline.json")


def digests(repo: Path) -> dict[str, str]:
    return {path: hashlib.sha256((repo / path).read_bytes()).hexdigest() for path in KEPT}


def run_search(project: Path, repo: Path) -> None:
    """The tiny project committed with a 2-cell grid, then `lib.search run` and `front`; the digests of the
    files the search must put back, and the run's output, beside its cell logs in .dvc/tmp/search."""
    copy_project(project, repo)
    (repo / "search.yaml").write_text(yaml.safe_dump(SEARCH_GRID))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny run and a grid"], repo)
    before = digests(repo)
    output = run(["python", "-m", "lib.search", "run", "--grid", "search.yaml"], repo).stdout
    run(["python", "-m", "lib.search", "front", "--grid", "search.yaml"], repo)
    (repo / LOGS / "before.json").write_text(json.dumps(before))
    (repo / LOGS / "output.txt").write_text(output)


@pytest.fixture(scope="module")
def searched(project, tmp_path_factory) -> tuple[Path, str, dict, list[str]]:
    """This worker's copy of the searched project (built once per session), the search's output, the digests
    of the files it must put back as they were, and its two cell logs."""
    built = built_once(tmp_path_factory, "search", lambda repo: run_search(project, repo))
    repo = copy_project(built, tmp_path_factory.mktemp("search") / "repo")
    logs = [(built / LOGS / f"cell-{i:03d}.log").read_text() for i in (1, 2)]
    return (repo, (built / LOGS / "output.txt").read_text(), json.loads((built / LOGS / "before.json").read_text()),
            logs)


def test_search_reuses_the_teacher_in_every_cell_and_reruns_only_late_stages(searched):
    _, output, _, logs = searched
    for log in logs:
        assert TEACHER_SKIPPED in log and TEACHER_RAN not in log
    assert not re.findall(r"Running stage '(\w+)'", logs[0])  # the workspace already held this cell's run
    reran = set(re.findall(r"Running stage '(\w+)'", logs[1]))
    assert {"quantize", "benchmark"} <= reran and not reran & EARLY_STAGES, reran
    assert "train_teacher ran in 0 of 2 cells; the grid has 1 teacher(s)" in output


def test_search_records_both_cells_and_writes_a_non_dominated_front(searched):
    repo, *_ = searched
    out = repo / "plots/search"
    assert {p.name for p in out.iterdir()} >= {"experiments.json", "search.json", "cells.csv", "front.png",
                                               "front.md"}
    report = json.loads((out / "search.json").read_text())
    assert sorted(c["params"]["quantize.per_channel"] for c in report["cells"]) == [False, True]
    assert {c["seed"] for c in report["cells"]} == {42} and report["missing"] == []
    assert all(0.0 <= c["metrics"][ACC] <= 1.0 and c["metrics"][KB] > 0 for c in report["cells"])
    for front, cost in (("size", KB), ("latency", MS)):
        points = {r["recipe"]: (r["summary"][ACC]["mean"], r["summary"][cost]["mean"]) for r in report["recipes"]}
        assert report["fronts"][front], front
        assert not any(dominates(other, points[name]) for name in report["fronts"][front] for other in points.values())
    rows = [line for line in (out / "front.md").read_text().splitlines() if line.startswith("| `")]
    assert len(rows) == sum(bool(r["front"]) for r in report["recipes"])
    assert {row.split(" | ")[0] for row in rows} <= {"| `false`", "| `true`"}


def test_search_puts_the_workspace_back_and_its_saved_runs_rebuild_the_front(searched, tmp_path):
    repo, _, before, _ = searched
    assert digests(repo) == before
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    saved = json.loads((repo / "plots/search/search.json").read_text())
    run(["python", "-m", "lib.search", "front", "--grid", "search.yaml", "--exps", "plots/search/experiments.json",
         "--out", str(tmp_path)], repo)
    assert json.loads((tmp_path / "search.json").read_text()) == saved
    assert not (tmp_path / "experiments.json").exists()
    assert run(["git", "status", "--porcelain", "--", "params.yaml", "dvc.lock"], repo).stdout == ""
