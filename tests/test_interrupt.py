"""A hard kill mid-training (SIGKILL, the OOM killer, a lost machine) loses nothing and blocks nothing.

The stage is killed with its whole process group, so no `finally` block or signal handler runs: what is
left on disk is exactly what atomic writes and DVC guarantee on their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import edit_params, run, tiny_project, tool_env
from lib.models import load_checkpoint

TEACHER = "models/teacher.pt"
LOSS_LOG = "plots/train/teacher/plots/metrics/train/loss.tsv"  # dvclive appends a row per epoch
OUTPUT_DIRS = ("data/processed", "models", "metrics", "plots")


@pytest.fixture
def project(tmp_path) -> Path:
    """The project on tiny data, in a fresh git + DVC repository, with a teacher slow enough to kill."""
    return tiny_project(tmp_path / "project", {"train": 120, "val": 40, "test": 40},
                        train={"epochs": 30, "batch_size": 32})


def kill_during_first_epochs(repo: Path, log: Path, timeout_s: float = 150) -> int:
    """Start `dvc repro`, wait until the teacher has logged an epoch, SIGKILL the whole process group."""
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", "repro", "train_teacher"], cwd=repo, env=tool_env(), stdout=out,
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
    assert "train_teacher" in json.loads(run(["dvc", "status", "--json", "train_teacher"], project, timeout=300).stdout)

    edit_params(project, train={"epochs": 1})
    run(["dvc", "repro", "train_teacher"], project, timeout=300)  # the dead run's stage lock does not block this one
    load_checkpoint(teacher)
    assert json.loads(run(["dvc", "status", "--json", "train_teacher"], project, timeout=300).stdout) == {}
    assert leftovers(project) == []
