"""Rendering of a search (`lib.pareto`'s report): the front as a Markdown table, every cell as CSV, the plot.

Nothing here computes a figure; every number comes from the report.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from lib.grid import cell_text
from lib.io import atomic_path
from lib.pareto import ACC, AUC, COSTS, KB, MMACS, MS
from lib.render import fitted, mean_std, wrapped

COLUMNS = {ACC: "INT8 acc", AUC: "INT8 AUC", KB: "INT8 KiB", MS: "INT8 ms", MMACS: "MMACs"}
AXES = {KB: "INT8 TFLite size on disk (KiB, log scale)", MS: "INT8 TFLite batch-1 latency, 1 thread (ms, log scale)"}


def value_text(value: Any) -> str:
    """A param's value as params.yaml and `-S` write it (`true`, not Python's `True`); linked values as
    `key=value` pairs."""
    if isinstance(value, dict):
        return " ".join(f"{k}={value_text(v)}" for k, v in value.items())
    return value if isinstance(value, str) else json.dumps(value)


def _varying(report: dict) -> list[str]:
    return [key for key, values in report["grid"]["values"].items() if len(values) > 1]


def _intro(report: dict) -> list[str]:
    grid, recipes = report["grid"], report["recipes"]
    fixed = [cell_text({key: values[0]}) for key, values in grid["values"].items() if len(values) == 1]
    on_front = sum(bool(r["front"]) for r in recipes)
    text = (f"{on_front} of {len(recipes)} recipes are on the Pareto front of INT8 TFLite accuracy against size or "
            "against latency (means over seeds): no other recipe has at least their accuracy at no more size (or "
            f"latency) and is better in one of the two. {len(report['cells'])} runs, seeds "
            f"{', '.join(map(str, grid['seeds']))}; the rest of every recipe is today's params.yaml"
            + (f", with {', '.join(f'`{a}`' for a in fixed)}." if fixed else "."))
    return wrapped(text)


def front_markdown(report: dict) -> str:
    """The recipes on either front, smallest first: their grid values, seeds, mean ± std of each figure."""
    keys = _varying(report)
    rows = [[*(f"`{value_text(r['params'][k])}`" for k in keys), str(len(r["seeds"])),
             *(mean_std(r["summary"][m]) for m in COLUMNS), ", ".join(r["front"])]
            for r in report["recipes"] if r["front"]]
    lines = [*_intro(report), *fitted([*keys, "seeds", *COLUMNS.values(), "front"], rows, keys=max(len(keys), 1))]
    if report["missing"]:
        shown = "; ".join(f"`{cell}`" for cell in report["missing"][:5])
        lines += wrapped(f"{len(report['missing'])} cell(s) of the grid have no finished run, e.g. {shown}.")
    for note in report["notes"]:
        lines += wrapped(f"Note: {note}.")
    return "\n".join(lines).rstrip("\n") + "\n"


def cells_csv(report: dict) -> str:
    """One row per run: experiment, seed, its grid values and the deployed model's figures."""
    keys = list(report["grid"]["values"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["experiment", "seed", "recipe", *keys, *report["metrics"]])
    for cell in report["cells"]:
        writer.writerow([cell["experiment"], cell["seed"], cell["recipe"],
                         *(value_text(cell["params"][k]) for k in keys),
                         *("" if cell["metrics"][m] is None else cell["metrics"][m] for m in report["metrics"])])
    return out.getvalue()


def point_label(recipe: dict, keys: list[str]) -> str:
    """A recipe's name on the plot: its values of the varying grid keys, the keys named once in the title."""
    return ", ".join(value_text(recipe["params"][k]) for k in keys) or recipe["recipe"]


def spread(points: list[tuple[float, float]], width: float, height: float) -> list[float]:
    """Vertical offsets (display units, downward) that keep labels of `width` × `height` anchored at `points`
    (display coordinates) from overlapping: each label, highest point first, moves down a line at a time
    until it clears every label placed before it."""
    placed: list[tuple[float, float]] = []
    offsets = [0.0] * len(points)
    for i in sorted(range(len(points)), key=lambda i: -points[i][1]):
        x, y = points[i]
        while any(abs(x - px) < width and abs(y - offsets[i] - py) < height for px, py in placed):
            offsets[i] += height
        placed.append((x, y - offsets[i]))
    return offsets


def _log_ticks(ax, values: list[float]) -> None:
    """Plain numbers on a log axis (200, not 2×10²): 1-2-5 steps, finer where the data span under a decade."""
    from matplotlib import ticker

    span = max(values) / min(values) if values and min(values) > 0 else 10
    steps = (1, 2, 5) if span > 10 else (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=steps))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _shown(report: dict, cost: str) -> list[dict]:
    """The recipes with a mean for both axes of the panel."""
    return [r for r in report["recipes"] if r["summary"][cost]["mean"] is not None
            and r["summary"][ACC]["mean"] is not None]


def _panel(ax, report: dict, cost: str, front: str) -> None:
    """Every recipe's mean ± std; the front's recipes in colour, joined by the step of the front."""
    shown = _shown(report, cost)
    for recipe in shown:
        x, y = recipe["summary"][cost], recipe["summary"][ACC]
        on = front in recipe["front"]
        ax.errorbar(x["mean"], y["mean"], xerr=x["std"] or 0, yerr=y["std"] or 0, fmt="o", capsize=2,
                    color="tab:red" if on else "0.6", zorder=3 if on else 2)
    off_front = sum(front not in r["front"] for r in shown)
    if off_front:
        ax.errorbar([], [], fmt="o", color="0.6", label=f"off the front ({off_front} recipes)")
    members = [next(r for r in report["recipes"] if r["recipe"] == name) for name in report["fronts"][front]]
    ax.step([r["summary"][cost]["mean"] for r in members], [r["summary"][ACC]["mean"] for r in members],
            where="post", color="tab:red", linewidth=1, label=f"Pareto front ({len(members)} recipes)")
    ax.set_xscale("log")
    _log_ticks(ax, [r["summary"][cost]["mean"] for r in shown])
    ax.set_xlabel(AXES[cost])
    ax.legend(fontsize="small", loc="lower right")


def _labels(ax, report: dict, cost: str, front: str) -> None:
    """Each recipe's name beside its point (to its left where it would leave the panel), nudged down where it
    would cover another's; drawn once the layout is final, as the nudges are measured on screen."""
    shown = _shown(report, cost)
    keys = _varying(report)
    labels = [point_label(r, keys) for r in shown]
    ax.get_xlim(), ax.get_ylim()  # settle the autoscaled limits before transforming
    points = [(r["summary"][cost]["mean"], r["summary"][ACC]["mean"]) for r in shown]
    anchors = [tuple(ax.transData.transform(p)) for p in points]
    px = ax.figure.dpi / 72  # display units per typographic point
    widths = [6 * 0.6 * px * len(label) for label in labels]  # 6-point text, about 0.6 em a character
    downs = spread(anchors, max(widths, default=0), 8 * px)
    for recipe, label, point, (x, _), width, down in zip(shown, labels, points, anchors, widths, downs):
        left = x + width > ax.bbox.x1  # the name would leave the panel: it goes to the left of the point
        ax.annotate(label, point, fontsize=6, xytext=(-4 if left else 4, -8 - down / px), textcoords="offset points",
                    ha="right" if left else "left", color="black" if front in recipe["front"] else "0.45")


def plot(report: dict, out: str | Path) -> None:
    """Accuracy against size and against latency, side by side, the front of each marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=(12, 5), sharey=True)
    for ax, (front, cost) in zip(axes, COSTS.items()):
        _panel(ax, report, cost, front)
    axes[0].set_ylabel("INT8 TFLite test accuracy (mean ± std over seeds)")
    keys = _varying(report)
    if keys:
        fig.suptitle(f"each recipe labelled by its {', '.join(keys)}", fontsize="small")
    fig.tight_layout()
    for ax, (front, cost) in zip(axes, COSTS.items()):
        _labels(ax, report, cost, front)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
