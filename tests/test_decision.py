"""The decision rule: a binary task's threshold chosen on val (Youden's J) and never on test, the headline's
`decision`, the results table's note, and the refusal of `val_threshold` where one threshold cannot decide."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_arrays
from lib import artifacts
from lib.config import DatasetConfig, Params, from_dict
from lib.decision import decided
from lib.errors import UserError
from lib.metrics import youden_threshold
from lib.processed import write_processed
from lib.report import results_table
from lib.sources import load_source
from lib.task import named

BINARY = named("multi-class", ["normal", "pneumonia"])


def probs_of(positive: list[float]) -> np.ndarray:
    p = np.array(positive)
    return np.stack([1 - p, p], axis=1)


# Val: the threshold 0.4 and 0.7 both give the best balanced accuracy (J = 0.75); 0.5 gives only 0.5.
VAL = (np.array([0, 0, 0, 0, 1, 1, 1, 1]), probs_of([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]))
TEST = (np.array([0, 0, 1, 1, 1]), probs_of([0.2, 0.45, 0.35, 0.55, 0.9]))


def decide(val=VAL, test=TEST, rule="argmax", task=BINARY) -> dict:
    return decided(task, rule, val, test, samples=20, seed=0)


def result_of_argmax() -> dict:
    return BINARY.metrics(*TEST)


def test_youden_picks_the_best_balanced_accuracy_and_of_ties_the_threshold_closest_to_a_half():
    labels, probs = VAL
    assert youden_threshold(labels, probs[:, 1]) == pytest.approx(0.4)  # 0.4 and 0.7 tie; 0.4 is closer to 0.5
    figures = BINARY.decision_figures(labels, probs, {"rule": "val_threshold", "threshold": 0.4})
    assert figures["balanced_accuracy"] == pytest.approx((3 / 4 + 1) / 2)  # 0.6 is the one false positive
    assert BINARY.metrics(labels, probs)["balanced_accuracy"] == pytest.approx(0.75)  # argmax: 0.6 and 0.4 wrong


def test_youden_keeps_a_half_when_it_is_already_best_and_gives_none_without_both_classes():
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.5
    assert youden_threshold(np.array([1, 1, 1]), np.array([0.1, 0.6, 0.9])) is None


def test_the_threshold_comes_from_val_only():
    threshold = decide()["decision"]["threshold"]
    assert threshold == pytest.approx(0.4)
    other_test = (np.array([1, 0, 0, 1, 0, 1]), probs_of([0.05, 0.95, 0.6, 0.3, 0.41, 0.39]))
    assert decide(test=other_test)["decision"]["threshold"] == threshold
    other_val = (VAL[0], probs_of([0.1, 0.2, 0.3, 0.6, 0.65, 0.7, 0.8, 0.9]))  # now 0.65 separates val perfectly
    assert decide(val=other_val)["decision"]["threshold"] == pytest.approx(0.65)


def test_the_val_threshold_is_recorded_with_its_val_and_test_figures():
    result = decide()
    decision, at = result["decision"], result["test_val_threshold"]
    assert decision["rule"] == "val_threshold" and decision["positive_class"] == "pneumonia"
    assert (decision["test"], decision["headline"]) == ("argmax", "argmax")
    assert decision["val"]["accuracy"] == pytest.approx(7 / 8)
    # on test the val-chosen threshold hurts: 0.45 becomes a false positive, and 0.35 stays a miss
    assert at["accuracy"] == pytest.approx(3 / 5) and result_of_argmax()["accuracy"] == pytest.approx(4 / 5)
    assert at["per_class"]["pneumonia"]["sensitivity"] == pytest.approx(2 / 3)
    assert at["predicted_counts"] == {"normal": 2, "pneumonia": 3}
    assert len(at["ci95"]["accuracy"]) == 2 and "auc" not in at  # AUC does not depend on the rule


def benchmark_entry(quality: dict) -> dict:
    return {**quality, "size_bytes": 2048, "macs": 1_000_000, "latency_ms": {"p50": 0.5},
            "vs_teacher": {"smaller_x": 2.0, "faster_x": 3.0}}


def quality_of(task, rule: str, val=VAL, test=TEST) -> dict:
    test_figures = task.metrics(*test, task.fit_thresholds(*val))
    return benchmark_entry({"test": test_figures, **decided(task, rule, val, test, samples=20, seed=0)})


def test_the_headline_takes_accuracy_and_f1_by_the_rule_it_names():
    argmax = artifacts.headline_figures(quality_of(BINARY, "argmax"))
    at = artifacts.headline_figures(quality_of(BINARY, "val_threshold"))
    entry = quality_of(BINARY, "val_threshold")
    assert argmax["decision"] == "argmax" and argmax["acc"] == entry["test"]["accuracy"] == pytest.approx(4 / 5)
    assert at["decision"] == "val_threshold"
    assert (at["acc"], at["f1"]) == (entry["test_val_threshold"]["accuracy"], entry["test_val_threshold"]["f1_macro"])
    assert at["auc"] == argmax["auc"] == entry["test"]["auc"]


def test_other_tasks_name_their_fixed_rule_and_multi_label_its_val_thresholds():
    three = named("multi-class", ["a", "b", "c"])
    val = (np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3)
    entry = quality_of(three, "argmax", val, val)
    assert entry["decision"] == {"test": "argmax", "headline": "argmax", "rule": "argmax"}
    assert "test_val_threshold" not in entry
    multi = named("multi-label", ["effusion", "nodule"])
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    entry = quality_of(multi, "argmax", (labels, np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.8], [0.1, 0.4]])),
                       (labels, np.array([[0.8, 0.1], [0.2, 0.6], [0.4, 0.9], [0.3, 0.2]])))
    assert entry["decision"]["rule"] == "val_f1_per_label"
    assert entry["decision"]["thresholds"] == entry["test"]["tuned"]["thresholds"]
    assert artifacts.headline_figures(entry)["decision"] == "threshold_0.5"


@pytest.mark.parametrize("task", [named("multi-class", ["a", "b", "c"]), named("multi-label", ["x", "y", "z"])])
def test_val_threshold_is_refused_unless_the_task_has_two_classes(task):
    task.check_decision("argmax", np.array([0, 1, 2]))
    with pytest.raises(UserError, match=r"benchmark.decision: val_threshold .* needs a binary single-label task "
                                        r"\(2 classes\); this data set is .* with 3 outputs .*set benchmark."
                                        r"decision: argmax"):
        task.check_decision("val_threshold", np.array([0, 1, 2]))


def test_val_threshold_needs_both_classes_in_val():
    BINARY.check_decision("val_threshold", np.array([0, 1, 1]))
    with pytest.raises(UserError, match="val split, which holds no image of class 'normal'"):
        BINARY.check_decision("val_threshold", np.array([1, 1, 1]))


def test_the_param_takes_the_two_rules_and_defaults_to_argmax(params_dict):
    assert from_dict(Params, params_dict).benchmark.decision == "argmax"
    del params_dict["benchmark"]["decision"]
    assert from_dict(Params, params_dict).benchmark.decision == "argmax"
    params_dict["benchmark"]["decision"] = "youden"
    with pytest.raises(UserError, match="benchmark.decision: got 'youden'; expected one of argmax, val_threshold"):
        from_dict(Params, params_dict)


def test_setup_refuses_val_threshold_on_a_three_class_data_set(tmp_path, monkeypatch, params_dict, write_params):
    from lib.context import setup

    make_arrays(tmp_path / "raw", {"train": 12, "val": 6, "test": 6}, 3)
    cfg = DatasetConfig(source="arrays", root=str(tmp_path / "raw"), image_size=28, test_fraction=0.25)
    write_processed(load_source(cfg, 0), cfg, tmp_path / "processed")
    params_dict["dataset"] = {**params_dict["dataset"], "source": "arrays", "root": "raw", "name": None}
    params_dict["benchmark"]["decision"] = "val_threshold"
    params_dict["device"] = "cpu"
    write_params(params_dict)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="needs a binary single-label task"):
        setup("processed")


def report_of(rule: str) -> dict:
    entries = {name: {**quality_of(BINARY, rule), "params": 10} for name in ("teacher_torch", artifacts.DEPLOYED)}
    for entry in entries.values():
        entry["latency_ms"]["threads"] = 1
        entry["test"]["ci95"] = {"accuracy": None, "auc": None}
    return {**entries, "baseline_majority_class": {"class": "pneumonia", "test": {"accuracy": 0.6}},
            "machine": {"cpu": "test", "cpu_count": 2}, "test_images": 5}


def test_the_results_table_names_the_rule_and_the_deployed_model_at_the_val_threshold():
    table = results_table(report_of("argmax"))
    assert "Decisions: `argmax` (the class with the highest probability) for the accuracy" in table
    assert "headline.json" not in table
    at = " ".join(table.split("At the val-chosen threshold", 1)[1].split("\n\n", 1)[0].split())
    assert at.startswith("(`pneumonia` when its probability reaches 0.400, the best balanced accuracy on val: 0.875")
    assert "`int8_tflite` scores accuracy 0.600 [" in at and "sensitivity pneumonia 0.667" in at
    assert "takes accuracy and F1 by `val_threshold`" in results_table(report_of("val_threshold"))
    assert max(map(len, table.splitlines())) <= 120


def test_the_results_table_of_a_benchmark_without_recorded_rules_has_no_note():
    report = report_of("argmax")
    for name in ("teacher_torch", artifacts.DEPLOYED):
        del report[name]["decision"], report[name]["test_val_threshold"]
    assert "Decisions" not in results_table(report) and "val-chosen" not in results_table(report)
