"""Sanity checks on results, loud on stderr and recorded in the metrics of the stage that finds them.

A run can finish "successfully" with a useless model: one that predicts a single class for every image,
an INT8 conversion whose ranking collapsed, or an artifact no better than always answering the majority
class. These checks turn such a run into something the user sees.
"""

from __future__ import annotations

import sys

from lib.task import Task

INT8_MAX_AUC_DROP = 0.05  # INT8 AUC more than 5 points below its float model is a broken quantization


def collapse_warnings(task: Task, what: str, metrics_by_split: dict[str, dict]) -> list[str]:
    """A warning for each split on which `what` collapsed to a constant answer, as the task judges it
    (one class for every image; a label with one answer on every image)."""
    return [w for split, metrics in metrics_by_split.items() for w in task.collapse_warnings(what, split, metrics)]


def int8_auc_warning(what: str, int8_auc: float | None, float_auc: float | None) -> list[str]:
    if int8_auc is None or float_auc is None or float_auc - int8_auc <= INT8_MAX_AUC_DROP:
        return []
    return [f"{what}: test AUC {int8_auc:.3f} is {100 * (float_auc - int8_auc):.1f} points below the float "
            f"model's {float_auc:.3f} (limit {100 * INT8_MAX_AUC_DROP:.0f}): quantization broke the model"]


def majority_warning(what: str, accuracy: float, majority_accuracy: float, metric: str = "accuracy") -> list[str]:
    """`metric` (accuracy; balanced_accuracy for multi-label) no better than the constant majority answer's."""
    if accuracy > majority_accuracy:
        return []
    return [f"{what}: test {metric.replace('_', ' ')} {accuracy:.3f} is no better than always answering the "
            f"majority class ({majority_accuracy:.3f})"]


def announce(warnings: list[str]) -> list[str]:
    """Print each warning to stderr, prefixed so it stands out in a DVC log; return them for the metrics."""
    for message in warnings:
        print(f"WARNING: {message}", file=sys.stderr, flush=True)
    return warnings
