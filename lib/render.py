"""Rendering of a comparison (`lib.compare`'s report): Markdown tables, cells, prose, and the plot.

Nothing here computes a statistic; every number comes from the report.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from lib.artifacts import NAMES
from lib.errors import UserError
from lib.exps import DEFAULT_RECIPE, PREDICTIONS, assignment
from lib.io import atomic_path
from lib.stats import ALPHA, FLOAT_NOISE_DECIMALS

WIDTH = 120  # the generated blocks of the docs fit this many columns
MCNEMAR_HEADING = "## McNemar (exact) per run, test predictions"
CARRIED = "carried over"  # the source of a McNemar row that an earlier report computed (see the notes)
MARKERS = "osD^v<>p"  # after the palette's colours, the plot's series take the next marker


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table and the blank line after it."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def fitted(header: list[str], rows: list[list[str]], width: int = WIDTH, keys: int = 1) -> list[str]:
    """`table`, its columns after the first `keys` spread over as many tables as it takes for no line to pass
    `width`; every table repeats the `keys` columns, so each row still says what it is."""
    def pick(cells: list[str], columns: list[int]) -> list[str]:
        return [cells[i] for i in [*range(keys), *columns]]

    def widest(columns: list[int]) -> int:
        return max(map(len, table(pick(header, columns), [pick(row, columns) for row in rows])))

    groups: list[list[int]] = []
    for column in range(keys, len(header)):
        if groups and widest([*groups[-1], column]) <= width:
            groups[-1].append(column)
        else:
            groups.append([column])
    return [line for group in groups or [[]] for line in table(pick(header, group), [pick(r, group) for r in rows])]


def wrapped(text: str, width: int = WIDTH) -> list[str]:
    """A paragraph broken into lines of at most `width` characters, and the blank line after it."""
    return [*textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False), ""]


def denoised(value: float) -> float:
    """`value` rounded past float noise, a negative zero made zero: a tie prints as 0, not -0."""
    return round(value, FLOAT_NOISE_DECIMALS) + 0.0


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{denoised(value):.4g}"


def p_value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def mean_std(s: dict) -> str:
    """Mean to 4 significant digits, the std to 2: the spread is what says how many of those digits count."""
    if not s["n"]:
        return "n/a"
    return f"{num(s['mean'])} ± " + ("n/a" if s["std"] is None else f"{denoised(s['std']):.2g}")


def mean_difference(t: dict) -> str:
    """A paired test's mean difference and its bootstrap CI."""
    if not t["n"]:
        return "n/a"
    ci = f" [{num(t['ci95'][0])}, {num(t['ci95'][1])}]" if t["ci95"] else ""
    return f"{denoised(t['mean_diff']):+.4g}{ci}"


def _difference(t: dict) -> str:
    """A paired cell: mean difference, its bootstrap CI and the exact Wilcoxon p."""
    return mean_difference(t) + (f", p {p_value(t['p'])}" if t["n"] else "")


def _params_yaml_note(vs_params_yaml: dict | None) -> str:
    """How `default` differs from the recipe of params.yaml (exps.differences), when it does."""
    if not vs_params_yaml or not (vs_params_yaml["changed"] or vs_params_yaml["missing"]):
        return ""
    parts = [f"it has {', '.join(f'`{assignment(k, v)}`' for k, v in vs_params_yaml['changed'].items())}"] \
        if vs_params_yaml["changed"] else []
    if vs_params_yaml["missing"]:
        parts.append(f"its runs had no {', '.join(f'`{k}`' for k in vs_params_yaml['missing'])}")
    return f" It is not the recipe of today's params.yaml: {'; '.join(parts)}."


def recipe_note(baseline_params: dict[str, Any], vs_params_yaml: dict | None = None) -> str:
    """What `default` stands for, so that the other recipes' names, the changes from it, can be read; and
    whether it is the recipe of params.yaml (`vs_params_yaml`, exps.differences; None: not known)."""
    if not baseline_params:
        return (f"`{DEFAULT_RECIPE}` is the only recipe: every run has the same params apart from the seed."
                + _params_yaml_note(vs_params_yaml))
    params = ", ".join(f"`{assignment(k, v)}`" for k, v in baseline_params.items())
    what = "the baseline recipe"
    if vs_params_yaml is not None and not _params_yaml_note(vs_params_yaml):
        what = "the recipe of params.yaml, the baseline"
    return (f"`{DEFAULT_RECIPE}` is {what} ({params}); every other recipe is named by the params it changes."
            + _params_yaml_note(vs_params_yaml))


def small_n_warning(paired: list[dict]) -> list[str]:
    """Why a large p says little here: with few seeds the exact test cannot reach significance at all."""
    small = sorted({t["n"] for t in paired if not t["can_reach_alpha"]})
    if not small:
        return []
    return wrapped(f"With n = {', '.join(map(str, small))} paired seeds the exact two-sided Wilcoxon test can never "
                   f"reach p < {ALPHA} (its smallest p is 2/2^n, 0.0625 at n = 5): a large p here means too few "
                   "seeds, not no difference. Queue at least 6 seeds per recipe.")


def _recipes_section(report: dict) -> list[str]:
    return [*wrapped(recipe_note(report["baseline_params"], report.get("baseline_vs_params_yaml"))),
            *table(["recipe", "runs", "seeds", "experiments"],
                   [[f"`{name}`", str(len(r["runs"])), ", ".join(str(x["seed"]) for x in r["runs"]),
                     ", ".join(x["name"] for x in r["runs"])] for name, r in report["recipes"].items()])]


def _paired_section(report: dict) -> list[str]:
    metrics = report["metrics"]
    lines = [f"## Paired by seed: recipe − `{DEFAULT_RECIPE}`", ""]
    if not report["paired"]:
        return [*lines, "Only one recipe: nothing to pair.", ""]
    lines += ["Each cell: mean difference over the seeds both recipes ran, its 95 % bootstrap CI and the exact "
              "Wilcoxon signed-rank p.", ""]
    cells = {(t["recipe"], t["metric"]): t for t in report["paired"]}
    others = list(dict.fromkeys(t["recipe"] for t in report["paired"]))
    lines += table(["recipe", "seeds", *[f"`{m}`" for m in metrics]],
                   [[f"`{name}`", ", ".join(map(str, cells[name, metrics[0]]["seeds"])),
                     *[_difference(cells[name, m]) for m in metrics]] for name in others])
    return lines + small_n_warning(report["paired"])


def _mcnemar_section(report: dict) -> list[str]:
    lines = [MCNEMAR_HEADING, "",
             "b = first artifact right and second wrong, c = the reverse; p = two-sided binomial test on b + c.", ""]
    if not report["mcnemar"]:
        return [*lines, f"No run's {PREDICTIONS} could be read (see the notes).", ""]
    carried = any(t.get("carried") for t in report["mcnemar"])
    if carried:
        lines += wrapped(f"Rows whose source is “{CARRIED}” were not recomputed here: this repository lacks "
                         "their runs' predictions, so they are copied from an earlier report (see the notes); "
                         "the others were recomputed from this repository's predictions.")
    rows = [[t["run"], f"`{t['recipe']}`", str(t["seed"]), f"`{t['first']}`", f"`{t['second']}`", str(t["b"]),
             str(t["c"]), p_value(t["p"]), *([CARRIED if t.get("carried") else "recomputed"] if carried else [])]
            for t in report["mcnemar"]]
    return lines + table(["run", "recipe", "seed", "first", "second", "b", "c", "p", *(["source"] if carried else [])],
                         rows)


def mcnemar_rows(markdown_text: str) -> list[dict[str, str]]:
    """The McNemar table of a comparison's Markdown (`markdown`): one mapping of column → cell (no backticks)
    per row; none where the text has no such table."""
    section = markdown_text.split(MCNEMAR_HEADING, 1)[1] if MCNEMAR_HEADING in markdown_text else ""
    lines = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|")]

    def cells(line: str) -> list[str]:
        return [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]

    return [dict(zip(cells(lines[0]), cells(line))) for line in lines[2:]]


def markdown(report: dict) -> str:
    """The whole comparison: recipes, mean ± std, paired tests, McNemar tests and notes."""
    metrics = report["metrics"]
    lines = ["# Experiments compared across seeds", "", *_recipes_section(report),
             "## Mean ± sample std over seeds", "",
             *table(["recipe", *[f"`{m}`" for m in metrics]],
                    [[f"`{name}`", *[mean_std(r["summary"][m]) for m in metrics]]
                     for name, r in report["recipes"].items()]),
             *_paired_section(report), *_mcnemar_section(report)]
    if report["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def artifacts_with(report: dict, metric: str) -> list[str]:
    """The artifacts that have `metric` (e.g. 'acc') in some recipe, in the pipeline's order (the results
    table's: teacher, student, pruned, conversions), any others (an ensemble's members) after them."""
    keys = [key for r in report["recipes"].values() for key, s in r["summary"].items() if s["n"]]
    found = list(dict.fromkeys(key.rpartition(".")[0] for key in keys if key.rpartition(".")[2] == metric))
    if not found:
        raise UserError(f"--plot-metric: no artifact has {metric!r}; valid: "
                        f"{', '.join(sorted({key.rpartition('.')[2] for key in keys}))}")
    return sorted(found, key=lambda a: NAMES.index(a) if a in NAMES else len(NAMES))


def series_styles(n: int) -> list[tuple[tuple[float, ...], str]]:
    """A (colour, marker) per series, no two alike: matplotlib's default cycle repeats its colours after 10."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if n <= 10 else "tab20"].colors
    return [(palette[i % len(palette)], MARKERS[i // len(palette) % len(MARKERS)]) for i in range(n)]


def plot(report: dict, metric: str, out: str | Path) -> None:
    """Mean ± std error bars of `metric` for every artifact, one series per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    artifacts = artifacts_with(report, metric)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(artifacts)), 4))
    width = 0.8 / len(report["recipes"])
    styles = series_styles(len(report["recipes"]))
    for i, (name, recipe) in enumerate(report["recipes"].items()):
        cells = [recipe["summary"].get(f"{a}.{metric}", {"mean": None, "std": None}) for a in artifacts]
        x = np.arange(len(artifacts)) + (i - (len(report["recipes"]) - 1) / 2) * width
        mean = [np.nan if c["mean"] is None else c["mean"] for c in cells]
        std = [c["std"] or 0.0 for c in cells]
        color, marker = styles[i]
        ax.errorbar(x, mean, yerr=std, fmt=marker, color=color, capsize=3, label=f"{name} (n={len(recipe['runs'])})")
    ax.set_xticks(np.arange(len(artifacts)), artifacts, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: never over a point
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
