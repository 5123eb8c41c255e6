"""Count a dataset's images, faces, face sizes in grid cells and grid collisions.

    python tools/stats.py --dataset my_faces [--format auto] [--split train]
                    [--input-size 224 --grid-size 7 --min-face-size 4 ...]

Faces are measured as training sees them without augmentation, at the configured input
and grid size; see data/stats.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# A script in tools/: the repository root is where its packages are.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.cli import add_config_arguments, config_from_args, run_main
from data.datasets import FORMATS
from data.stats import dataset_stats, format_stats, split_records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stats.py",
        description="Count images, faces, face sizes in grid cells and grid collisions.",
    )
    parser.add_argument("--format", dest="dataset_format", default=None,
                        choices=("auto",) + FORMATS, help="same as --dataset-format")
    parser.add_argument("--split", default="train", choices=("train", "val"),
                        help="split of sources that have splits (a folder without is read whole)")
    add_config_arguments(parser, only=(
        "dataset", "dataset_format", "face_labels", "input_size", "grid_size", "letterbox",
        "min_face_size",
    ))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    records, left_out = split_records(config, args.split)
    print(f"dataset {config.dataset} ({args.split})")
    print(format_stats(dataset_stats(records, config, left_out=left_out)))
    return 0


if __name__ == "__main__":
    run_main(main, flags=("split",))
