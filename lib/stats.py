"""The statistics of a comparison across seeds: summaries, paired tests between recipes, McNemar within a run;
and the interval of one rate (the model card's per-class figures)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

ALPHA = 0.05
FLOAT_NOISE_DECIMALS = 12  # paired differences are rounded here: 0.7 - 0.6999999999999999 is a tie, not a win
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def summary(values: list[float]) -> dict:
    """n, mean and sample standard deviation (ddof=1) of the finite values."""
    finite = np.array([v for v in values if not math.isnan(v)])
    n = len(finite)
    return {"n": n, "mean": float(finite.mean()) if n else None,
            "std": float(finite.std(ddof=1)) if n > 1 else None}


def smallest_wilcoxon_p(n: int) -> float:
    """The exact two-sided Wilcoxon p when all n differences share a sign: 2 / 2**n (0.0625 at n = 5)."""
    return min(1.0, 2.0 / 2 ** n)


def paired_test(differences: list[float]) -> dict:
    """Exact Wilcoxon signed-rank and a percentile-bootstrap 95% CI of the mean paired difference."""
    diffs = np.round([d for d in differences if not math.isnan(d)], FLOAT_NOISE_DECIMALS)
    n = len(diffs)
    result = {"n": n, "mean_diff": float(diffs.mean()) if n else None, "ci95": None, "p": None,
              "can_reach_alpha": smallest_wilcoxon_p(n) < ALPHA}
    if n >= 2:
        ci = stats.bootstrap((diffs,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        result["ci95"] = [float(ci.low), float(ci.high)]
    if n >= 1:
        result["p"] = 1.0 if not diffs.any() else float(stats.wilcoxon(diffs, method="exact").pvalue)
    return result


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray) -> dict:
    """Exact McNemar: a two-sided binomial test on the images exactly one of the two artifacts got right.

    b = first right and second wrong, c = first wrong and second right.
    """
    b = int(np.sum(first_correct & ~second_correct))
    c = int(np.sum(~first_correct & second_correct))
    p = float(stats.binomtest(c, b + c).pvalue) if b + c else 1.0
    return {"b": b, "c": c, "p": p}


def rate_interval(rate: float | None, n: int, level: float = 1 - ALPHA) -> list[float] | None:
    """Wilson score interval of a rate measured on n images (e.g. a class's sensitivity on its test images);
    None where the rate is undefined or n is 0."""
    if rate is None or n <= 0:
        return None
    ci = stats.binomtest(round(rate * n), n).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]
