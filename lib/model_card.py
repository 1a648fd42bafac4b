"""The model card of a run (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019), as blocks that
`lib.card_render` writes as Markdown and as one HTML page.

Every figure is read from the run's metrics files and meta.json, never typed: `metrics` maps a stage name
(METRICS_FILES) to its metrics/<stage>.json, and figures are printed by `lib.card_analyses.number`.
"""

from __future__ import annotations

from lib import artifacts
from lib.artifacts import DEPLOYED
from lib.card_analyses import (artifacts_section, calibration_section, chain_section, number, per_class_section,
                               with_interval)
from lib.card_render import Block, Bullets, Heading, Para, Table
from lib.task import for_meta

SPLITS = ("train", "val", "test")  # the order of the data table
METRICS_FILES = ("teacher", "student", "prune", "export", "tflite", "quantize", "qat", "benchmark")
PROVENANCE = {  # data sets whose origin the card can state; any other is described by its meta.json alone
    "pneumoniamnist": "pediatric chest X-rays from a single hospital (Kermany et al., Cell 2018), "
                      "as redistributed by MedMNIST v2 (Yang et al., Scientific Data 2023)",
}


def data_name(meta: dict) -> str:
    return meta.get("name") or f"{meta['source']} data"


def build(meta: dict, metrics: dict[str, dict], decision: dict, student_width: float,
          student_last_stride: int) -> list[Block]:
    """Every section of the card, in the order of Mitchell et al."""
    results = artifacts.measured(metrics["benchmark"])
    shape = student_shape(student_width, student_last_stride)
    return [Heading(1, f"Model card: {data_name(meta)} classifier, INT8 TFLite"),
            Para("Written by the pipeline's `bundle` stage: every figure comes from this run's `metrics/*.json` "
                 "and `data/processed/meta.json`. The HTML version draws the figures."),
            *model_details(meta, metrics, results, shape), *intended_use(meta),
            *data_section(meta), *metrics_section(metrics["benchmark"]),
            *chain_section(results, chain_steps(metrics, shape)), *artifacts_section(results),
            *per_class_section(meta, metrics["benchmark"]), *calibration_section(results),
            *decision_section(decision, results[DEPLOYED]["test"]), *warnings_section(metrics),
            *ethics_section(meta), *limits_section(meta, metrics)]


def architecture(model) -> str:
    """A model name, or an ensemble teacher's member names."""
    return f"`{model}`" if isinstance(model, str) else " + ".join(f"`{m}`" for m in model)


def student_shape(width: float, last_stride: int) -> str:
    """The student's width multiplier, and its last downsampling when it runs at stride 1."""
    return f"width ×{number('student_width', width)}" + (", last downsampling at stride 1" if last_stride == 1 else "")


def model_details(meta: dict, metrics: dict[str, dict], results: dict, shape: str) -> list[Block]:
    student = f"{architecture(metrics['student']['model'])} ({shape})"
    roles = (("teacher", artifacts.TEACHER, architecture(metrics["teacher"]["model"])),
             ("student", "student_torch", student), ("pruned student", "pruned_torch", student),
             ("deployed: INT8 TFLite", DEPLOYED, student))
    rows = tuple((role, arch, number("params", results[name]["params"]),
                  number("size_bytes", results[name]["size_bytes"]), number("macs", results[name]["macs"]))
                 for role, name, arch in roles)
    bench, size = metrics["benchmark"], meta["image_size"]
    return [Heading(2, "Model details"),
            Table(("role", "architecture", "parameters", "size (KiB)", "MACs (millions)"), rows),
            Bullets((f"Task: {for_meta(meta).kind} classification of {size} × {size} px images with "
                     f"{meta['channels']} channel(s) into {', '.join(f'`{c}`' for c in meta['classes'])}.",
                     "Files: `model_int8.tflite` (LiteRT, NHWC input) and `model_int8.onnx` (ONNX Runtime, NCHW "
                     "input); `preprocessing.json` gives input, output and decision rule.",
                     f"Quantization recipe `{metrics['qat']['method']}`; run seed {number('seed', bench['seed'])}; "
                     f"benchmarked on {bench['machine']['cpu']} "
                     f"({number('cpu_count', bench['machine']['cpu_count'])} cores)."))]


def intended_use(meta: dict) -> list[Block]:
    return [Heading(2, "Intended use"),
            Bullets(("Intended: research and education. The model shows what distillation, pruning and "
                     "quantization cost and buy on a small edge device, and is a reference for deployment "
                     "experiments (Raspberry Pi, Android).",
                     "Not intended: diagnosis, screening, triage or any decision about a person's care. It is "
                     "not a medical device, has no regulatory clearance and was never validated clinically.",
                     f"Not intended: images unlike `{data_name(meta)}` (another modality, body part, device, site, "
                     "population or resolution). The model answers with one of its classes for any input and "
                     "cannot tell that an image is out of scope."))]


def data_section(meta: dict) -> list[Block]:
    splits = sorted(meta["counts"], key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))
    rows = tuple((c, *(number("counts", meta["counts"][s][c]) for s in splits)) for c in meta["classes"])
    per = for_meta(meta).count_unit
    size = meta["image_size"]
    return [Heading(2, "Training and evaluation data"),
            Para(f"`{data_name(meta)}` from the `{meta['source']}` source: "
                 f"{PROVENANCE.get(meta.get('name'), 'its origin is not recorded in meta.json')}. "
                 f"Test split: {meta['test_split']}. Images are {size} × {size} px, {meta['channels']} "
                 f"channel(s), standardised with the training mean {meta['mean']} and std {meta['std']}. "
                 f"Processed data hash: `{meta.get('sha256', 'n/a')}`."),
            Table(("class", *(f"{s} ({per})" for s in splits)), rows)]


def metrics_section(bench: dict) -> list[Block]:
    baseline = bench["baseline_majority_class"]
    (metric, value), = baseline["test"].items()
    return [Heading(2, "Metrics"),
            Para(f"Every artifact is scored on the same {number('test_images', bench['test_images'])} test "
                 "images through the same preprocessing: accuracy, ROC AUC, macro F1, balanced accuracy, "
                 "per-class sensitivity and specificity, calibration (ECE). Brackets are 95 % intervals: "
                 "percentile bootstrap over the test images for accuracy and AUC (from the benchmark), Wilson "
                 "score intervals for per-class rates. Size is on disk; latency is the median of single-image "
                 f"runs. Baseline: the constant answer ({baseline['class']}) scores {metric.replace('_', ' ')} "
                 f"{number(metric, value)}.")]


def _parity(agreement: dict, reference: str) -> str:
    """'top-1 agreement 0.998 and max |Δ probability| 2.3e-02 against <reference>'."""
    (kind, share), = ((k, v) for k, v in agreement.items() if k.endswith("_agreement"))
    label = "top-1" if kind == "top1_agreement" else "label"
    return (f"{label} agreement {number(kind, share)} and max |Δ probability| "
            f"{number('max_abs_prob_diff', agreement['max_abs_prob_diff'])} against {reference}")


def pruning_step(prune: dict) -> str:
    """What pruning did: its method, ratio and steps, and parameters and MACs before → after."""
    if not prune["steps"]:
        return "no pruning (ratio 0): the student passed through"
    params, macs = prune["params"], prune["macs"]
    if "after" in params:  # structured: whole channels removed
        kept = (f"parameters {number('params', params['before'])} → {number('params', params['after'])} "
                f"({number('removed_fraction', params['removed_fraction'])} removed)")
    else:  # unstructured: zeroed weights, the tensors keep their shape
        kept = (f"non-zero parameters {number('params', params['before'])} → "
                f"{number('params', params['nonzero_after'])}")
    return (f"{prune.get('method', 'structured')} pruning, ratio {number('ratio', prune['ratio'])} in "
            f"{len(prune['steps'])} step(s), fine-tuned: {kept}, MACs (millions) {number('macs', macs['before'])} → "
            f"{number('macs', macs['after'])} ({number('removed_fraction', macs['removed_fraction'])} removed)")


def chain_steps(metrics: dict[str, dict], shape: str) -> dict[str, str]:
    """What each step of the chain did, by artifact, with the figures its stage recorded."""
    quant, student = metrics["quantize"], metrics["student"]
    return {
        artifacts.TEACHER: f"teacher {architecture(metrics['teacher']['model'])} trained on the labels",
        "student_torch": f"student {architecture(student['model'])} ({shape}) "
                         + ("distilled from the teacher" if student.get("distilled") else "trained on the labels only"),
        "pruned_torch": pruning_step(metrics["prune"]),
        "pruned_onnx": f"ONNX export (opset {number('opset', metrics['export']['opset'])}): "
                       + _parity(metrics["export"]["student"]["parity_vs_torch"], "PyTorch"),
        "float32_tflite": "TFLite conversion: " + _parity(metrics["tflite"]["parity_vs_onnx"], "ONNX"),
        DEPLOYED: f"INT8 post-training quantization, {number('calibration_samples', quant['calibration_samples'])} "
                  f"calibration images, per-channel scales {'on' if quant['per_channel'] else 'off'}, int8 "
                  f"input/output {'on' if quant['int8_io'] else 'off'}: "
                  + _parity(quant["int8"]["agreement_vs_float32_tflite"], "float32 TFLite"),
    }


def decision_section(decision: dict, test: dict) -> list[Block]:
    blocks = [Heading(2, "Decision rule"), Para(decision["text"])]
    if decision["rule"] == "threshold":
        tuned = test.get("tuned") or {}
        rows = tuple((name, number("threshold", decision["threshold"]), number("f1", rates.get("f1")),
                      number("thresholds", tuned.get("thresholds", {}).get(name)),
                      number("f1", tuned.get("f1", {}).get(name))) for name, rates in test["per_class"].items())
        blocks += [Table(("label", "threshold", "test F1", "tuned threshold", "test F1, tuned"), rows),
                   Para(f"At the default threshold: exact match {number('exact_match', test.get('exact_match'))}, "
                        f"macro F1 {number('f1_macro', test['f1_macro'])}; with the tuned thresholds: exact match "
                        f"{number('exact_match', tuned.get('exact_match'))}, macro F1 "
                        f"{number('f1_macro', tuned.get('f1_macro'))}.")]
    return blocks


def warnings_section(metrics: dict[str, dict]) -> list[Block]:
    found = tuple(f"`{stage}`: {w}" for stage in METRICS_FILES for w in metrics[stage].get("warnings", []))
    return [Heading(2, "Warnings raised in this run"),
            Bullets(found) if found else Para("No stage raised a warning (collapsed outputs, INT8 AUC loss, "
                                              "no better than the majority class).")]


def ethics_section(meta: dict) -> list[Block]:
    return [Heading(2, "Ethical considerations"),
            Bullets(("Errors are not symmetric: a missed finding and a false alarm cost differently. The "
                     "per-class sensitivity above says how often each class is missed.",
                     "Performance by patient group (age, sex, device, site) cannot be measured: meta.json "
                     "records no such factor, so the test figures may hide groups on which the model fails.",
                     f"The images are those of `{data_name(meta)}`; its licence and consent terms apply."))]


def limits_section(meta: dict, metrics: dict[str, dict]) -> list[Block]:
    """Caveats derived from the data and the run, not claims typed here."""
    size, train = meta["image_size"], meta["counts"]["train"]
    bench = metrics["benchmark"]
    test = bench[DEPLOYED]["test"]
    items = [f"Inputs are {size} × {size} px{' grayscale' if meta['channels'] == 1 else ''}: detail finer than "
             "that is lost before the model sees the image, and a full-resolution image is shrunk to this size.",
             f"One source (`{data_name(meta)}`, test split {meta['test_split']}): the figures hold for images "
             "like these, not for other sites, devices or populations.",
             "Training images per class: " + ", ".join(f"{c} {number('counts', n)}" for c, n in train.items())
             + ": rarer classes are learnt from fewer examples.",
             f"{number('test_images', bench['test_images'])} test images: the deployed model's accuracy is "
             f"{with_interval('accuracy', test['accuracy'], test['ci95']['accuracy'])}, so differences between "
             "artifacts smaller than that interval may be chance.",
             f"Latency was measured on {bench['machine']['cpu']}; an edge device's differs."]
    return [Heading(2, "Caveats and known limits"), Bullets(tuple(items))]
