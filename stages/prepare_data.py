"""prepare_data: a data set source (params `dataset`) → processed arrays and meta.json."""

import argparse

from lib.cli import run
from lib.config import load_params
from lib.processed import write_processed
from lib.sources import load_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data/processed")
    args = parser.parse_args()

    params = load_params()
    meta = write_processed(load_source(params.dataset, params.seed), params.dataset, args.out)
    print(f"{meta['source']} data set: classes {meta['classes']}, {meta['channels']} channel(s), "
          f"{meta['image_size']} px; counts {meta['counts']}; test split {meta['test_split']}")


if __name__ == "__main__":
    run(main)
