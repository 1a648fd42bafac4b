"""The decision rule of each artifact's figures: the rule chosen on val, its test figures, and the headline's rule.

An artifact's `test` figures follow the task's fixed rule (argmax; 0.5 per label for multi-label). Beside them
the benchmark records in `decision` the rule chosen on the artifact's own val predictions: for a binary task the
threshold on the positive class's probability with the best balanced accuracy on val (`val_threshold`, its test
figures in `test_val_threshold`), for a multi-label task the per-label thresholds of best F1 on val
(`val_f1_per_label`, its test figures in `test.tuned`), for more classes none (`argmax`). `decision.test` names
the rule of the `test` figures, `decision.headline` the rule whose accuracy and F1 `metrics/headline.json`
reports (`benchmark.decision`).

Test never informs a choice: the test figures of a val-chosen rule are as honest an estimate as argmax's.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from lib.artifacts import DECISIONS
from lib.metrics import bootstrap_ci
from lib.task import Task

Split = tuple[np.ndarray, np.ndarray]  # (labels, probabilities)


def decided(task: Task, rule: str, val: Split, test: Split, samples: int, seed: int) -> dict:
    """`decision` and, where the rule chosen on val has test figures `metrics` lacks, those figures with a
    bootstrap 95 % interval of accuracy (the resamples of `test`'s intervals: same samples, same seed).

    `rule`: `benchmark.decision`; the headline takes the val-chosen rule for `val_threshold`, else the fixed one.
    """
    (val_labels, val_probs), (labels, probs) = val, test
    chosen = task.fit_decision(val_labels, val_probs)
    headline = chosen["rule"] if rule == "val_threshold" else task.fixed_rule
    out = {"decision": {"test": task.fixed_rule, "headline": headline, **chosen}}
    figures = task.decision_figures(labels, probs, chosen)
    if figures is not None:
        accuracy = partial(task.accuracy, threshold=chosen["threshold"])
        figures["ci95"] = {"accuracy": bootstrap_ci(labels, probs, accuracy, samples, seed)}
        out[DECISIONS[chosen["rule"]][1]] = figures
    return out
