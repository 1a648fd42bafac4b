"""Keep the workspace's pipeline state across runs that change it: a search's cells run in the workspace.

`dvc exp run -S` writes the cell's params into params.yaml and leaves the cell's results in the workspace. What
the user had is put back afterwards, uncommitted edits included: params.yaml, dvc.lock and every `cache: false`
output (metrics and plots, which the DVC cache does not hold) from a copy made before; then `dvc checkout`
puts back the cached outputs (data, models) that the restored dvc.lock names, from the DVC cache. DVC runs an
experiment on a detached HEAD; a `dvc exp run` that is killed leaves it there, so HEAD goes back on its branch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

KEPT_FILES = ("params.yaml", "dvc.lock")
SNAPSHOT_DIR = Path(".dvc/tmp")  # per checkout, never tracked


def uncached_outputs(dvc_yaml: dict) -> list[str]:
    """The outputs (and metrics, plots) that dvc.yaml marks `cache: false`."""
    paths = []
    for stage in (dvc_yaml.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind) or []:
                if isinstance(out, dict):
                    paths += [path for path, flags in out.items() if (flags or {}).get("cache") is False]
    return paths


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def kept_paths(repo: Path) -> list[str]:
    return [*KEPT_FILES, *uncached_outputs(yaml.safe_load((repo / "dvc.yaml").read_text()) or {})]


def snapshot(repo: Path, paths: list[str], into: Path) -> None:
    """Copy each of `paths` that exists under `into`."""
    for path in paths:
        if (repo / path).exists():
            _copy(repo / path, into / path)


def restore(repo: Path, paths: list[str], snapshot_dir: Path) -> None:
    """Put each of `paths` back as the snapshot has it; one the snapshot lacks did not exist, so it is removed."""
    for path in paths:
        _remove(repo / path)
        if (snapshot_dir / path).exists():
            _copy(snapshot_dir / path, repo / path)


def checkout(repo: Path) -> None:
    """`dvc checkout` of the restored dvc.lock; on failure, say how to finish by hand instead of failing."""
    result = subprocess.run(["dvc", "checkout", "--force"], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"warning: `dvc checkout` could not put back every cached output ({result.stderr.strip()[-500:]}); "
              "params.yaml and dvc.lock are back: run `dvc pull` or `dvc repro` to bring the outputs in line",
              file=sys.stderr)


def _git(repo: Path, *args: str) -> str | None:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def git_head(repo: Path) -> tuple[str, str] | None:
    """(the branch HEAD is on, e.g. refs/heads/main, or "" when detached; its commit); None outside git."""
    commit = _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    return None if commit is None else (_git(repo, "symbolic-ref", "-q", "HEAD") or "", commit)


def reattach(repo: Path, before: tuple[str, str] | None) -> None:
    """Put HEAD back on the branch it was on `before`, if it is now detached at that branch's commit (which
    leaves the work tree and the index as they are); otherwise say what to do instead of guessing."""
    if before is None or not before[0]:
        return
    now, branch = git_head(repo), before[0]
    if now is None or now[0] == branch:
        return
    if not now[0] and now[1] == _git(repo, "rev-parse", branch):
        _git(repo, "symbolic-ref", "HEAD", branch)
        return
    name = branch.removeprefix("refs/heads/")
    print(f"warning: HEAD was on {name} and is now {now[0] or 'detached at ' + now[1][:7]}: check `git status` "
          f"and `git checkout {name}` before committing", file=sys.stderr)


@contextmanager
def kept(repo: Path = Path(".")) -> Iterator[None]:
    """Run the block, then put the pipeline state back as it was before it, whether the block succeeded or not."""
    head = git_head(repo)
    paths = kept_paths(repo)
    (repo / SNAPSHOT_DIR).mkdir(parents=True, exist_ok=True)
    saved = Path(tempfile.mkdtemp(prefix="search-workspace.", dir=repo / SNAPSHOT_DIR))
    try:
        snapshot(repo, paths, saved)
    except BaseException:
        shutil.rmtree(saved, ignore_errors=True)  # nothing has changed yet: nothing to put back
        raise
    try:
        yield
    finally:
        reattach(repo, head)
        restore(repo, paths, saved)
        checkout(repo)
        shutil.rmtree(saved, ignore_errors=True)
