"""What a person reads after a run of the tiny pipeline: headline metrics, the narrowed experiments table,
the results table, the sanity checks and the plot page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEADLINE_KEYS = {"acc", "auc", "f1", "kb", "mmacs", "ms", "x_smaller", "x_faster"}


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


def test_readme_blocks_are_filled_and_seed_headings_nested(tmp_path, project):
    from lib.report import update_readme

    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- results:start -->\nold\n<!-- results:end -->\n## Seeds\n"
                      "<!-- seeds:start -->\n<!-- seeds:end -->\ntail\n")
    bench = json.loads((project / "metrics/benchmark.json").read_text())
    update_readme(readme, bench, "# Experiments compared\n\n| a |\n")
    text = readme.read_text()
    assert "old" not in text and "| `int8_tflite` |" in text
    assert "\n### Experiments compared\n" in text and text.endswith("tail\n")


def test_readme_without_a_block_is_a_user_error(tmp_path):
    from lib.errors import UserError
    from lib.report import fill_block

    with pytest.raises(UserError, match="results:start"):
        fill_block("no markers here", "results", "table")


def test_runs_table_has_one_row_per_finished_run_best_int8_first():
    from lib.report import runs_table

    shown = json.loads((Path(__file__).parent / "fixtures" / "exp_show.json").read_text())
    rows = [line for line in runs_table(shown).splitlines()[2:]]
    assert len(rows) == 6  # two recipes × seeds 42, 43, 44; queued and failed runs are left out
    assert all(row.startswith("| `recipe.x=") for row in rows)
    int8_acc = [float(row.split(" | ")[5]) for row in rows]
    assert int8_acc == sorted(int8_acc, reverse=True)
