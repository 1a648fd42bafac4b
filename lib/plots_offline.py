"""Every plot of dvc.yaml on one self-contained HTML page that opens anywhere, without a network.

    python -m lib.plots_offline                        # the workspace's plots → dvc_plots/offline.html
    python -m lib.plots_offline --out plots.html HEAD  # `dvc plots diff HEAD`: HEAD against the workspace

The page `dvc plots show` writes loads Vega from a CDN, so offline it is blank. Here DVC still fills each plot's
template (`dvc plots show --json`), but vl-convert, which bundles Vega, draws it as inline SVG; images are
inlined as data URIs, and the page declares UTF-8 (DVC's own page does only through .dvc/plots/page.html).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import mimetypes
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import vl_convert

from lib import cli
from lib.errors import UserError
from lib.io import atomic_path

DEFAULT_OUT = Path("dvc_plots/offline.html")  # beside DVC's own dvc_plots/index.html, ignored by git
VEGA_LITE = "5.21"  # the templates in .dvc/plots/ and DVC's own are Vega-Lite 5

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} section {{ margin-bottom: 3em; }}
img {{ max-width: 100%; }}</style>
</head>
<body>
<h1>{title}</h1>
{sections}
</body>
</html>
"""


def dvc_plots_json(repo: Path, revs: list[str], images: Path) -> dict:
    """DVC's filled plots, as `dvc plots show --json` (no revision) or `dvc plots diff --json REV...` prints
    them: {"data": {plot title: [entry, ...]}, "errors": [...]}; image plots are copied into `images`."""
    command = ["plots", "diff", *revs] if revs else ["plots", "show"]
    result = subprocess.run([sys.executable, "-m", "dvc", *command, "--json", "-o", str(images)], cwd=repo,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`dvc {' '.join(command)} --json` failed: {result.stderr.strip()[-2000:]}; "
                        "run it in the project's root, after `dvc repro`")
    return json.loads(result.stdout)


def svg(spec: dict) -> str:
    """A filled Vega-Lite spec drawn as SVG, with no network access allowed."""
    return vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE, allowed_base_urls=[])


def image_tag(entry: dict) -> str:
    """An image plot as an <img> whose bytes are in the page."""
    path = Path(entry["url"])
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    revs = ", ".join(entry.get("revisions", []))
    return f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(revs)}">' \
           f"<figcaption>{html.escape(revs)}</figcaption></figure>"


def drawn(entry: dict) -> str:
    """One entry of a plot (a Vega-Lite spec, or an image of one revision) as HTML."""
    if entry["type"] == "vega":
        return svg(entry["content"])
    if entry["type"] == "image":
        return image_tag(entry)
    raise UserError(f"plot entry of type {entry['type']!r} cannot be drawn offline; "
                    "declare it with a Vega-Lite template or as an image")


def sections(plots: dict[str, list[dict]]) -> list[str]:
    """One <section> per plot, its title as a heading, its entries drawn in order."""
    return [f'<section id="plot-{i}">\n<h2>{html.escape(title)}</h2>\n' + "\n".join(map(drawn, entries))
            + "\n</section>" for i, (title, entries) in enumerate(plots.items())]


def offline_page(repo: Path, revs: Sequence[str] = ()) -> str:
    """The HTML page of every plot DVC declares in `repo`, for the workspace or against `revs`."""
    with tempfile.TemporaryDirectory() as images:
        shown = dvc_plots_json(repo, list(revs), Path(images))
        for error in shown.get("errors", []):
            print(f"warning: dvc plots: {error}", file=sys.stderr)
        if not shown.get("data"):
            raise UserError("DVC found no plot data; declare plots in dvc.yaml and run `dvc repro` first")
        body = "\n".join(sections(shown["data"]))
    title = f"Plots ({'dvc plots diff ' + ' '.join(revs) if revs else 'workspace'})"
    return PAGE.format(title=html.escape(title), sections=body)


def write_offline_page(repo: Path, out: Path, revs: Sequence[str] = ()) -> Path:
    page = offline_page(repo, revs)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="*", help="revisions to draw together, as `dvc plots diff REV...` takes "
                        "them (one: against the workspace); none: the workspace, as `dvc plots show`")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the page to write (default {DEFAULT_OUT})")
    args = parser.parse_args()
    print(f"wrote {write_offline_page(Path.cwd(), args.out, args.revs)}")


if __name__ == "__main__":
    cli.run(main)
