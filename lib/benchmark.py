"""The benchmark's measurements: every artifact on the same test split, by the same rules.

Quality is scored by the task on `runtimes.predict`'s output, so differences between formats are
differences between the models; deployment costs (size, MACs, latency, throughput) come from `lib.bench`.
Then each artifact is set against the teacher and the majority-class answer, and the sanity checks run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib import artifacts, bench, checks
from lib.artifacts import Artifact
from lib.config import BenchmarkConfig
from lib.context import Context
from lib.decision import decided
from lib.metrics import bootstrap_ci
from lib.ensemble import Ensemble, ensemble_members
from lib.models import load_checkpoint, save_checkpoint
from lib.processed import normalize
from lib.pruning import count_macs_params
from lib.runtimes import predict
from lib.task import Task


def teacher_members(models_dir: Path, out: Path) -> list[Artifact]:
    """An ensemble teacher's members as artifacts `teacher_<arch>_torch`, each saved as a checkpoint in `out`
    (which is also its network, for MACs); none for a single teacher."""
    teacher, spec = load_checkpoint(models_dir / artifacts.by_name(artifacts.TEACHER).file)
    if not isinstance(teacher, Ensemble):
        return []
    members = []
    for arch, member in zip(ensemble_members(spec.arch), teacher.members):
        path = out / f"teacher_{arch}.pt"
        save_checkpoint(member, dataclasses.replace(spec, arch=arch), path)
        members.append(artifacts.teacher_member(arch, path))
    return members


def measure_all(ctx: Context, measured: list[Artifact], models_dir: Path,
                all_cores: int) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Each artifact's figures for benchmark.json, and its test probabilities (for the plots), by name.

    MACs and parameters are counted once per network: the formats of one network share them.
    """
    images, _ = ctx.splits["test"]
    sample = normalize(images[:ctx.params.benchmark.throughput_batch], ctx.meta)
    ops: dict[str, tuple[int, int]] = {}
    results, probabilities = {}, {}
    for artifact in tqdm(measured, desc="benchmark", disable=None):
        if artifact.network not in ops:
            network, _ = load_checkpoint(Path(models_dir) / artifact.network)
            ops[artifact.network] = count_macs_params(network, ctx.example_input())
        path = artifact.path(models_dir)
        probabilities[artifact.name] = probs = predict(path, images, ctx.meta)
        macs, params = ops[artifact.network]
        results[artifact.name] = {**quality(ctx, path, probs), "size_bytes": bench.size_bytes(path),
                                  "compressed_kb": bench.compressed_kb(path), "macs": macs, "params": params,
                                  **timings(path, sample, ctx.params.benchmark, all_cores)}
    return results, probabilities


def quality(ctx: Context, path: Path, probs: np.ndarray) -> dict:
    """`test`: the task's test metrics (with decision thresholds it fits on val, if any) and bootstrap 95 %
    intervals of accuracy and AUC, resampled with the run's seed so every artifact sees the same resamples;
    beside it the decision rule chosen on the artifact's val predictions and its test figures (`lib.decision`)."""
    task, samples, seed = ctx.task, ctx.params.benchmark.bootstrap_samples, ctx.params.seed
    _, labels = ctx.splits["test"]
    val_images, val_labels = ctx.splits["val"]
    val_probs = predict(path, val_images, ctx.meta)
    test = task.metrics(labels, probs, task.fit_thresholds(val_labels, val_probs))
    test["ci95"] = {"accuracy": bootstrap_ci(labels, probs, task.accuracy, samples, seed),
                    "auc": bootstrap_ci(labels, probs, task.auc, samples, seed)}
    return {"test": test, **decided(task, ctx.params.benchmark.decision, (val_labels, val_probs), (labels, probs),
                                    samples, seed)}


def timings(path: Path, sample: np.ndarray, cfg: BenchmarkConfig, all_cores: int) -> dict:
    """Batch-1 latency at the configured thread count and on every core, and throughput on every core."""
    return {"latency_ms": bench.latency_ms(path, sample, cfg.threads, cfg.warmup, cfg.runs),
            "latency_ms_all_cores": bench.latency_ms(path, sample, all_cores, cfg.warmup, cfg.runs),
            "throughput": bench.throughput(path, sample, all_cores, cfg.throughput_runs)}


def add_ratios_to_teacher(results: dict[str, dict]) -> None:
    """Size ×, latency × (against the teacher's fastest runtime) and accuracy retention, per artifact."""
    teacher = results[artifacts.TEACHER]
    teacher_latency = min(results[name]["latency_ms"]["p50"] for name in artifacts.teacher_runtimes(results))
    for result in results.values():
        result["vs_teacher"] = {
            "smaller_x": teacher["size_bytes"] / result["size_bytes"],
            "faster_x": teacher_latency / result["latency_ms"]["p50"],
            "accuracy_retention_pct": 100 * result["test"]["accuracy"] / teacher["test"]["accuracy"],
        }


def report(ctx: Context, results: dict[str, dict], machine: dict) -> dict:
    """benchmark.json: each artifact against the teacher and the majority-class answer, the run's
    circumstances, and the sanity warnings (also printed)."""
    add_ratios_to_teacher(results)
    _, labels = ctx.splits["test"]
    baseline = ctx.task.majority_baseline(ctx.splits["train"][1], labels)
    (metric, majority), = baseline["test"].items()
    for result in results.values():
        result["beats_majority_class"] = result["test"][metric] > majority
    return {**results, "baseline_majority_class": baseline,
            "machine": machine, "test_images": len(labels), "seed": ctx.params.seed,
            "warnings": checks.announce(sanity_warnings(ctx.task, results, baseline["test"]))}


def sanity_warnings(task: Task, results: dict[str, dict], baseline: dict) -> list[str]:
    """Artifacts that collapsed, are no better than the majority class, or lost AUC in INT8.

    `baseline`: the majority answer's test figure, by name (the figure the task compares it by).
    """
    (metric, majority), = baseline.items()
    warnings = []
    for name, result in results.items():
        warnings += checks.collapse_warnings(task, name, {"test": result["test"]})
        warnings += checks.majority_warning(name, result["test"][metric], majority, metric)
    for int8 in artifacts.TABLE:
        if int8.float_source and int8.name in results:
            warnings += checks.int8_auc_warning(int8.name, results[int8.name]["test"]["auc"],
                                                results[int8.float_source]["test"]["auc"])
    return warnings
