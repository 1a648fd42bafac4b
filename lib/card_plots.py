"""The model card's figures, drawn from the same figures as its tables and returned as PNG bytes (embedded in
model_card.html, so the page needs no other file)."""

from __future__ import annotations

import io

import numpy as np

from lib import artifacts
from lib.artifacts import DEPLOYED
from lib.card_analyses import class_rates, in_table_order


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})  # no version: same run, same bytes
    plt.close(fig)
    return buffer.getvalue()


def _errors(values: list[float | None], bounds: list[list[float] | None]) -> np.ndarray:
    """Error-bar lengths below and above each value (0 where there is no interval, or where a percentile
    interval happens not to contain its value)."""
    return np.array([[0.0, 0.0] if b is None or v is None else [max(v - b[0], 0.0), max(b[1] - v, 0.0)]
                     for v, b in zip(values, bounds)]).T


def tradeoff(results: dict[str, dict]):
    """Per artifact, one row: test accuracy with its interval (left), size on disk (right, log scale)."""
    import matplotlib.pyplot as plt

    names = list(in_table_order(results))[::-1]  # top to bottom in table order
    accuracy = [results[n]["test"]["accuracy"] for n in names]
    bounds = [results[n]["test"].get("ci95", {}).get("accuracy") for n in names]
    y = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, sharey=True, figsize=(8, 0.35 * len(names) + 1.2))
    left.errorbar(accuracy, y, xerr=_errors(accuracy, bounds), fmt="o", capsize=3)
    left.set_xlabel("test accuracy (95 % CI)")
    left.set_yticks(y, names)
    for label in left.get_yticklabels():
        label.set_fontweight("bold" if label.get_text() == DEPLOYED else "normal")
    right.barh(y, [results[n]["size_bytes"] / 1024 for n in names])
    right.set_xscale("log")
    right.set_xlabel("size on disk (KiB, log scale)")
    return fig


def per_class(meta: dict, bench: dict):
    import matplotlib.pyplot as plt

    rates = class_rates(meta, bench)
    classes = list(rates)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(classes) + 2), 3.5))
    x = np.arange(len(classes))
    for shift, key in ((-0.12, "sensitivity"), (0.12, "specificity")):
        values = [rates[c][key][0] for c in classes]
        shown = [np.nan if v is None else v for v in values]
        ax.errorbar(x + shift, shown, yerr=_errors(values, [rates[c][key][1] for c in classes]), fmt="o",
                    capsize=3, label=key)
    ax.set_xticks(x, classes, rotation=30 if len(classes) > 4 else 0, ha="right" if len(classes) > 4 else "center")
    lows = [b[0] for c in classes for _, b in rates[c].values() if b is not None]
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), 1.02)
    ax.set_ylabel("rate on the test split")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def card_figures(meta: dict, bench: dict) -> dict[str, bytes]:
    """PNG bytes of each figure the card places, by its key (`lib.card_render.Figure.key`)."""
    import matplotlib

    matplotlib.use("Agg")
    return {"tradeoff": _png(tradeoff(artifacts.measured(bench))), "per_class": _png(per_class(meta, bench))}
