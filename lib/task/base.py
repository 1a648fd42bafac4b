"""The task abstraction: everything that depends on what a label is, asked of one object.

A task is built once from a processed data set's `meta.json` (`lib.task.for_meta`). It owns the output
activation, the losses and class weighting, the decision rule, the metrics, the export agreement measure,
the majority baseline, how predictions are recorded and shown, and Grad-CAM's target. Every other module
asks the task; none branches on its type. A new task type is one new subclass and one registry line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from lib.errors import UserError

Top = list[tuple[str, float]]  # one image's (class, probability) pairs, best first


class Task(ABC):
    """What a label is: the methods every task type implements, over its `classes` (or label names)."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the task in words: "single-label" or "multi-label"
    activation_name: ClassVar[str]  # what `activation` applies, for a deployment's description
    count_unit: ClassVar[str]  # what `class_counts` counts, for a table's header
    carve_rule: ClassVar[str]  # how a test split is carved from train: "stratified" or "at random"
    table_extra: ClassVar[tuple[str, ...]] = ()  # columns `lib.predict` adds after file, class, probability

    def __init__(self, classes: list[str]):
        self.classes = list(classes)

    # ------------------------------------------------------------ data
    @staticmethod
    @abstractmethod
    def parse_labels(y: np.ndarray, path: Path) -> np.ndarray:
        """A source's label array → the stored labels; a UserError naming `path` when it cannot be."""

    @staticmethod
    @abstractmethod
    def count_outputs(labels: list[np.ndarray]) -> int:
        """How many classes (or labels) parsed label arrays hold, for a source without class names."""

    @abstractmethod
    def check_splits(self, labels: dict[str, np.ndarray]) -> None:
        """Refuse labels a model cannot learn from (empty splits, unknown classes, a class never seen)."""

    @abstractmethod
    def stratify(self, labels: np.ndarray) -> np.ndarray | None:
        """What a carved test split is stratified by; None draws it at random."""

    @abstractmethod
    def class_counts(self, labels: np.ndarray) -> dict[str, int]:
        """Images per class (per label: images on which it is present)."""

    def meta_entry(self) -> dict:
        """What meta.json records of the task."""
        return {"task": self.name}

    # ------------------------------------------------------------ model outputs and training
    @abstractmethod
    def activation(self, logits: np.ndarray) -> np.ndarray:
        """Logits (N, outputs) → probabilities."""

    @abstractmethod
    def hard_loss(self, weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
        """The loss on the true labels, `weight` from `class_weights`."""

    @abstractmethod
    def soft_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The distillation term between logits already divided by the temperature."""

    def distillation_temperature(self, configured: float) -> float:
        """The temperature the soft targets are taken at: `distill.temperature`."""
        return configured

    @abstractmethod
    def class_weights(self, labels: np.ndarray, mode: str) -> torch.Tensor | None:
        """`train.class_weights`: None for 'none'; 'balanced' weighs rare classes up."""

    def check_ensemble_teacher(self) -> None:
        """An ensemble teacher averages its members' probabilities; a task where that is wrong refuses it."""

    def check_batch_mixing(self) -> None:
        """MixUp and CutMix (`train.mixup_alpha`, `train.cutmix_alpha`) turn class indices into soft targets;
        a task whose labels are not one class per image refuses them."""

    # ------------------------------------------------------------ scoring
    @abstractmethod
    def metrics(self, labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict:
        """Every figure of one split; `thresholds` from `fit_thresholds` on val add the tuned figures."""

    def fit_thresholds(self, labels: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
        """Decision thresholds chosen on these (validation) predictions; None where the rule has none."""
        return None

    @abstractmethod
    def accuracy(self, labels: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> float:
        """The headline accuracy; `threshold` replaces the task's fixed rule where the task takes one."""

    @abstractmethod
    def auc(self, labels: np.ndarray, probs: np.ndarray) -> float | None:
        """The headline ROC AUC; None where it is undefined."""

    # ------------------------------------------------------------ decision rules (`benchmark.decision`)
    fixed_rule: ClassVar[str]  # the rule of `metrics`' figures: "argmax", or "threshold_0.5" per label

    def check_decision(self, rule: str, val_labels: np.ndarray) -> None:
        """Refuse a `benchmark.decision` this task cannot apply; only `argmax` (its fixed rule) here."""
        if rule != "argmax":
            raise UserError(f"benchmark.decision: {rule} picks one threshold on the positive class's probability, "
                            f"so it needs a binary single-label task (2 classes); this data set is {self.name} "
                            f"with {len(self.classes)} outputs ({', '.join(self.classes)}); set "
                            "benchmark.decision: argmax")

    def fit_decision(self, labels: np.ndarray, probs: np.ndarray) -> dict:
        """The decision rule chosen on these (validation) predictions, as `{"rule": name, ...}`; the fixed
        rule where the task chooses none."""
        return {"rule": self.fixed_rule}

    def deployed_rule(self, tuned: dict | None) -> dict:
        """The decision `lib.predict` applies, as a deployment describes it (`text`); `tuned` is the
        benchmark's figures under thresholds tuned on val (`{"thresholds", "rule", ...}`), None without them."""
        return {"rule": "argmax", "text": f"The answer is the class of highest probability (argmax of the "
                                          f"{self.activation_name}), as `lib.predict` decides; no threshold "
                                          "is applied."}

    def decision_figures(self, labels: np.ndarray, probs: np.ndarray, decision: dict) -> dict | None:
        """This split's figures under `decision` (of `fit_decision`) where `metrics` does not already hold them."""
        return None

    agreement_kind: ClassVar[str]  # what `agreement` counts, for messages: "top-1" or "label"

    @abstractmethod
    def agreement(self, reference: np.ndarray, probs: np.ndarray) -> dict:
        """How closely one artifact reproduces another: `agreement` (a share) and `max_abs_prob_diff`."""

    @abstractmethod
    def majority_baseline(self, train_labels: np.ndarray, labels: np.ndarray) -> dict:
        """The constant answer learnt from train and its figure on `labels`, as {"test": {metric: value}}."""

    @abstractmethod
    def collapse_warnings(self, what: str, split: str, metrics: dict) -> list[str]:
        """A warning when `metrics` (of `metrics()`) show outputs that collapsed to a constant."""

    # ------------------------------------------------------------ recording and showing predictions
    @abstractmethod
    def answers(self, labels: np.ndarray, probs: np.ndarray) -> tuple[list, list]:
        """Each image's true and predicted answer as predictions.csv records them (compared for McNemar)."""

    @abstractmethod
    def roc_inputs(self, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(truth, score) vectors of the one ROC curve drawn per artifact."""

    @abstractmethod
    def confusion(self, labels: np.ndarray, probs: np.ndarray) -> tuple[list[str], list[str]] | None:
        """(actual, predicted) class names for a confusion matrix; None where the task has none."""

    def gradcam_targets(self, probs: np.ndarray) -> np.ndarray:
        """The output each image's heat map explains: the highest-scoring class or label."""
        return probs.argmax(axis=1)

    @abstractmethod
    def sample_groups(self, labels: np.ndarray) -> np.ndarray:
        """One group per image, for drawing examples evenly over the classes."""

    @abstractmethod
    def describe(self, label: np.ndarray) -> str:
        """A true label as words, for a figure's title."""

    @abstractmethod
    def default_top(self) -> int:
        """How many (class, probability) pairs `lib.predict` lists per image by default."""

    @abstractmethod
    def answer(self, top: Top, threshold: float) -> dict:
        """`lib.predict --json`: the decision for one image from its ranked pairs."""

    def table_cells(self, probability: float, threshold: float) -> tuple[str, ...]:
        """`lib.predict`'s extra cells (see `table_extra`) for one (class, probability) row."""
        return ()


def check_not_empty(labels: dict[str, np.ndarray]) -> None:
    for split, y in labels.items():
        if len(y) == 0:
            raise UserError(f"split {split!r} is empty")
