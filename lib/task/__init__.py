"""Task types: `for_meta(meta)` gives the task a processed data set was prepared for.

Adding a task type: a `Task` subclass in its own module and one line in `TASKS`.
"""

from __future__ import annotations

import numpy as np

from lib.task.base import Task
from lib.task.multi_label import THRESHOLD, MultiLabel
from lib.task.single_label import SingleLabel

TASKS: dict[str, type[Task]] = {SingleLabel.name: SingleLabel, MultiLabel.name: MultiLabel}
DEFAULT = SingleLabel  # a meta.json without `task`

__all__ = ["TASKS", "THRESHOLD", "Task", "for_meta", "for_labels", "named"]


def named(name: str, classes: list[str]) -> Task:
    return TASKS[name](classes)


def for_meta(meta: dict) -> Task:
    """The task of a processed data set, from its meta.json."""
    return named(meta.get("task", DEFAULT.name), meta["classes"])


def for_labels(labels: list[np.ndarray]) -> type[Task]:
    """The task label arrays describe (the `arrays` source): multi-label when one is a 0/1 matrix with a row
    that is not one-hot; class indices and one-hot rows are single-label."""
    return MultiLabel if any(MultiLabel.describes(y) for y in labels) else SingleLabel
