"""bundle: the deployable folder — INT8 model, labels, preprocessing, a standalone runner, its requirements,
a README and the model card of the run."""

import argparse
from pathlib import Path

from lib.bundle import load_metrics, write_bundle
from lib.cli import run
from lib.config import load_params
from lib.io import read_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meta", default="data/processed/meta.json")
    parser.add_argument("--models", default="models")
    parser.add_argument("--metrics", default="metrics", help="the folder of every stage's metrics JSON")
    parser.add_argument("--requirements", default="requirements.txt", help="the runner's pins come from here")
    parser.add_argument("--out", default="bundle")
    args = parser.parse_args()

    params = load_params()
    write_bundle(Path(args.out), Path(args.models), read_json(args.meta), load_metrics(Path(args.metrics)),
                 Path(args.requirements), params.student_width, params.student_last_stride)
    print(f"bundle: {args.out}/ (model_int8.tflite, predict.py, MODEL_CARD.md, model_card.html, …)")


if __name__ == "__main__":
    run(main)
