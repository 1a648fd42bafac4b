"""The plots drawn as a person sees them, offline: DVC fills the templates of .dvc/plots/, vl-convert (Vega
bundled) draws them, and the tests read the drawing: one monotone ROC curve per artifact, training curves by
run and epoch, legend labels whole and readable, and `lib.plots_offline`'s self-contained page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import vl_convert
import yaml
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer
from PIL import Image

from lib import plots_offline
from lib.benchmark_plots import roc_rows
from lib.errors import UserError
from lib.task import named

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / ".dvc/plots"
MOJIBAKE = ("â€", "Ã", "Â")  # UTF-8 read as Windows-1252: '…' → 'â€¦', 'é' → 'Ã©'


def filled(rows: list[dict], template: str, **properties) -> dict:
    """`template` filled by DVC's own renderer, every value a string as DVC reads CSV and TSV files."""
    points = [{key: str(value) for key, value in row.items()} for row in rows]
    return VegaRenderer(points, template, template=template, template_dir=str(TEMPLATES), **properties
                        ).get_filled_template()


def marks(node: dict, role: str):
    """Every mark of `role` in a Vega scenegraph, depth first."""
    if node.get("role") == role:
        yield node
    for item in node.get("items", []):
        yield from marks(item, role)


def scene(spec: dict) -> dict:
    return vl_convert.vegalite_to_scenegraph(spec, vl_version=plots_offline.VEGA_LITE)["scenegraph"]


def drawn_lines(spec: dict) -> list[list[tuple[float, float]]]:
    """Each line of the chart as the pixel points it passes through, in drawing order."""
    return [[(item["x"], item["y"]) for item in mark["items"]]
            for mark in marks(scene(spec), "mark") if mark["marktype"] == "line"]


def legend_labels(spec: dict) -> set[str]:
    return {item["text"] for mark in marks(scene(spec), "legend-label") for item in mark["items"]}


def svg_texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def assert_readable(texts) -> None:
    for text in texts:
        assert "…" not in text and not any(bad in text for bad in MOJIBAKE), text


def assert_roc_curve(points: list[tuple[float, float]], size: float) -> None:
    """A ROC curve in pixels: from (0, 0) at the bottom left to (1, 1) at the top right, never going back."""
    xs, ys = zip(*points)
    assert (xs[0], ys[0]) == pytest.approx((0, size)) and (xs[-1], ys[-1]) == pytest.approx((size, 0))
    assert all(np.diff(xs) >= 0) and all(np.diff(ys) <= 0), points


def scores_with_ties(labels: np.ndarray, seed: int) -> np.ndarray:
    """Scores that rank positives higher on the whole, rounded to one decimal so that many tie."""
    rng = np.random.default_rng(seed)
    return np.clip(0.35 * labels + 0.65 * rng.random(len(labels)), 0, 1).round(1)


def two_class_probs(labels: np.ndarray, seeds: dict[str, int]) -> dict[str, np.ndarray]:
    return {name: np.stack([1 - p, p], axis=1) for name, p in
            ((name, scores_with_ties(labels, seed)) for name, seed in seeds.items())}


@pytest.mark.parametrize("task_name, classes", [("multi-class", 2), ("multi-class", 3), ("multi-label", 3)])
def test_roc_rows_are_one_monotone_curve_per_artifact_from_origin_to_corner(task_name, classes):
    rng = np.random.default_rng(1)
    task = named(task_name, [f"c{i}" for i in range(classes)])
    labels = (rng.random((80, classes)) < 0.4).astype(int) if task_name == "multi-label" else np.arange(80) % classes
    probs = {name: rng.dirichlet(np.ones(classes), 80).round(1) for name in ("teacher_torch", "int8_tflite")}
    rows = roc_rows(task, labels, probs)
    assert [row["artifact"] for row in rows] == sorted((row["artifact"] for row in rows), key=list(probs).index)
    for name in probs:
        curve = [row for row in rows if row["artifact"] == name]
        assert [row["step"] for row in curve] == list(range(len(curve))) and len(curve) > 2
        fpr, tpr = np.array([[row["fpr"], row["tpr"]] for row in curve]).T
        assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
        assert all(np.diff(fpr) >= 0) and all(np.diff(tpr) >= 0)


def test_roc_template_draws_one_monotone_curve_per_artifact_and_revision():
    """Curves of more than ten points, rows shuffled, two revisions: ordered as strings ('10' < '9') or by row,
    the lines would jump back and forth."""
    labels = np.arange(120) % 2
    rows = roc_rows(named("multi-class", ["normal", "pneumonia"]), labels,
                    two_class_probs(labels, {"teacher_torch": 0, "int8_tflite": 1}))
    assert min(sum(r["artifact"] == name for r in rows) for name in ("teacher_torch", "int8_tflite")) > 10
    both = [{**row, "rev": rev} for rev in ("main", "workspace") for row in rows]
    spec = filled([both[i] for i in np.random.default_rng(0).permutation(len(both))], "roc", x="fpr", y="tpr",
                  title="ROC")
    lines = drawn_lines(spec)
    assert len(lines) == 4
    for points in lines:
        assert_roc_curve(points, spec["width"])
    assert {"teacher_torch", "int8_tflite", "main", "workspace"} <= legend_labels(spec)


def test_training_template_names_each_run_and_orders_epochs_as_numbers():
    files = {run: f"{run}/plots/metrics/val/accuracy.tsv" for run in ("teacher", "finetune")}
    rows = [{"step": epoch, "accuracy": 0.5 + epoch / 40, "rev": "workspace", "filename": file}
            for file in files.values() for epoch in range(12)]
    spec = filled(rows, "training", x="step", y="accuracy", title="Validation accuracy by epoch",
                  anchors_y_definitions=[{"filename": file, "field": "accuracy"} for file in files.values()])
    assert legend_labels(spec) == {"teacher", "finetune", "workspace"}
    lines = drawn_lines(spec)
    assert len(lines) == 2 and all(len(points) == 12 for points in lines)
    for points in lines:
        xs, ys = zip(*points)
        assert all(np.diff(xs) > 0) and all(np.diff(ys) < 0)  # epoch 10 after 9; accuracy rising (y down)


def test_long_legend_labels_are_drawn_whole():
    name = "int8_tflite_of_a_student_with_a_name_far_longer_than_vega_s_160_pixels"
    labels = np.arange(20) % 2
    rows = roc_rows(named("multi-class", ["a", "b"]), labels, two_class_probs(labels, {name: 0}))
    spec = filled([{**row, "rev": "workspace"} for row in rows], "roc", x="fpr", y="tpr", title="ROC")
    texts = svg_texts(vl_convert.vegalite_to_svg(spec, vl_version=plots_offline.VEGA_LITE))
    assert name in texts
    assert_readable(texts)


def test_dvc_page_declares_utf8():
    """DVC's own page (`dvc plots show`) is built from .dvc/plots/page.html, named in .dvc/config."""
    assert re.search(r"^\s*html_template = plots/page.html$", (ROOT / ".dvc/config").read_text(), re.M)
    page = HTML((TEMPLATES / "page.html").read_text()).with_scripts("<script></script>").embed()
    assert '<meta charset="utf-8">' in page.split("<title>")[0]


def fake_plots(tmp_path: Path) -> dict:
    """What `dvc plots show --json` prints: a filled ROC spec and an image copied into the output folder."""
    labels = np.arange(30) % 2
    rows = roc_rows(named("multi-class", ["a", "b"]), labels, two_class_probs(labels, {"student_torch": 0}))
    spec = filled([{**row, "rev": "workspace"} for row in rows], "roc", x="fpr", y="tpr", title="ROC – test")
    image = tmp_path / "workspace_gradcam.png"
    Image.new("RGB", (4, 4), "red").save(image)
    return {"data": {"ROC – test": [{"type": "vega", "revisions": ["workspace"], "content": spec}],
                     "plots/explain/gradcam.png": [{"type": "image", "revisions": ["workspace"],
                                                    "url": str(image)}]}}


def assert_self_contained(page: str, plots: int, svgs: int, images: int) -> None:
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page.split("<body>")[0]
    assert page.count("<section") == plots and page.count("<svg") == svgs
    assert page.count('src="data:image/png;base64,') == images
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched when opened
    assert_readable(svg_texts(page))


def test_offline_page_inlines_every_plot(tmp_path, monkeypatch):
    plots = fake_plots(tmp_path)
    monkeypatch.setattr(plots_offline, "dvc_plots_json", lambda repo, revs, images: plots)
    out = plots_offline.write_offline_page(tmp_path, tmp_path / "page/plots.html")
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page, plots=2, svgs=1, images=1)
    assert "<h2>ROC – test</h2>" in page and "ROC – test" in svg_texts(page)


def test_offline_page_names_a_plot_it_cannot_draw(tmp_path, monkeypatch):
    plots = {"data": {"table": [{"type": "plotly", "revisions": ["workspace"]}]}}
    monkeypatch.setattr(plots_offline, "dvc_plots_json", lambda repo, revs, images: plots)
    with pytest.raises(UserError, match="'plotly'"):
        plots_offline.offline_page(tmp_path)


def declared_plots(repo: Path) -> dict[str, dict]:
    """dvc.yaml's plots by id: a title with its properties, or an image's path with none."""
    entries = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    return dict(next(iter(e.items())) if isinstance(e, dict) else (e, {}) for e in entries)


def test_every_declared_plot_draws_what_it_should(project, tmp_path):
    declared = declared_plots(project)
    shown = plots_offline.dvc_plots_json(project, [], tmp_path)
    assert not shown.get("errors") and set(shown["data"]) == set(declared)
    artifacts = set(json.loads((project / "metrics/headline.json").read_text()))
    for title, entries in shown["data"].items():
        entry, = entries
        if entry["type"] == "image":
            assert Image.open(entry["url"]).size > (10, 10)
            continue
        spec = entry["content"]
        texts = svg_texts(plots_offline.svg(spec))
        assert title in texts and len(texts) > 5, title
        assert {declared[title].get(key) for key in ("x_label", "y_label")} - {None} <= set(texts), title
        assert_readable(texts)
        assert any(mark["items"] for mark in marks(scene(spec), "mark")), f"{title}: nothing drawn"
        if declared[title].get("template") == "roc":
            assert {row["artifact"] for row in spec["data"]["values"]} == artifacts
            lines = drawn_lines(spec)
            assert len(lines) == len(artifacts)
            for points in lines:
                assert_roc_curve(points, spec["width"])
        if declared[title].get("template") == "training":
            assert legend_labels(spec) >= {"teacher", "student", "finetune"}


def test_offline_page_of_the_project_opens_anywhere(project, tmp_path):
    declared = declared_plots(project)
    images = sum(Path(plot).suffix == ".png" for plot in declared)
    out = plots_offline.write_offline_page(project, tmp_path / "offline.html")
    assert_self_contained(out.read_text(encoding="utf-8"), plots=len(declared), svgs=len(declared) - images,
                          images=images)
