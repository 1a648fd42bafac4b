"""The artifact table: every model file the pipeline makes, as data.

One row per artifact: its name (a key of `metrics/benchmark.json` and `metrics/headline.json`, so names
never change), its file under the models folder, format, runtime, precision, the stage that writes it,
the torch checkpoint whose network it runs (for parameters and MACs) and, for an INT8 model, the float
artifact it must not fall far below. The benchmark, `lib.compare`, `lib.report`, `lib.predict`, the QAT
stage and the tests read this table; adding a format, runtime or precision is one row here.

Also the headline schema: the few short-keyed figures per artifact that `dvc exp show` lists by default.
No torch here, so the tools that only read results import it cheaply.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    name: str
    file: str  # relative to the models folder (absolute for a teacher member saved outside it)
    format: str  # a key of FORMATS
    runtime: str  # what runs it, for people reading a table
    precision: str  # fp32 | dynamic-range int8 | int8
    stage: str  # the DVC stage whose `outs` hold the file
    network: str  # the torch checkpoint (models-relative) whose network it runs: its parameters and MACs
    float_source: str | None = None  # INT8: the float artifact whose AUC it must stay close to
    optional: bool = False  # written only by some recipes (`quantize.method: qat`); measured when present

    def path(self, models_dir: str | Path) -> Path:
        return Path(models_dir) / self.file


FORMATS = {"torch": ".pt", "onnx": ".onnx", "tflite": ".tflite"}  # format → file suffix
SUFFIXES = tuple(FORMATS.values())  # the model files `lib.runtimes.predict` reads
TORCH, ORT, TFLITE = "PyTorch", "ONNX Runtime", "TFLite interpreter"
FP32, DYNAMIC, INT8 = "fp32", "dynamic-range int8", "int8"
PRUNED = "student_pruned.pt"

TABLE: tuple[Artifact, ...] = (  # the order of every results table and of the headline
    Artifact("teacher_torch", "teacher.pt", "torch", TORCH, FP32, "train_teacher", "teacher.pt"),
    Artifact("teacher_onnx", "teacher.onnx", "onnx", ORT, FP32, "export_onnx", "teacher.pt"),
    Artifact("student_torch", "student.pt", "torch", TORCH, FP32, "distill", "student.pt"),
    Artifact("pruned_torch", PRUNED, "torch", TORCH, FP32, "prune", PRUNED),
    Artifact("pruned_onnx", "student.onnx", "onnx", ORT, FP32, "export_onnx", PRUNED),
    Artifact("float32_tflite", "student_float32.tflite", "tflite", TFLITE, FP32, "to_tflite", PRUNED),
    Artifact("dynamic_tflite", "student_dynamic.tflite", "tflite", TFLITE, DYNAMIC, "quantize", PRUNED),
    Artifact("int8_tflite", "student_int8.tflite", "tflite", TFLITE, INT8, "quantize", PRUNED, "float32_tflite"),
    Artifact("int8_onnx", "student_int8.onnx", "onnx", ORT, INT8, "quantize", PRUNED, "pruned_onnx"),
    # QAT: compared with the pruned student's float models, which it was fine-tuned from
    Artifact("qat_tflite", "qat/student_qat_int8.tflite", "tflite", TFLITE, INT8, "qat", PRUNED,
             "float32_tflite", optional=True),
    Artifact("qat_onnx", "qat/student_qat_int8.onnx", "onnx", ORT, INT8, "qat", PRUNED, "pruned_onnx",
             optional=True),
)
NAMES = tuple(a.name for a in TABLE)
TEACHER = "teacher_torch"  # the reference of every "× smaller" and of the accuracy retention
DEPLOYED = "int8_tflite"  # the artifact an edge device runs: one point per experiment in `dvc plots diff`


def by_name(name: str) -> Artifact:
    """The row called `name`; a ValueError listing the names otherwise."""
    for artifact in TABLE:
        if artifact.name == name:
            return artifact
    raise ValueError(f"unknown artifact {name!r}; expected one of: {', '.join(NAMES)}")


def present(models_dir: str | Path) -> list[Artifact]:
    """The artifacts to measure: every required row (a missing file is an error later, where it is read)
    and each optional row whose file exists."""
    return [a for a in TABLE if not a.optional or a.path(models_dir).is_file()]


def teacher_member(arch: str, checkpoint: Path) -> Artifact:
    """An ensemble teacher's member saved as its own checkpoint: `teacher_<arch>_torch`, its own network."""
    return replace(by_name(TEACHER), name=f"teacher_{arch}_torch", file=str(checkpoint), network=str(checkpoint))


def teacher_runtimes(names: Collection[str]) -> list[str]:
    """The whole teacher in each runtime it was measured in: the teacher's latency is its fastest."""
    network = by_name(TEACHER).network
    return [a.name for a in TABLE if a.network == network and a.name in names]


# ------------------------------------------------------------------ the headline schema
HEADLINE_PATH = "metrics/headline.json"
HEADLINE_KEYS = {  # short key → what it is; every figure is in benchmark.json at full detail
    "acc": "test accuracy", "auc": "test ROC AUC", "f1": "test macro F1",
    "decision": "the rule (a key of DECISIONS) that turned probabilities into the answers of acc and f1",
    "kb": "size on disk (KiB)",
    "mmacs": "multiply-accumulates (millions)", "ms": "median batch-1 latency, one thread (ms)",
    "x_smaller": "times smaller than the teacher", "x_faster": "times faster than the teacher"}


def headline_metric(artifact: str, key: str) -> str:
    """The dotted name `dvc exp show` gives one headline figure, e.g. `int8_tflite.acc`."""
    if key not in HEADLINE_KEYS:
        raise ValueError(f"unknown headline key {key!r}; expected one of: {', '.join(HEADLINE_KEYS)}")
    return f"{artifact}.{key}"


# The decision rules: name → (what it answers, the key of an artifact's benchmark.json entry holding its test
# figures). Its `decision` says which rule the headline took (`benchmark.decision`) and which one was chosen on val.
DECISIONS = {
    "argmax": ("the class with the highest probability", "test"),
    "threshold_0.5": ("each label whose probability reaches 0.5", "test"),
    "val_threshold": ("the positive class where its probability reaches the threshold of best balanced accuracy "
                      "on val", "test_val_threshold"),
}


def headline_figures(result: dict) -> dict:
    """One artifact's benchmark result → its headline figures, keyed and ordered as HEADLINE_KEYS: accuracy and
    F1 under the rule its `decision` names for the headline; AUC, which no rule changes, from `test`."""
    test, vs_teacher = result["test"], result["vs_teacher"]
    rule = result["decision"]["headline"]
    decided = result[DECISIONS[rule][1]]
    return {"acc": decided["accuracy"], "auc": test["auc"], "f1": decided["f1_macro"], "decision": rule,
            "kb": round(result["size_bytes"] / 1024, 1), "mmacs": round(result["macs"] / 1e6, 2),
            "ms": round(result["latency_ms"]["p50"], 4), "x_smaller": round(vs_teacher["smaller_x"], 2),
            "x_faster": round(vs_teacher["faster_x"], 2)}


def headline(results: dict[str, dict]) -> dict[str, dict]:
    """The few figures per artifact that `dvc exp show` and `dvc metrics diff` show by default.

    Short keys keep the experiments table narrow; every figure is in `benchmark.json` at full detail.
    """
    return {name: headline_figures(result) for name, result in results.items()}


def measured(report: dict) -> dict[str, dict]:
    """The per-artifact entries of a `metrics/benchmark.json`, in its order (the rest describe the run)."""
    return {name: value for name, value in report.items() if isinstance(value, dict) and "latency_ms" in value}
