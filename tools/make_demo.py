"""Write the demo face dataset (drawn faces) in the official WIDER FACE layout.

    python tools/make_demo.py                                  # the bundled set into data/demo
    python tools/make_demo.py --root /tmp/demo800 --train 800 --val 200 --seed 0 [--quiet]

The same seed gives byte-identical files; `python train.py --demo` makes the default set
on first use. A non-empty folder that is not a demo set is refused unless --overwrite (the
generator replaces demo-named images); --seed takes train.py's range. What the images hold:
data/synthetic.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# A script in tools/: the repository root is where its packages are.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.cli import path_argument, run_main
from config import DEMO_ROOT
from data.synthetic import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, SPLITS, make_demo_dataset
from data.wider import wider_split_paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make_demo.py",
        description="Write the demo face dataset (drawn faces) in the WIDER FACE layout.",
    )
    parser.add_argument("--root", type=path_argument, default=DEMO_ROOT,
                        help=f"output folder (default: {DEMO_ROOT})")
    parser.add_argument("--train", type=int, default=DEMO_TRAIN_IMAGES,
                        help=f"training images (default: {DEMO_TRAIN_IMAGES})")
    parser.add_argument("--val", type=int, default=DEMO_VAL_IMAGES,
                        help=f"validation images (default: {DEMO_VAL_IMAGES})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder that is not a demo set (its "
                             "demo-named images are replaced or deleted)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    counts = make_demo_dataset(args.root, args.train, args.val, args.seed,
                               progress=not args.quiet, overwrite=args.overwrite)
    for split in SPLITS:
        c = counts[split]
        print(f"{split}: {c['images']} images, {c['faces']} faces ({c['invalid']} invalid) "
              f"-> {wider_split_paths(args.root, split)[0]}")
    print(f"annotations: {os.path.dirname(wider_split_paths(args.root, 'train')[1])}")
    return 0


if __name__ == "__main__":
    # make_demo_dataset names num_train / num_val, which are --train / --val here: left
    # as they are (seed is a Config field, shown as --seed).
    run_main(main, flags=("overwrite",))
