"""Shared fixtures and helpers: tiny synthetic data sets, a copy of params.yaml to mutate, and the tiny
projects (`dvc repro` of the real DAG) that the end-to-end tests read, each built once per test session."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from filelock import FileLock
from onnx import TensorProto, helper
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `lib` importable however pytest is started
    sys.path.insert(0, str(ROOT))

# One intra-op thread: on a small, shared CPU, OpenMP threads waiting on each other make every tiny
# forward pass take ~1 s instead of ~10 ms.
torch.set_num_threads(1)
PARAMS_YAML = ROOT / "params.yaml"
RAW_DIR = ROOT / "data" / "raw"


# The tests that build something (minutes), by the half of the test list they open. Under `--dist worksteal` the
# first worker starts on the first half and the second on the other, so both builds start at once, on both
# cores; each half ends with quick tests, which either worker steals from the other when it runs out.
CHAIN = "chain"  # a marker: a test that runs a conversion chain of its own
FIRST_HALF = ("project", "searched", "qat_project", "queued", "runner_python", CHAIN)
SECOND_HALF = ("multi_class", "multi_label", "models_dir")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: minutes per test; left out of `make test`, run by `make test-all`")
    config.addinivalue_line("markers", f"{CHAIN}: a conversion chain of its own (a minute); scheduled with the builds")


@pytest.hookimpl(trylast=True)  # after `-m "not slow"` has deselected, so the halves are those xdist splits
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each half of the list opens with its builds (in the order above, then file order), then quick tests."""
    builds = (*FIRST_HALF, *SECOND_HALF)

    def build(item: pytest.Item) -> int:
        fixtures = set(item.fixturenames) - set(getattr(getattr(item, "callspec", None), "params", {}))
        used = [i for i, name in enumerate(builds) if name in fixtures or item.get_closest_marker(name)]
        return min(used, default=len(builds))

    ranked = sorted(items, key=build)
    first = [item for item in ranked if build(item) < len(FIRST_HALF)]
    second = [item for item in ranked if len(FIRST_HALF) <= build(item) < len(builds)]
    quick = ranked[len(first) + len(second):]
    fill = max(len(items) // 2 - len(first), 0)
    items[:] = first + quick[:fill] + second + quick[fill:]


def truncated_onnx() -> bytes:
    """A valid ONNX model cut in half: what an interrupted copy leaves."""
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1, 4, 4])])
    whole = helper.make_model(graph).SerializeToString()
    return whole[: len(whole) // 2]


def random_bytes() -> bytes:
    return np.random.default_rng(0).bytes(2000)


def save_png(path: Path, array: np.ndarray) -> Path:
    """Save a uint8 (H, W) grayscale or (H, W, 3) RGB array in the format its suffix names (PNG, JPEG, …),
    creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def class_image(rng: np.random.Generator, label: int, size: int, rgb: bool) -> np.ndarray:
    """A random image whose intensity range identifies its class: class 0 dark (0–99), class 1 bright."""
    lo, hi = (0, 100) if label == 0 else (156, 256)
    shape = (size, size, 3) if rgb else (size, size)
    return rng.integers(lo, hi, shape, dtype=np.uint8)


def graded_image(rng: np.random.Generator, label: int, classes: int, size: int, rgb: bool) -> np.ndarray:
    """A random image whose intensity band identifies its class among `classes`, class 0 darkest."""
    step = 256 // classes
    shape = (size, size, 3) if rgb else (size, size)
    return rng.integers(label * step, label * step + step * 3 // 4, shape, dtype=np.uint8)


def label_image(rng: np.random.Generator, present: np.ndarray, size: int, rgb: bool) -> np.ndarray:
    """A dark random image with a bright horizontal band for each present label (band i of len(present))."""
    image = rng.integers(0, 60, (size, size), dtype=np.uint8)
    for rows, on in zip(np.array_split(np.arange(size), len(present)), present):
        if on:
            image[rows] = rng.integers(190, 256, (len(rows), size), dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=-1) if rgb else image


def synthetic_split(n: int, outputs: int, *, multi_label: bool, size: int, rgb: bool,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` learnable images and their labels: class indices (N,) of `outputs` classes, balanced, or a 0/1
    matrix (N, outputs) in which every label is present on some image and absent on another."""
    if multi_label:
        labels = (rng.random((n, outputs)) < 0.4).astype(np.uint8)
        labels[:outputs] = np.eye(outputs, dtype=np.uint8)
        labels[outputs] = 0
        images = [label_image(rng, row, size, rgb) for row in labels]
    else:
        labels = np.arange(n) % outputs
        images = [graded_image(rng, label, outputs, size, rgb) for label in labels]
    return np.stack(images), labels


def make_medmnist_npz(root: Path, name: str, per_split: dict[str, int], outputs: int, *, multi_label=False,
                      rgb=False, size=28, seed=0) -> Path:
    """`<root>/<name>.npz` laid out as medmnist downloads it: `<split>_images` uint8 (N, H, W) or (N, H, W, 3),
    `<split>_labels` (N, 1) class indices or (N, L) 0/1, so the medmnist source reads it without a download."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in per_split.items():
        images, labels = synthetic_split(n, outputs, multi_label=multi_label, size=size, rgb=rgb, rng=rng)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels if multi_label else labels[:, None].astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


def make_arrays(dest: Path, per_split: dict[str, int], outputs: int, *, multi_label=False, size=28,
                seed=0) -> Path:
    """The `arrays` source (`X_<split>.npy`, `y_<split>.npy`, classes.txt) of learnable synthetic images."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        images, labels = synthetic_split(n, outputs, multi_label=multi_label, size=size, rgb=False, rng=rng)
        np.save(dest / f"X_{split}.npy", images)
        np.save(dest / f"y_{split}.npy", labels)
    (dest / "classes.txt").write_text("".join(f"{'label' if multi_label else 'class'}{i}\n" for i in range(outputs)))
    return dest


def make_imagefolder(root: Path, counts: dict[str, int], classes=("cat", "ant"), *, layout="split",
                     size=12, rgb=False, seed=0, suffix=".png") -> Path:
    """Write `counts[split]` images per class; layout 'split' = root/split/class, 'class' = root/class/split.

    The class at position i in sorted(classes) gets intensity class i (see `class_image`).
    """
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for label, name in enumerate(sorted(classes)):
            folder = root / split / name if layout == "split" else root / name / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                save_png(folder / f"img{i:02d}{suffix}", class_image(rng, label, size, rgb))
    return root


@pytest.fixture(scope="session")
def base_params() -> dict:
    """The project's params.yaml as a plain dict (tests deep-copy it before changing it)."""
    return yaml.safe_load(PARAMS_YAML.read_text())


@pytest.fixture
def params_dict(base_params) -> dict:
    return copy.deepcopy(base_params)


@pytest.fixture
def write_params(tmp_path):
    """Write a params mapping as YAML into tmp_path and return the file's path."""
    def write(data: dict, name: str = "params.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return write


@pytest.fixture
def tiny_meta() -> dict:
    """meta.json-like statistics for 1-channel images."""
    return {"classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": 8}


# A stage started by a test gets one thread per library unless the caller's environment says otherwise: two
# pytest-xdist workers each run one such process at a time, and more threads than cores, each waiting on the
# others, can make a busy (shared, throttled) CI machine many times slower rather than a little faster. Its
# output is unbuffered, so a log shows how far a process that hangs got.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
              "TF_NUM_INTEROP_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tool_env() -> dict:
    """The environment of a subprocess that must find this interpreter's `dvc` and `python`."""
    return {**ONE_THREAD, **os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(cmd: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def tiny_arrays(dest: Path, per_split: dict[str, int]) -> None:
    """A few hundred real PneumoniaMNIST images, stratified, written as the `arrays` source."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with np.load(ROOT / "data/raw/pneumoniamnist.npz") as npz:
        for split, n in per_split.items():
            labels = npz[f"{split}_labels"].reshape(-1)
            idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False)
                                  for c in (0, 1)])
            np.save(dest / f"X_{split}.npy", npz[f"{split}_images"][idx])
            np.save(dest / f"y_{split}.npy", labels[idx])
    (dest / "classes.txt").write_text("normal\npneumonia\n")


def copy_pipeline(dest: Path) -> Path:
    """The pipeline (dvc.yaml, params, lib, stages; requirements.txt, which the bundle's pins come from) in
    `dest`, as a user's checkout has it."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in ("dvc.yaml", "params.yaml", ".dvcignore", "requirements.txt", "lib", "stages"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    return dest


def edit_params(repo: Path, **sections: dict | Any) -> None:
    """Update params.yaml section by section, e.g. `edit_params(repo, train={"epochs": 1})`; a value that is
    not a mapping replaces a top-level key (`teacher=["resnet18", "mobilenetv2"]`)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            params.setdefault(section, {}).update(values)
        else:
            params[section] = values
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def init_repo(repo: Path) -> None:
    """A git + DVC repository with the project's plot templates and everything committed."""
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "ci"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"]):
        run(cmd, repo)
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny project"], repo)  # dvclive needs a first commit


def tiny_project(repo: Path, per_split: dict[str, int], **sections: dict) -> Path:
    """The pipeline on a few real images (`arrays` source), `sections` of params changed, committed."""
    copy_pipeline(repo)
    tiny_arrays(repo / "data/tiny", per_split)
    edit_params(repo, dataset={"source": "arrays", "root": "data/tiny", "name": None}, **sections)
    init_repo(repo)
    return repo


# A run as short as the DAG allows: one epoch per training stage, pruning in one shot (the iterative path runs
# end to end in the multi-class project), few calibration images, few timings.
TINY_RUN = dict(train={"epochs": 1, "batch_size": 64}, distill={"epochs": 1},
                prune={"finetune_epochs": 1, "iterative_steps": 1},
                quantize={"calibration_samples": 16},
                benchmark={"warmup": 1, "runs": 3, "throughput_batch": 8, "throughput_runs": 2,
                           "bootstrap_samples": 20})


REPRO_LOG = ".dvc/tmp/repro.log"  # .dvc/tmp is not tracked


def repro(repo: Path, *stages: str) -> Path:
    """`dvc repro [stages]` in `repo`, its output written to REPRO_LOG as it runs (what a build that hangs
    had done is there)."""
    log = repo / REPRO_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(["dvc", "repro", *stages], cwd=repo, env=tool_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    assert result.returncode == 0, f"dvc repro {' '.join(stages)} failed:\n{log.read_text()[-8000:]}"
    return repo


def tiny_run(repo: Path, write_data: Callable[[Path], object], dataset: dict, *stages: str, **sections) -> Path:
    """The pipeline run by `dvc repro [stages]` with TINY_RUN settings, `sections` merged in, on the data
    `write_data` puts in data/tiny."""
    copy_pipeline(repo)
    write_data(repo / "data/tiny")
    edit_params(repo, dataset={"root": "data/tiny", "name": None, **dataset}, **TINY_RUN)
    edit_params(repo, **sections)
    init_repo(repo)
    return repro(repo, *stages)


def copy_project(src: Path, dest: Path) -> Path:
    """`src` as another checkout of it: work tree, git history, DVC cache and lock, but of .dvc/tmp (locks, the
    state index, queue logs belong to one checkout) only `repro`'s log. `dvc status` in the copy says what it
    says in `src`."""
    shutil.copytree(src, dest, symlinks=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder) == src / ".dvc" else [])
    if (src / REPRO_LOG).exists():
        (dest / REPRO_LOG).parent.mkdir()
        shutil.copy(src / REPRO_LOG, dest / REPRO_LOG)
    return dest


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` run once per test session, however many pytest-xdist workers ask: the first builds under
    a file lock, the others wait for it. A failed build fails every test that asks, with the build's error."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done, failed = (shared / f"built-{name}{suffix}" for suffix in ("", ".done", ".failed"))
    with FileLock(f"{folder}.lock"):
        if not done.exists() and not failed.exists():
            try:
                build(folder)
                done.touch()
            except Exception as error:  # noqa: BLE001 (reported to each test that needs the project)
                failed.write_text(f"{type(error).__name__}: {error}")
            except pytest.fail.Exception as timeout:  # pytest-timeout's: it stops `repro` before that says what ran
                log = folder / REPRO_LOG
                ran = f"\nthe end of its {REPRO_LOG}:\n{log.read_text()[-3000:]}" if log.exists() else ""
                failed.write_text(f"{type(timeout).__name__}: {timeout}{ran}")
    if failed.exists():
        pytest.fail(f"building the tiny project {name!r} failed:\n{failed.read_text()[-6000:]}", pytrace=False)
    return folder


def own_copy(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """This worker's copy of the project `built_once`: tests may write into it (plots, .pyc files)."""
    return copy_project(built_once(tmp_path_factory, name, build), tmp_path_factory.mktemp(name) / "repo")


TASK_SPLITS = {"train": 64, "val": 24, "test": 24}
# The student of the single-label variants: what they test is the task, the source and the switches, and
# SqueezeNet converts in a third of MobileNetV2's time (onnx2tf runs three times per chain). The default chain
# (`project`) and the multi-label one keep MobileNetV2; SqueezeNet's logits pass a ReLU, which a per-label
# sigmoid cannot take (every probability ≥ 0.5).
CHEAP_STUDENT = "squeezenet1_1"


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """The whole DAG run by `dvc repro` on a few real images: the default chain every end-to-end test reads."""
    return own_copy(tmp_path_factory, "project", lambda repo: repro(tiny_project(
        repo, {"train": 240, "val": 80, "test": 80}, **TINY_RUN)))


CAPSULE_CLASSES = ("Bleeding", "Lymphangiectasia", "Polyp", "Ulcer")
CAPSULE_SIZE = 32  # the model's input; the JPEGs are 64 px, so the reader resizes them as it would real scans


def capsule_data(dest: Path) -> None:
    make_imagefolder(dest, {"train": 16, "val": 6, "test": 6}, CAPSULE_CLASSES, layout="class", size=64, rgb=True,
                     suffix=".jpg")


@pytest.fixture(scope="session")
def multi_class(tmp_path_factory) -> Path:
    """A capsule-endoscopy-shaped ImageFolder set (four classes, class-first layout, RGB JPEGs at 64 px read at
    32) through the whole DAG, with an ensemble teacher (resnet18 + mobilenetv2), the student pruned in two
    steps."""
    return own_copy(tmp_path_factory, "multi_class", lambda repo: tiny_run(
        repo, capsule_data, {"source": "imagefolder", "image_size": CAPSULE_SIZE},
        teacher=["resnet18", "mobilenetv2"], student=CHEAP_STUDENT, prune={"iterative_steps": 2}))


START_WEIGHTS = "weights/teacher.pt"  # where the multi-label run's teacher starts: a checkpoint as a run writes it
LABELS = 5


def multi_label_run(repo: Path) -> Path:
    """Five labels (`arrays`, multi-label), the whole chain, `teacher_weights` set to a checkpoint of the
    teacher's network (written as `train_teacher` writes one, from seeded initial weights: what it holds does
    not matter, that it loads does)."""
    from lib.models import ModelSpec, build_from_spec, save_checkpoint

    torch.manual_seed(0)
    spec = ModelSpec("resnet18", LABELS, 1, 28)
    (repo / START_WEIGHTS).parent.mkdir(parents=True)
    save_checkpoint(build_from_spec(spec), spec, repo / START_WEIGHTS)
    return tiny_run(repo, lambda d: make_arrays(d, TASK_SPLITS, LABELS, multi_label=True), {"source": "arrays"},
                    teacher_weights=START_WEIGHTS)


@pytest.fixture(scope="session")
def multi_label(tmp_path_factory) -> Path:
    """Five labels (`arrays`, multi-label), the whole chain, the teacher started from a checkpoint."""
    return own_copy(tmp_path_factory, "multi_label", multi_label_run)
