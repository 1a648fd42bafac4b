"""What a person reads after a run of the tiny pipeline: headline metrics, the narrowed experiments table,
the results table, the sanity checks and the plot page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HEADLINE_KEYS = {"acc", "auc", "f1", "decision", "kb", "mmacs", "ms", "x_smaller", "x_faster"}
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "exp_show.json"


def fixture_experiments() -> list:
    """`dvc exp show --json` of two recipes over three seeds, a queued and a failed run."""
    return json.loads(FIXTURE.read_text())


def python(args: list[str], cwd: Path, columns: int = 200) -> str:
    env = {**os.environ, "COLUMNS": str(columns),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_headline_has_the_compact_figures_of_every_artifact(project):
    headline = json.loads((project / "metrics/headline.json").read_text())
    bench = json.loads((project / "metrics/benchmark.json").read_text())
    assert set(headline) == {k for k, v in bench.items() if isinstance(v, dict) and "latency_ms" in v}
    for name, figures in headline.items():
        assert set(figures) == HEADLINE_KEYS, name
        assert figures["acc"] == bench[name]["test"]["accuracy"]
        assert figures["kb"] == round(bench[name]["size_bytes"] / 1024, 1)


def test_dvc_metrics_are_the_headline_only(project):
    shown = json.loads(subprocess.run(["dvc", "metrics", "show", "--json"], cwd=project, capture_output=True,
                                      text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}"
                                                      f"{os.pathsep}{os.environ['PATH']}"}).stdout)
    files = {path for rev in shown.values() for path in rev["data"]}
    assert files == {"metrics/headline.json"}


def test_experiments_table_fits_a_200_column_terminal(project):
    table = python(["-m", "lib.report", "--experiments"], project, columns=200)
    assert max(len(line) for line in table.splitlines()) <= 200
    for column in ("int8_tflite.acc", "int8_tflite.auc", "int8_tflite.kb", "teacher_torch.acc"):
        assert column in table, table


def test_results_table_lists_every_artifact(project):
    table = python(["-m", "lib.report"], project)
    for name in json.loads((project / "metrics/headline.json").read_text()):
        assert f"`{name}`" in table


def test_benchmark_records_sanity_checks(project):
    bench = json.loads((project / "metrics/benchmark.json").read_text())
    assert isinstance(bench["warnings"], list)
    for name in json.loads((project / "metrics/headline.json").read_text()):
        assert bench[name]["beats_majority_class"] == (
            bench[name]["test"]["accuracy"] > bench["baseline_majority_class"]["test"]["accuracy"])


def test_plots_name_each_artifact_in_a_legend(project):
    roc = (project / "plots/benchmark/roc.csv").read_text().splitlines()
    assert roc[0] == "artifact,step,fpr,tpr"
    deployed = (project / "plots/benchmark/deployed.csv").read_text().splitlines()
    assert len(deployed) == 2 and deployed[1].startswith("int8_tflite,")
    page_dir = project / "dvc_plots_views"
    subprocess.run(["dvc", "plots", "show", "--out", str(page_dir)], cwd=project, check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    page = (page_dir / "index.html").read_text()
    assert '"field": "artifact"' in page  # ROC and trade-off points coloured by artifact, with a legend
    assert "INT8 model of each experiment" in page
    assert '"text": {"field": "xy_count"' in page  # confusion matrices print their counts


README = ("# Title\n<!-- results:start -->\nold\n<!-- results:end -->\n"
          "## Seeds\n<!-- seeds:start -->\n<!-- seeds:end -->\n"
          "## Students\n<!-- students:start -->\n<!-- students:end -->\n"
          "## Pruning\n<!-- pruning:start -->\n<!-- pruning:end -->\ntail\n")


def block(text: str, name: str) -> str:
    """What `write_blocks` wrote between a block's markers."""
    return text.split(f"<!-- {name}:start -->\n", 1)[1].split(f"\n<!-- {name}:end -->", 1)[0]


def test_readme_blocks_are_filled_under_the_readme_headings(tmp_path, project):
    from lib.compare import compare
    from lib.report import BLOCK_FILES, blocks, write_blocks

    readme = tmp_path / "README.md"
    readme.write_text(README)
    bench = json.loads((project / "metrics/benchmark.json").read_text())
    write_blocks(blocks(bench, compare(fixture_experiments(), repo=tmp_path), fixture_experiments()),
                 dict.fromkeys(BLOCK_FILES, readme))
    text = readme.read_text()
    assert "\nold\n" not in text and "| `int8_tflite` |" in block(text, "results")
    seeds = block(text, "seeds")
    assert seeds.startswith("### Experiments compared across seeds\n") and "\n#### Paired by seed" in seeds
    assert "| `recipe.x=2` | INT8 acc | 42, 43, 44 |" in seeds
    assert "| `default` |" in block(text, "students") and text.endswith("tail\n")


def test_readme_seeds_block_leaves_mcnemar_to_the_full_report(tmp_path):
    from lib.compare import compare
    from lib.report import BLOCK_FILES, SEEDS_BLOCK, SEEDS_MD, seeds_block

    seeds = seeds_block(compare(fixture_experiments(), repo=tmp_path))
    assert "McNemar" in seeds and f"[{SEEDS_MD}](" in seeds  # named and linked, not tabulated
    link = seeds.split(f"[{SEEDS_MD}](", 1)[1].split(")", 1)[0]  # relative to the file that holds the block
    assert (ROOT / BLOCK_FILES[SEEDS_BLOCK]).parent.joinpath(link).resolve() == (ROOT / SEEDS_MD).resolve()
    assert "| first |" not in seeds and "| b |" not in seeds


def test_readme_blocks_of_the_committed_runs_fit_120_columns(tmp_path):
    from lib.exps import load_exp_show, workspace_recipe
    from lib.report import BLOCK_FILES, PRUNING_REPORT, SEEDS_REPORT, STUDENTS_EXPS, blocks, write_blocks

    readme = tmp_path / "README.md"
    readme.write_text(README)
    write_blocks(blocks(json.loads((ROOT / "metrics/benchmark.json").read_text()),
                        json.loads((ROOT / SEEDS_REPORT).read_text()), load_exp_show(ROOT / STUDENTS_EXPS),
                        workspace_recipe(ROOT), pruning=json.loads((ROOT / PRUNING_REPORT).read_text())),
                 dict.fromkeys(BLOCK_FILES, readme))
    text = readme.read_text()
    for name in ("results", "seeds", "students", "pruning"):
        lines = block(text, name).splitlines()
        assert len(lines) > 5, name
        assert max(map(len, lines)) <= 120, (name, max(lines, key=len))
    assert text.count("`default`") >= 3 and "quantize.per_channel=false`" in block(text, "seeds")
    pruning = block(text, "pruning")  # recipes named without their section; each paired with `default`
    assert "| `default` | 3 |" in pruning and "| `method=unstructured, ratio=0.7515, scope=layer` | 3 |" in pruning
    assert "prune." not in pruning and pruning.count("`default`, paired") == 1


def test_report_writes_each_block_into_its_file(tmp_path):
    from lib.report import BLOCK_FILES, PRUNING_REPORT, SEEDS_REPORT, STUDENTS_EXPS

    assert {block: str(path) for block, path in BLOCK_FILES.items()} == {
        "results": "README.md", "search": "README.md", "seeds": "docs/recipes.md", "students": "docs/students.md",
        "pruning": "docs/pruning.md"}
    for path in ("metrics/benchmark.json", SEEDS_REPORT, STUDENTS_EXPS, PRUNING_REPORT, "params.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text())
    by_file: dict = {}
    for name, path in BLOCK_FILES.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():  # each file holds its own blocks only
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(f"# {path}\n" + "".join(f"<!-- {n}:start -->\nold\n<!-- {n}:end -->\n"
                                                             for n in names) + "tail\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "lib.report", "--write"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, path in BLOCK_FILES.items():
        text = (tmp_path / path).read_text()
        assert text.startswith(f"# {path}\n") and text.endswith("tail\n") and block(text, name) != "old", path
    assert "| `int8_tflite` |" in block((tmp_path / "README.md").read_text(), "results")
    assert "\n#### Paired by seed" in block((tmp_path / "docs/recipes.md").read_text(), "seeds")
    assert "`student=mnasnet`" in block((tmp_path / "docs/students.md").read_text(), "students")
    assert "`make search`" in block((tmp_path / "README.md").read_text(), "search")  # none committed here


def test_committed_docs_hold_the_blocks_the_report_writes_there():
    from lib.report import BLOCK_FILES

    for name, path in BLOCK_FILES.items():
        text = (ROOT / path).read_text()
        assert f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text, path


def test_default_in_the_runs_table_is_the_recipe_of_params_yaml():
    from lib.exps import collect_runs
    from lib.report import runs_table

    runs = collect_runs(fixture_experiments()).runs
    current = next(r.params for r in runs if r.params["recipe.x"] == 2)  # not the commit's recipe
    rows = [line for line in runs_table(fixture_experiments(), current).splitlines() if line.startswith("| `")]
    assert sorted(row.split(" | ")[0] for row in rows) == ["| `default`"] * 3 + ["| `recipe.x=1`"] * 3
    assert "`default` is the recipe of params.yaml" in " ".join(runs_table(fixture_experiments(), current).split())


def write_params_yaml(repo: Path, x: int, **added) -> None:
    """A params.yaml in `repo`: the commit's params (recipe.x = 1) with recipe.x = `x` and `added` params."""
    params = fixture_experiments()[1]["data"]["params"]["params.yaml"]["data"]
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "recipe": {**params["recipe"], "x": x}, **added}))


def test_default_baseline_is_the_recipe_of_params_yaml_unless_another_is_named(tmp_path):
    from lib.compare import compare
    from lib.render import markdown

    write_params_yaml(tmp_path, 2)  # the commit's recipe is recipe.x=1: params.yaml's wins
    report = compare(fixture_experiments(), repo=tmp_path)
    assert report["baseline_params"] == {"recipe.x": 2} and set(report["recipes"]) == {"default", "recipe.x=1"}
    assert [r["seed"] for r in report["recipes"]["default"]["runs"]] == [42, 43, 44]
    assert report["baseline_vs_params_yaml"] == {"changed": {}, "missing": []}
    assert "`default` is the recipe of params.yaml, the baseline (`recipe.x=2`)" in markdown(report)
    named = compare(fixture_experiments(), baseline="recipe.x=1", repo=tmp_path)  # --baseline still overrides
    assert named["baseline_params"] == {"recipe.x": 1} and set(named["recipes"]) == {"default", "recipe.x=2"}
    assert named["baseline_vs_params_yaml"] == {"changed": {"recipe.x": 1}, "missing": []}


def test_a_default_that_is_not_the_recipe_of_params_yaml_says_how_it_differs(tmp_path):
    from lib.compare import compare
    from lib.render import markdown

    write_params_yaml(tmp_path, 3, added=True)  # no run has this recipe
    report = compare(fixture_experiments(), repo=tmp_path)
    assert report["baseline_params"] == {"recipe.x": 1}  # the commit's recipe
    assert report["baseline_vs_params_yaml"] == {"changed": {"recipe.x": 1}, "missing": ["added"]}
    assert ("`default` is the baseline recipe (`recipe.x=1`); every other recipe is named by the params it changes. "
            "It is not the recipe of today's params.yaml: it has `recipe.x=1`; its runs had no `added`.") \
        in " ".join(markdown(report).split())


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_mcnemar_of_a_run_without_predictions_here_is_carried_from_an_earlier_report(tmp_path, suffix):
    from lib.compare import compare
    from lib.exps import collect_runs
    from lib.render import markdown

    run = collect_runs(fixture_experiments()).runs[-1]
    earlier = compare(fixture_experiments(), repo=tmp_path)
    earlier["mcnemar"] = [{"run": run.name, "recipe": "an old name", "seed": run.seed, "first": "teacher_torch",
                           "second": "int8_tflite", "b": 2, "c": 0, "p": 0.5}]
    path = tmp_path / f"earlier{suffix}"
    path.write_text(json.dumps(earlier) if suffix == ".json" else markdown(earlier))
    report = compare(fixture_experiments(), baseline=run.name, repo=tmp_path, mcnemar_from=path)
    assert report["mcnemar"] == [{"run": run.name, "seed": run.seed, "first": "teacher_torch", "b": 2, "c": 0,
                                  "second": "int8_tflite", "p": 0.5, "carried": True, "recipe": "default"}]
    assert sum(n.startswith("McNemar: no ") for n in report["notes"]) == 5  # the other runs: no predictions
    assert any(n.startswith(f"McNemar of {run.name}: not recomputed") and str(path) in n for n in report["notes"])
    row = f"| {run.name} | `default` | {run.seed} | `teacher_torch` | `int8_tflite` | 2 | 0 | 0.5000 | carried over |"
    assert row in markdown(report)


def test_readme_without_a_block_is_a_user_error(tmp_path):
    from lib.errors import UserError
    from lib.report import fill_block

    with pytest.raises(UserError, match="results:start"):
        fill_block("no markers here", "results", "table")


def test_runs_table_has_one_row_per_finished_run_best_int8_first():
    from lib.report import runs_table

    rows = [line for line in runs_table(fixture_experiments()).splitlines() if line.startswith("| `")]
    assert len(rows) == 6  # two recipes × seeds 42, 43, 44; queued and failed runs are left out
    assert sorted(row.split(" | ")[0] for row in rows) == ["| `default`"] * 3 + ["| `recipe.x=2`"] * 3
    int8_acc = [float(row.split(" | ")[5]) for row in rows]
    assert int8_acc == sorted(int8_acc, reverse=True)
