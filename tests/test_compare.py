"""The comparison of recipes across seeds (lib.exps, lib.stats, lib.compare, lib.render) on real
`dvc exp show --json` output (tests/fixtures/exp_show.json, see make_exp_show.py)."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from lib import compare, exps, render, stats
from lib.errors import UserError
from lib.grid import Grid

FIXTURE = Path(__file__).parent / "fixtures" / "exp_show.json"
PREDICTIONS_CSV = """artifact,index,label,predicted,p_a,p_b
teacher_torch,1,1,1,0.2,0.8
teacher_torch,0,0,0,0.9,0.1
teacher_torch,2,1,1,0.3,0.7
int8_tflite,0,0,1,0.4,0.6
int8_tflite,1,1,1,0.2,0.8
int8_tflite,2,1,0,0.6,0.4
"""


@pytest.fixture
def shown() -> list:
    return json.loads(FIXTURE.read_text())


def finished_runs(shown: list) -> list[dict]:
    """The fixture's finished baseline and experiment revs, read without lib.exps."""
    revs = [b for b in shown if b["rev"] != "workspace"]
    revs += [rev for b in shown for exp in b["experiments"] or [] if exp["executor"]["state"] == "success"
             for rev in exp["revs"]]
    return [rev["data"] for rev in revs]


def fixture_values(shown: list, x: int, artifact: str, metric: str) -> np.ndarray:
    """One recipe's values of a metric, in seed order."""
    runs = sorted((d["params"]["params.yaml"]["data"]["seed"], d["metrics"]["metrics/headline.json"]["data"])
                  for d in finished_runs(shown) if d["params"]["params.yaml"]["data"]["recipe"]["x"] == x)
    return np.array([headline[artifact][metric] for _, headline in runs], dtype=float)


def exp_name_with(shown: list, x: int) -> str:
    return next(rev["name"] for b in shown for exp in b["experiments"] or [] for rev in exp["revs"]
                if exp["executor"]["state"] == "success"
                and rev["data"]["params"]["params.yaml"]["data"]["recipe"]["x"] == x)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def labelled(runs: list[exps.Run], baseline: dict | None = None) -> dict[str, list[exps.Run]]:
    groups: dict[str, list[exps.Run]] = {}
    for run, label in zip(runs, exps.recipe_labels(runs, baseline)):
        groups.setdefault(label, []).append(run)
    return groups


# Reading experiments (lib.exps)

def test_runs_group_into_recipes_labelled_by_the_params_that_differ(shown):
    found = exps.collect_runs(shown)
    recipes = labelled(found.runs)
    assert sorted(recipes) == ["recipe.x=1", "recipe.x=2"]  # recipe.name is the same everywhere, so not shown
    for runs in recipes.values():
        assert sorted(r.seed for r in runs) == [42, 43, 44]
    assert any("queued" in n for n in found.notes) and any("failed" in n for n in found.notes)


def test_beside_a_baseline_each_recipe_is_named_by_what_it_changes():
    params = {"base": {"a": 1, "b": 1, "c": 0}, "one": {"a": 2, "b": 1, "c": 0}, "two": {"a": 2, "b": 2, "c": 0}}
    runs = [exps.Run(name=name, rev=name, seed=42, params=p, metrics={}) for name, p in params.items()]
    assert exps.recipe_labels(runs, params["base"]) == ["default", "a=2", "a=2, b=2"]


def test_a_run_whose_params_differ_from_the_baseline_only_as_float_and_int_is_the_default():
    runs = [exps.Run(name="int", rev="int", seed=42, params={"a": 0, "b": 1}, metrics={}),
            exps.Run(name="float", rev="float", seed=43, params={"a": 0.0, "b": 1}, metrics={})]
    assert exps.recipe_labels(runs, {"a": 0, "b": 1}) == ["default", "default"]


def test_labelling_recipes_leaves_the_runs_as_they_were(shown):
    runs = exps.collect_runs(shown).runs
    before = copy.deepcopy(runs)
    exps.recipe_labels(runs, runs[-1].params)
    assert runs == before
    with pytest.raises(AttributeError):
        runs[0].seed = 0  # a Run is frozen: nothing can label it in place


def test_comparing_leaves_the_experiments_read_as_they_were(shown, tmp_path):
    before = copy.deepcopy(shown)
    compare.compare(shown, baseline=exp_name_with(shown, 2), repo=tmp_path)
    assert shown == before


def test_clean_workspace_is_counted_once_as_its_commit(shown):
    runs = exps.collect_runs(shown).runs
    assert "workspace" not in [r.rev for r in runs]
    assert shown[1]["rev"] in [r.rev for r in runs]


def test_workspace_with_new_results_is_a_run_of_its_own(shown):
    dirty = copy.deepcopy(shown)
    dirty[0]["data"]["params"]["params.yaml"]["data"]["seed"] = 45
    assert [r.seed for r in exps.collect_runs(dirty).runs].count(45) == 1


def test_a_commit_that_repeats_a_changed_workspace_is_skipped_in_the_workspace_s_name(shown):
    changed = copy.deepcopy(shown)
    headline = changed[0]["data"]["metrics"]["metrics/headline.json"]["data"]
    artifact = next(iter(headline))
    headline[artifact]["acc"] = 0.5
    notes = exps.collect_runs(changed).notes
    assert f"skipped {changed[1]['name']}: same params and seed as workspace" in notes


def test_several_experiment_files_are_read_as_one_in_order(shown, tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps(shown[:1]))
    second.write_text(json.dumps(shown[1:]))
    assert exps.load_exp_shows([first, second]) == shown


def test_an_excluded_experiment_is_left_out_and_noted(shown):
    name = exp_name_with(shown, 2)
    found = exps.collect_runs(shown, excluded=[name])
    assert name not in [r.name for r in found.runs]
    assert f"left out 1 run(s) by --exclude: {name}" in found.notes


@pytest.mark.parametrize("by", ["name", "rev"])
def test_an_excluded_commit_makes_way_for_another_run_of_its_recipe_and_seed(shown, by):
    commit = shown[1]
    runs = exps.collect_runs(shown, excluded=[commit["name"] if by == "name" else commit["rev"][:7]]).runs
    assert commit["rev"] not in [r.rev for r in runs]
    assert "workspace" in [r.rev for r in runs]  # the clean workspace repeats the commit's run


def test_excluding_a_run_that_is_not_there_is_a_user_error_listing_the_runs(shown):
    with pytest.raises(UserError, match=r"--exclude: no run is named nope; runs: .*adunc-gulf"):
        exps.collect_runs(shown, excluded=["nope"])


def test_an_unknown_exclude_saves_no_experiments_file(tmp_path):
    saved = tmp_path / "experiments.json"
    with pytest.raises(UserError, match="--exclude: no run is named nope"):
        compare.main(["--exps", str(FIXTURE), "--exclude", "nope", "--save-exps", str(saved),
                      "--md", str(tmp_path / "c.md")])
    assert not saved.exists()


def test_without_commits_only_experiments_are_runs(shown):
    runs = exps.collect_runs(shown, commits=False).runs
    assert runs and not any(r.is_commit for r in runs)
    assert len(runs) == len(exps.collect_runs(shown).runs) - 1


def test_saved_experiments_leave_out_the_excluded_runs_and_commits(shown, tmp_path):
    saved, name = tmp_path / "experiments.json", exp_name_with(shown, 2)
    compare.main(["--exps", str(FIXTURE), "--exclude", name, "--no-commits", "--save-exps", str(saved),
                  "--json", str(tmp_path / "c.json"), "--md", str(tmp_path / "c.md")])
    runs = exps.collect_runs(json.loads(saved.read_text())).runs
    assert runs and name not in [r.name for r in runs] and not any(r.is_commit for r in runs)
    report = json.loads((tmp_path / "c.json").read_text())
    assert sorted(run["name"] for recipe in report["recipes"].values() for run in recipe["runs"]) == \
        sorted(r.name for r in runs)


def test_params_that_differ_between_rows_are_listed(shown):
    assert exps.varying_params(shown) == ["recipe.x", "seed"]


def test_missing_experiments_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        exps.load_exp_show(tmp_path / "missing.json")


def test_metrics_file_no_run_wrote_is_a_user_error(shown):
    with pytest.raises(UserError, match="no finished experiment with metrics/other.json"):
        exps.collect_runs(shown, "metrics/other.json")


def test_no_finished_experiment_is_a_user_error(shown):
    queued_only = [{**shown[1], "data": {**shown[1]["data"], "metrics": {}}, "experiments": None}]
    with pytest.raises(UserError, match="no finished experiment"):
        exps.collect_runs(queued_only)


# Statistics (lib.stats)

def test_paired_test_agrees_with_scipy():
    diffs = [0.1, 0.2, 0.3, -0.05, 0.4, 0.5]
    result = stats.paired_test(diffs)
    assert result["p"] == pytest.approx(0.0625)  # rank sum of negatives 1: 2 · 2/2^6
    ci = scipy.stats.bootstrap((np.array(diffs),), np.mean, n_resamples=stats.BOOTSTRAP_RESAMPLES,
                               method="percentile", rng=np.random.default_rng(stats.BOOTSTRAP_SEED)).confidence_interval
    assert result["ci95"] == pytest.approx([ci.low, ci.high])
    assert result["ci95"][0] < result["mean_diff"] < result["ci95"][1]


def test_five_seeds_can_never_reach_significance():
    all_better = stats.paired_test([0.01, 0.02, 0.03, 0.04, 0.05])
    assert all_better["p"] == pytest.approx(stats.smallest_wilcoxon_p(5)) == pytest.approx(0.0625)
    assert not all_better["can_reach_alpha"]
    assert stats.paired_test([0.01] * 6)["can_reach_alpha"]


def test_float_noise_differences_are_ties():
    assert stats.paired_test([0.7 - 0.6999999999999999, 0.0, 0.0])["p"] == 1.0


def test_a_mean_difference_that_is_float_noise_below_zero_prints_as_a_tie():
    tie = {"n": 3, "mean_diff": (-3 / 624 + 1 / 624 + 2 / 624) / 3, "ci95": [-0.0048, 0.0032]}
    assert tie["mean_diff"] < 0
    assert render.mean_difference(tie) == "+0 [-0.0048, 0.0032]"
    assert render.mean_difference({**tie, "mean_diff": -0.0048}) == "-0.0048 [-0.0048, 0.0032]"


def test_mcnemar_is_an_exact_binomial_test_on_the_discordant_pairs():
    first = np.array([True] * 10 + [False] * 2 + [True] * 20 + [False] * 5)
    second = np.array([False] * 10 + [True] * 2 + [True] * 20 + [False] * 5)
    result = stats.mcnemar(first, second)
    assert (result["b"], result["c"]) == (10, 2)
    assert result["p"] == pytest.approx(scipy.stats.binomtest(2, 12).pvalue)
    assert stats.mcnemar(first, first)["p"] == 1.0


# The comparison (lib.compare)

def test_baseline_recipe_is_called_default(shown, tmp_path):
    report = compare.compare(shown, repo=tmp_path)
    assert report["baseline"] == "default"
    assert sorted(report["recipes"]) == ["default", "recipe.x=2"]
    assert report["baseline_params"] == {"recipe.x": 1}
    assert {t["recipe"] for t in report["paired"]} == {"recipe.x=2"}


def test_recipe_mean_and_sample_std_match_numpy(shown, tmp_path):
    report = compare.compare(shown, repo=tmp_path)
    for x, name in ((1, "default"), (2, "recipe.x=2")):
        values = fixture_values(shown, x, "int8_tflite", "acc")
        summary = report["recipes"][name]["summary"]["int8_tflite.acc"]
        assert summary["n"] == 3
        assert summary["mean"] == pytest.approx(values.mean())
        assert summary["std"] == pytest.approx(values.std(ddof=1))


def test_null_metric_is_left_out_of_its_mean(shown, tmp_path):
    report = compare.compare(shown, repo=tmp_path)
    assert report["recipes"]["default"]["summary"]["pruned_torch.auc"]["n"] == 2  # seed 44 wrote null


def test_paired_test_pairs_by_seed_against_the_baseline(shown, tmp_path):
    report = compare.compare(shown, metrics=["int8_tflite.ms"], repo=tmp_path)
    (test,) = report["paired"]
    diffs = (fixture_values(shown, 2, "int8_tflite", "ms")
             - fixture_values(shown, 1, "int8_tflite", "ms"))
    assert test["recipe"] == "recipe.x=2" and test["n"] == 3
    assert test["mean_diff"] == pytest.approx(diffs.mean())
    assert test["p"] == pytest.approx(scipy.stats.wilcoxon(diffs, method="exact").pvalue)


def test_mcnemar_reads_the_predictions_of_a_committed_revision(tmp_path):
    path = tmp_path / exps.PREDICTIONS
    path.parent.mkdir(parents=True)
    path.write_text(PREDICTIONS_CSV)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "-qm", "run")
    run = exps.Run(name="exp", rev=git(tmp_path, "rev-parse", "HEAD"), seed=42, params={}, metrics={})
    path.write_text("artifact,index,label,predicted\n")  # the workspace moved on; the revision did not
    tests, notes = compare.mcnemar_per_run([run], [("teacher_torch", "int8_tflite")], tmp_path)
    assert notes == []
    assert [(t["b"], t["c"]) for t in tests] == [(2, 0)]  # int8 wrong on images 0 and 2, teacher right


def test_mcnemar_notes_an_artifact_the_run_did_not_predict(tmp_path):
    (tmp_path / exps.PREDICTIONS).parent.mkdir(parents=True)
    (tmp_path / exps.PREDICTIONS).write_text(PREDICTIONS_CSV)
    run = exps.Run(name="ws", rev=exps.WORKSPACE, seed=42, params={}, metrics={})
    tests, notes = compare.mcnemar_per_run([run], [("student_torch", "int8_tflite")], tmp_path)
    assert tests == [] and "student_torch" in notes[0] and "int8_tflite, teacher_torch" in notes[0]


def test_runs_without_predictions_here_are_noted_not_tested(shown, tmp_path):
    report = compare.compare(shown, repo=tmp_path)  # tmp_path holds no revision: no predictions to read
    assert report["mcnemar"] == []
    assert sum(n.startswith("McNemar: no ") for n in report["notes"]) == 6


def test_baseline_can_be_named_by_an_experiment(shown, tmp_path):
    report = compare.compare(shown, baseline=exp_name_with(shown, 2), repo=tmp_path)
    assert report["baseline_params"] == {"recipe.x": 2}
    assert set(report["recipes"]) == {"default", "recipe.x=1"}
    assert {t["recipe"] for t in report["paired"]} == {"recipe.x=1"}


def test_baseline_can_be_named_by_its_recipe(shown, tmp_path):
    report = compare.compare(shown, baseline="recipe.x=2", repo=tmp_path)
    assert report["baseline_params"] == {"recipe.x": 2}


def test_default_baseline_is_the_recipe_of_the_current_commit(shown, tmp_path):
    for baseline in shown[:2]:  # the workspace and its commit: seed 100, later than every experiment's
        baseline["data"]["params"]["params.yaml"]["data"]["seed"] = 100
    report = compare.compare(shown, repo=tmp_path)
    assert report["baseline_params"] == {"recipe.x": 1}
    assert [r["seed"] for r in report["recipes"]["default"]["runs"]] == [43, 44, 100]


def test_grid_keeps_its_cells_and_the_baseline_at_its_seeds_only(shown, tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 42\nrecipe: {x: 1, name: base}\n")
    lever = Grid({"recipe.x": [2]}, seeds=[42, 43])
    report = compare.compare(shown, repo=tmp_path, grids=[lever])
    assert {name: [r["seed"] for r in recipe["runs"]] for name, recipe in report["recipes"].items()} == {
        "default": [42, 43], "recipe.x=2": [42, 43]}  # neither run at seed 44
    assert any(n.startswith("left out 2 finished run(s)") for n in report["notes"])
    with pytest.raises(UserError, match="no finished run is a cell"):
        compare.compare(shown, repo=tmp_path, grids=[Grid({"recipe.x": [3]}, seeds=[46])])


def test_a_run_made_before_an_optional_key_existed_counts_as_its_default(shown, tmp_path):
    assert all(r.params["student_last_stride"] == 2 for r in exps.collect_runs(shown).runs)  # none of them has it
    lever = Grid({"recipe.x": [2]}, seeds=[42, 43])
    (tmp_path / "params.yaml").write_text("seed: 42\nrecipe: {x: 1, name: base}\nstudent_last_stride: 2\n")
    report = compare.compare(shown, repo=tmp_path, grids=[lever])
    assert {name: len(recipe["runs"]) for name, recipe in report["recipes"].items()} == {"default": 2, "recipe.x=2": 2}
    (tmp_path / "params.yaml").write_text("seed: 42\nrecipe: {x: 1, name: base}\nstudent_last_stride: 1\n")
    with pytest.raises(UserError, match="no finished run is a cell"):
        compare.compare(shown, repo=tmp_path, grids=[lever])


def test_unknown_baseline_lists_recipes(shown, tmp_path):
    with pytest.raises(UserError, match="recipe.x=1; recipe.x=2"):
        compare.compare(shown, baseline="nope", repo=tmp_path)


def test_unknown_metric_lists_valid_names(shown, tmp_path):
    with pytest.raises(UserError, match="unknown int8_tflite.accurcy") as err:
        compare.compare(shown, metrics=["int8_tflite.accurcy"], repo=tmp_path)
    assert "int8_tflite.acc" in str(err.value) and "teacher_torch.ms" in str(err.value)


# Rendering (lib.render) and the command line

def test_markdown_shows_recipes_tests_and_the_small_n_warning(shown, tmp_path):
    text = render.markdown(compare.compare(shown, repo=tmp_path))
    assert "`default` is the baseline recipe (`recipe.x=1`)" in text
    assert "| `default` | 3 | 42, 43, 44 |" in text and "| `recipe.x=2` | 42, 43, 44 | " in text
    assert "can never reach p < 0.05" in text
    assert "skipped" in text and "queued" in text


def test_wide_table_is_split_into_tables_that_fit(shown):
    header = ["recipe", *[f"metric {i}" for i in range(8)]]
    rows = [["`a-long-recipe-name=1, another-param=2`", *[f"0.{i}123 ± 0.0045" for i in range(8)]]]
    lines = render.fitted(header, rows, width=100)
    tables = [line for line in lines if line.startswith("| recipe |")]
    assert len(tables) > 1 and max(map(len, lines)) <= 100
    cells = [c.strip() for line in lines if line.startswith("| `a-long") for c in line.strip("|").split("|")]
    assert sorted(set(cells)) == sorted(set(rows[0]))  # every cell kept, the recipe repeated in each table


def test_plot_shows_the_artifacts_in_the_pipelines_order():
    names = ["dynamic_tflite", "int8_tflite", "pruned_torch", "student_torch", "teacher_resnet18_torch",
             "teacher_torch"]  # as `dvc exp show` sorts a metrics file's keys
    report = {"recipes": {"default": {"summary": {f"{n}.acc": {"n": 1} for n in names}}}}
    assert render.artifacts_with(report, "acc") == ["teacher_torch", "student_torch", "pruned_torch",
                                                    "dynamic_tflite", "int8_tflite", "teacher_resnet18_torch"]


@pytest.mark.parametrize("n", [1, 10, 11, 20, 45])
def test_every_recipe_of_the_plot_has_its_own_colour_and_marker(n):
    styles = render.series_styles(n)
    assert len(styles) == n and len(set(styles)) == n


def test_unknown_plot_metric_lists_valid_names(shown, tmp_path):
    report = compare.compare(shown, repo=tmp_path)
    with pytest.raises(UserError, match="valid: acc, auc, f1, kb, ms"):
        render.plot(report, "accuracy", tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


def test_cli_writes_markdown_json_and_plot(tmp_path, capsys):
    md, js, png = tmp_path / "compare.md", tmp_path / "compare.json", tmp_path / "accuracy.png"
    compare.main(["--exps", str(FIXTURE), "--metric", "int8_tflite.acc", "--md", str(md),
                  "--json", str(js), "--plot", str(png)])
    assert capsys.readouterr().out == ""
    assert "`recipe.x=2`" in md.read_text()
    assert json.loads(js.read_text())["metrics"] == ["int8_tflite.acc"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_experiments_keep_the_state_but_no_machine_paths(shown, tmp_path):
    saved = tmp_path / "experiments.json"
    compare.main(["--exps", str(FIXTURE), "--save-exps", str(saved), "--md", str(tmp_path / "c.md")])
    text = saved.read_text()
    assert '"local"' not in text and '"log"' not in text
    assert '"state": "success"' in text
    rebuilt, original = compare.compare(json.loads(text), repo=tmp_path), compare.compare(shown, repo=tmp_path)
    assert rebuilt["recipes"] == original["recipes"]
