"""Sharing the tiny run: models through a DVC remote, experiments through a git remote, a parallel queue.

Every test works on `origin`, a committed copy of the session's tiny project, so the project itself stays as
`dvc repro` left it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run, tool_env

QUEUED = {"bench-runs-4": 4, "bench-runs-5": 5}  # experiment name → benchmark.runs
QUEUE_TIMEOUT_S = 600
EXP_SHOW_TIMEOUT_S = 60


def _skip_dvc_tmp(folder: str, names: list[str]) -> list[str]:
    """Leave out .dvc/tmp (locks, the state index, queue logs): they belong to one checkout."""
    return ["tmp"] if Path(folder).name == ".dvc" else []


@pytest.fixture(scope="module")
def origin(project, tmp_path_factory) -> Path:
    """The tiny project with its results committed and a local-directory DVC remote as the default."""
    repo = tmp_path_factory.mktemp("origin")
    shutil.copytree(project, repo, dirs_exist_ok=True, ignore=_skip_dvc_tmp)
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path_factory.mktemp("dvc-storage"))], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny run and its DVC remote"], repo)
    return repo


def exp_show(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json` as experiment name → {state, params, metrics}."""
    return _by_name(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))


def _by_name(shown: list) -> dict[str, dict]:
    return {rev["name"]: {"state": (exp.get("executor") or {}).get("state"),
                          "params": (rev["data"] or {}).get("params", {}).get("params.yaml", {}).get("data", {}),
                          "metrics": (rev["data"] or {}).get("metrics", {})}
            for baseline in shown for exp in baseline.get("experiments") or [] for rev in exp["revs"]}


@pytest.fixture(scope="module")
def queued(origin) -> dict[str, dict]:
    """Two benchmark-only experiments run by two queue workers at once; returns them as `exp_show` gives them."""
    for name, runs in QUEUED.items():
        run(["dvc", "exp", "run", "--queue", "--name", name, "-S", f"benchmark.runs={runs}"], origin)
    # The workers outlive `dvc queue start` and inherit its output: captured, it would keep the pipe open
    # (and this call waiting) until the last worker exits, which a `--clean` worker does not always do.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=origin, env=tool_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        # while a queue worker sets up its executor, `dvc exp show` can fail on its half-made folder, or wait on
        # the lock a worker holds (DVC issue 8762): ask again
        try:
            shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=origin, env=tool_env(), capture_output=True,
                                   text=True, timeout=EXP_SHOW_TIMEOUT_S)
            exps = _by_name(json.loads(shown.stdout)) if shown.returncode == 0 else {}
        except subprocess.TimeoutExpired:
            exps = {}
        if all(exps.get(name, {}).get("state") in ("success", "failed") for name in QUEUED):
            return exps
        if time.monotonic() > deadline:
            pytest.fail(f"queue not done after {QUEUE_TIMEOUT_S} s:\n{run(['dvc', 'queue', 'status'], origin).stdout}")
        time.sleep(5)


def test_fresh_clone_pulls_the_committed_models_without_retraining(origin, tmp_path):
    run(["dvc", "push"], origin)
    run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], tmp_path)
    clone = tmp_path / "clone"
    assert not (clone / "models/student_int8.tflite").exists()
    run(["dvc", "pull"], clone)
    assert json.loads(run(["dvc", "status", "--json"], clone).stdout) == {}
    for model in ("teacher.pt", "student_pruned.pt", "student_int8.tflite"):
        assert (clone / "models" / model).read_bytes() == (origin / "models" / model).read_bytes()


def test_two_queued_experiments_run_in_parallel_and_record_metrics(queued):
    for name, runs in QUEUED.items():
        assert queued[name]["state"] == "success", name
        assert queued[name]["params"]["benchmark"]["runs"] == runs
        headline = queued[name]["metrics"]["metrics/headline.json"]["data"]
        assert 0.0 <= headline["int8_tflite"]["acc"] <= 1.0


def test_experiment_travels_through_a_git_remote(origin, queued, tmp_path):
    bare = tmp_path / "shared.git"
    run(["git", "init", "-q", "--bare", str(bare)], tmp_path)
    run(["dvc", "exp", "push", str(bare), "bench-runs-4"], origin)
    run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], tmp_path)
    clone = tmp_path / "clone"
    assert "bench-runs-4" not in exp_show(clone)
    run(["dvc", "exp", "pull", str(bare), "bench-runs-4"], clone)
    pulled = exp_show(clone)["bench-runs-4"]
    assert pulled["params"]["benchmark"]["runs"] == 4
    assert pulled["metrics"] == queued["bench-runs-4"]["metrics"]


def test_compare_reads_the_queued_experiments_and_their_predictions(origin, queued, tmp_path):
    out = tmp_path / "compare.json"
    run(["python", "-m", "lib.compare", "--metric", "int8_tflite.acc", "--json", str(out)], origin)
    report = json.loads(out.read_text())
    # the committed params (benchmark.runs 3) are `default`; each queued run is named by what it changes
    assert set(report["recipes"]) == {"default", *(f"benchmark.runs={runs}" for runs in QUEUED.values())}
    mcnemar = [t for t in report["mcnemar"] if (t["first"], t["second"]) == ("teacher_torch", "int8_tflite")]
    assert sorted(t["run"] for t in mcnemar) == sorted(["master", *QUEUED])  # read with `git show <rev>:…`
    assert all(t["b"] + t["c"] <= 80 for t in mcnemar)
