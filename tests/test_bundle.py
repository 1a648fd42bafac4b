"""The deployable bundle: the standalone runner reproduces lib.predict, the model card prints every figure it is
given, and the `bundle` stage of the tiny project runs in a fresh environment holding only its requirements.

The clean-environment test installs `bundle/requirements.txt` from the package index. Offline, set
SKIP_BUNDLE_VENV=1 to skip it; without that variable a failed install fails the test.
"""

from __future__ import annotations

import ast
import html
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, built_once, run, save_png
from lib import bundle_runner
from lib.artifacts import DEPLOYED, NAMES
from lib.bundle import preprocessing, runner_requirements
from lib.card_analyses import CHAIN, FORMATS, number
from lib.card_plots import card_figures
from lib.card_render import to_html, to_markdown
from lib.errors import UserError
from lib.model_card import build
from lib.predict import read_images, top_k
from lib.processed import normalize
from lib.task import THRESHOLD, for_meta

SKIP_VENV = "SKIP_BUNDLE_VENV"


# ------------------------------------------------------------------ the runner's preprocessing and decisions
def image_files(folder: Path) -> list[Path]:
    """Images that take every path of the decoder: sizes, colour modes, 16-bit and float pixels."""
    rng = np.random.default_rng(0)
    files = [save_png(folder / "gray12.png", rng.integers(0, 256, (12, 12), dtype=np.uint8)),
             save_png(folder / "rgb40x33.png", rng.integers(0, 256, (33, 40, 3), dtype=np.uint8)),
             save_png(folder / "exact28.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))]
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (31, 31), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rng.random((17, 29), dtype=np.float32) * 7.0).save(folder / "float.tiff")
    Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    return [*files, *(folder / n for n in ("rgba.png", "deep16.png", "float.tiff", "palette.png"))]


@pytest.mark.parametrize("channels", [1, 3])
def test_runner_reads_and_scales_images_exactly_as_lib_predict(tmp_path, channels):
    meta = {"classes": ["a", "b"], "image_size": 28, "channels": channels, "mean": [0.4] * channels,
            "std": [0.2] * channels}
    spec = preprocessing(meta, {}, for_meta(meta).deployed_rule(None))
    files = image_files(tmp_path)
    ours = np.stack([bundle_runner.load_image(f, spec) for f in files])
    theirs = read_images(files, meta["image_size"], channels)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert np.array_equal(bundle_runner.normalize(ours, spec), normalize(theirs, meta))


@pytest.mark.parametrize("task", ["multi-class", "multi-label"])
def test_runner_activation_and_decision_are_lib_predicts(task):
    classes = ["c0", "c1", "c2", "c3"]
    meta = {"classes": classes, **({"task": task} if task == "multi-label" else {})}
    logits = np.random.default_rng(1).normal(0, 3, (50, len(classes)))
    spec = {"classes": classes, "activation": for_meta(meta).activation_name,
            "decision": for_meta(meta).deployed_rule(None)}
    probs = bundle_runner.activate(logits, spec)
    np.testing.assert_allclose(probs, for_meta(meta).activation(logits), rtol=0, atol=1e-12)
    for row, top in zip(probs, top_k(probs, classes, len(classes))):
        expected = for_meta(meta).answer(top, THRESHOLD)
        got = bundle_runner.decide(row, spec, tuned=False)
        assert got == {k: v for k, v in expected.items() if k in got}


def test_runner_imports_only_numpy_pillow_and_the_runtimes():
    tree = ast.parse((ROOT / "lib/bundle_runner.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "PIL", "ai_edge_litert", "onnxruntime"}


def test_runner_requirements_copy_the_project_pins(tmp_path):
    project_pins = {line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()}
    text = runner_requirements(ROOT / "requirements.txt")
    required = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert [line.split("==")[0] for line in required] == ["ai-edge-litert", "numpy", "pillow"]
    assert set(required) <= project_pins
    assert any(line.startswith("# onnxruntime==") for line in text.splitlines())
    (tmp_path / "r.txt").write_text("numpy>=1\npillow==13.0.0\n")
    with pytest.raises(UserError, match="ai-edge-litert, numpy, onnxruntime"):
        runner_requirements(tmp_path / "r.txt")


# ------------------------------------------------------------------ the model card
def fake_run(multi_label: bool) -> tuple[dict, dict]:
    """meta.json and every metrics file the card reads, holding only figures the card prints, all distinct."""
    values = iter(np.random.default_rng(7).permutation(np.arange(101, 999)) / 1000)
    share = lambda: float(next(values))  # noqa: E731
    classes = ["alpha", "beta", "gamma"]
    meta = {"name": "fakemnist", "source": "arrays", "classes": classes, "image_size": 28, "channels": 1,
            "mean": [0.4321], "std": [0.1234], "test_split": "carved from train", "sha256": "abc123def",
            "counts": {s: {c: n + i for i, c in enumerate(classes)} for s, n in (("train", 500), ("val", 60),
                                                                                   ("test", 70))},
            **({"task": "multi-label"} if multi_label else {})}
    bench = {name: {"test": {"accuracy": share(), "auc": share(), "f1_macro": share(), "balanced_accuracy": share(),
                             "ece": share(), "ci95": {"accuracy": [share(), share()], "auc": [share(), share()]}},
                    "size_bytes": 10_000 * (i + 3) + 77, "params": 4_000 * (i + 1) + 3, "macs": 9_876_543 * (i + 1),
                    "latency_ms": {"p50": 0.5 + i + share()}, "vs_teacher": {"smaller_x": 1.5 + i, "faster_x": 2.25 + i,
                                                                              "accuracy_retention_pct": 90 + i + 0.25}}
             for i, name in enumerate(NAMES[:9])}
    deployed = bench[DEPLOYED]
    deployed["latency_ms"]["threads"] = 3
    deployed["test"]["per_class"] = {c: {"sensitivity": share(), "specificity": share(),
                                         **({"auc": share(), "f1": share()} if multi_label else {})} for c in classes}
    if multi_label:
        deployed["test"]["exact_match"] = share()
        deployed["test"]["tuned"] = {"rule": "per-label threshold of best F1 on val",
                                     "thresholds": {c: share() for c in classes}, "f1": {c: share() for c in classes},
                                     "exact_match": share(), "f1_macro": share()}
    bench.update(seed=4242, test_images=213, machine={"cpu": "Fake CPU 9000", "cpu_count": 6},
                 baseline_majority_class={"class": "beta",
                                          "test": {"balanced_accuracy" if multi_label else "accuracy": 0.373}},
                 warnings=["int8_tflite: something odd"])
    parity = lambda: {"top1_agreement": share(), "max_abs_prob_diff": share() / 1000}  # noqa: E731
    metrics = {"teacher": {"model": "resnet18", "warnings": ["teacher: predicts one class"]},
               "student": {"model": "mobilenetv2", "distilled": True, "warnings": []},
               "prune": {"method": "structured", "ratio": 0.45, "steps": [{}, {}, {}], "warnings": [],
                         "params": {"before": 2_225_858, "after": 580_691, "removed_fraction": 0.738811},
                         "macs": {"before": 23_052_866, "after": 6_293_602, "removed_fraction": 0.727017}},
               "export": {"opset": 19, "student": {"parity_vs_torch": parity()}},
               "tflite": {"parity_vs_onnx": parity()},
               "quantize": {"calibration_samples": 123, "per_channel": False, "int8_io": False,
                            "int8": {"agreement_vs_float32_tflite": parity()}, "warnings": []},
               "qat": {"method": "ptq"}, "benchmark": bench}
    return meta, metrics


def leaves(obj, path=()):
    """(path, value) of every number and string in nested dicts and lists."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, (*path, i))
    elif not isinstance(obj, bool):
        yield path, obj


def printed(path: tuple, value) -> str:
    """The value as the card prints it: the rounding of the nearest key in the path that has one."""
    key = next((k for k in reversed(path) if isinstance(k, str) and k in FORMATS), None)
    return number(key, value) if key else str(value)


def missing_figures(text: str, meta: dict, metrics: dict) -> list[tuple]:
    return [(path, value) for path, value in leaves({"meta": meta, **metrics}) if printed(path, value) not in text]


def deployed_rule(meta: dict, metrics: dict) -> dict:
    return for_meta(meta).deployed_rule(metrics["benchmark"][DEPLOYED]["test"].get("tuned"))


def card_texts(meta: dict, metrics: dict) -> tuple[str, str]:
    spec_decision = deployed_rule(meta, metrics)
    blocks = build(meta, metrics, spec_decision, 0.75, 2)
    page = to_html(blocks, card_figures(meta, metrics["benchmark"]), "card")
    return to_markdown(blocks), html.unescape(page)


@pytest.mark.parametrize("multi_label", [False, True])
def test_model_card_prints_every_figure_it_is_given(multi_label):
    meta, metrics = fake_run(multi_label)
    markdown, page = card_texts(meta, metrics)
    assert missing_figures(markdown, meta, metrics) == []
    assert missing_figures(page, meta, metrics) == []
    assert "width ×0.75)" in markdown  # the default last stride (2) goes unsaid
    assert markdown.index("`teacher_torch`") < markdown.index(f"`{DEPLOYED}`")  # table order, not sorted keys


def test_model_card_says_when_the_students_last_downsampling_runs_at_stride_1():
    meta, metrics = fake_run(False)
    markdown = to_markdown(build(meta, metrics, deployed_rule(meta, metrics), 1.0, 1))
    assert markdown.count("`mobilenetv2` (width ×1.0, last downsampling at stride 1)") == 4  # 3 roles, 1 chain step


def test_missing_figures_finds_a_figure_the_card_does_not_print():
    meta, metrics = fake_run(False)
    markdown, _ = card_texts(meta, metrics)
    metrics["benchmark"][DEPLOYED]["test"]["ece"] = 0.0123
    metrics["prune"]["params"]["after"] = 123_456
    assert {path[-1] for path, _ in missing_figures(markdown, meta, metrics)} == {"ece", "after"}


def test_model_card_chain_compares_each_step_with_the_one_before():
    meta, metrics = fake_run(False)
    bench = metrics["benchmark"]
    markdown, _ = card_texts(meta, metrics)
    before, after = bench[CHAIN[-2]], bench[CHAIN[-1]]
    points = 100 * (after["test"]["accuracy"] - before["test"]["accuracy"])
    row = next(line for line in markdown.splitlines() if line.startswith("| INT8 post-training"))
    assert f"{number('accuracy', after['test']['accuracy'])} ({points:+.1f} pts)" in row
    assert f"(×{before['size_bytes'] / after['size_bytes']:.1f})" in row


def test_model_card_html_is_one_self_contained_page():
    meta, metrics = fake_run(True)
    blocks = build(meta, metrics, deployed_rule(meta, metrics), 1.0, 2)
    page = to_html(blocks, card_figures(meta, metrics["benchmark"]), "card")
    assert '<meta charset="utf-8">' in page
    assert page.count('src="data:image/png;base64,') == 2
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    assert "<code>fakemnist</code>" in page


# ------------------------------------------------------------------ end to end: the tiny project's bundle
def test_bundle_stage_writes_the_deployable_folder(project):
    bundle = project / "bundle"
    meta = json.loads((project / "data/processed/meta.json").read_text())
    assert (bundle / "model_int8.tflite").read_bytes() == (project / "models/student_int8.tflite").read_bytes()
    assert (bundle / "model_int8.onnx").read_bytes() == (project / "models/student_int8.onnx").read_bytes()
    assert (bundle / "labels.txt").read_text().splitlines() == meta["classes"]
    spec = json.loads((bundle / "preprocessing.json").read_text())
    assert spec["tensors"]["model_int8.tflite"]["input"]["shape"] == ["N", 28, 28, 1]
    assert spec["tensors"]["model_int8.onnx"]["input"]["layout"] == "NCHW"
    assert (spec["activation"], spec["decision"]["rule"]) == ("softmax", "argmax")
    assert (bundle / "predict.py").read_text() == (ROOT / "lib/bundle_runner.py").read_text()
    card = (bundle / "MODEL_CARD.md").read_text()
    test = json.loads((project / "metrics/benchmark.json").read_text())[DEPLOYED]["test"]
    for path, value in leaves({k: test[k] for k in ("accuracy", "auc", "ece", "ci95", "per_class")}):
        assert printed(path, value) in card, path
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["bundle"]
    assert [out["path"] for out in lock["outs"]] == ["bundle"]  # a DVC output, cached ...
    assert "/bundle" in (project / ".gitignore").read_text().splitlines()  # ... and not in git


@pytest.fixture(scope="session")
def runner_python(project, tmp_path_factory) -> Path:
    """A fresh virtual environment with only the bundle's requirements.txt installed (from the package index)."""
    if os.environ.get(SKIP_VENV) == "1":
        pytest.skip(f"{SKIP_VENV}=1: the runner's environment is not built (it needs the package index)")
    requirements = project / "bundle/requirements.txt"
    return built_once(tmp_path_factory, "runner-venv", lambda venv: _runner_venv(venv, requirements)) / "bin/python"


def _runner_venv(venv: Path, requirements: Path) -> None:
    run([sys.executable, "-m", "venv", str(venv)], ROOT)
    install = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, (f"pip install -r bundle/requirements.txt failed (offline? set {SKIP_VENV}=1 "
                                     f"to skip this test):\n{install.stderr[-3000:]}")


def save_test_images(project: Path, folder: Path) -> list[str]:
    """A few test images of the tiny project as PNG, one of them enlarged in RGB (so it is resized), names."""
    images = np.load(project / "data/processed/test_images.npy", mmap_mode="r")[:4]
    for i, image in enumerate(images):
        save_png(folder / f"scan{i}.png", np.asarray(image[..., 0]))
    Image.fromarray(np.asarray(images[0][..., 0])).convert("RGB").resize((45, 37)).save(folder / "big_rgb.png")
    return sorted(p.name for p in folder.iterdir())


def compare_with_lib_predict(project: Path, model: str, runner: list[str], folder: Path) -> None:
    names = save_test_images(project, folder)
    classes = json.loads((project / "data/processed/meta.json").read_text())["classes"]
    reference = json.loads(run([sys.executable, "-m", "lib.predict", model, str(folder), "--json",
                                "--top", str(len(classes))], project).stdout)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([*runner, *names, "--json"], cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    assert [a["file"] for a in ours] == [r["file"] for r in reference] == names
    for answer, ref in zip(ours, reference):
        assert answer["predicted"] == ref["predicted"]
        expected = {t["class"]: t["probability"] for t in ref["top"]}
        assert answer["probabilities"].keys() == expected.keys()
        for c, p in expected.items():
            assert abs(answer["probabilities"][c] - p) <= 1e-6, (answer["file"], c)


def test_runner_in_a_clean_environment_reproduces_lib_predict(project, runner_python, tmp_path):
    no_torch = subprocess.run([str(runner_python), "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0  # the environment holds the runner's requirements only
    compare_with_lib_predict(project, "models/student_int8.tflite",
                             [str(runner_python), str(project / "bundle/predict.py")], tmp_path)


def test_runner_onnx_model_reproduces_lib_predict(project, tmp_path):
    bundle = project / "bundle"
    compare_with_lib_predict(project, "models/student_int8.onnx",
                             [sys.executable, str(bundle / "predict.py"), "--model", str(bundle / "model_int8.onnx")],
                             tmp_path)
