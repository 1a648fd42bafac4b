"""A hard kill mid-training (SIGKILL, the OOM killer, a lost machine) loses nothing and blocks nothing.

The stage is killed with its whole process group, so no `finally` block or signal handler runs: what is
left on disk is exactly what atomic writes and DVC guarantee on their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.models import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "models/teacher.pt"
LOSS_LOG = "plots/train/teacher/plots/metrics/train/loss.tsv"  # dvclive appends a row per epoch
OUTPUT_DIRS = ("data/processed", "models", "metrics", "plots")


def env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def tiny_arrays(dest: Path, per_split: dict[str, int]) -> None:
    """A few real PneumoniaMNIST images per split, both classes, written as the `arrays` source."""
    rng = np.random.default_rng(0)
    with np.load(ROOT / "data/raw/pneumoniamnist.npz") as npz:
        for split, n in per_split.items():
            labels = npz[f"{split}_labels"].reshape(-1)
            idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False)
                                  for c in (0, 1)])
            np.save(dest / f"X_{split}.npy", npz[f"{split}_images"][idx])
            np.save(dest / f"y_{split}.npy", labels[idx])
    (dest / "classes.txt").write_text("normal\npneumonia\n")


def set_teacher_epochs(repo: Path, epochs: int) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def project(tmp_path) -> Path:
    """The project on tiny data, in a fresh git + DVC repository, with a teacher slow enough to kill."""
    repo = tmp_path / "project"
    repo.mkdir()
    for item in ("dvc.yaml", "params.yaml", ".dvcignore", "lib", "stages"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / item)
    (repo / "data/tiny").mkdir(parents=True)
    tiny_arrays(repo / "data/tiny", {"train": 120, "val": 40, "test": 40})
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["dataset"].update(source="arrays", root="data/tiny", name=None)
    params["train"].update(epochs=30, batch_size=32)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "ci"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny project"]):
        sh(cmd, repo)
    return repo


def kill_during_first_epochs(repo: Path, log: Path, timeout_s: float = 150) -> int:
    """Start `dvc repro`, wait until the teacher has logged an epoch, SIGKILL the whole process group."""
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", "repro", "train_teacher"], cwd=repo, env=env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not (repo / LOSS_LOG).is_file() or len((repo / LOSS_LOG).read_text().splitlines()) < 2:
            assert proc.poll() is None, f"dvc repro ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no epoch logged in {timeout_s} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.pid


def leftovers(repo: Path) -> list[Path]:
    """Hidden files in output folders: the temporaries of an interrupted atomic write (DVC's .gitignore aside)."""
    return [p for folder in OUTPUT_DIRS for p in (repo / folder).rglob(".*") if p.name != ".gitignore"]


def test_killed_training_leaves_no_partial_model_and_reruns_cleanly(project, tmp_path):
    killed_pid = kill_during_first_epochs(project, tmp_path / "killed.log")
    stage_lock = project / ".dvc/tmp/rwlock"  # DVC frees a dead process's entries itself on the next run
    assert f'"pid": {killed_pid}' in stage_lock.read_text()

    teacher = project / TEACHER
    if teacher.exists():  # never half-written: either absent or a checkpoint that loads
        load_checkpoint(teacher)
    assert leftovers(project) == []
    assert "train_teacher" in json.loads(sh(["dvc", "status", "--json", "train_teacher"], project).stdout)

    set_teacher_epochs(project, 1)
    sh(["dvc", "repro", "train_teacher"], project)  # the dead run's stage lock does not block this one
    load_checkpoint(teacher)
    assert json.loads(sh(["dvc", "status", "--json", "train_teacher"], project).stdout) == {}
    assert leftovers(project) == []
