"""Write any supported dataset out in the official WIDER FACE layout.

    python tools/convert.py --input my_faces --out data/my_wider [--format auto] [--split train]
    python tools/convert.py --input my_val_faces --out data/my_wider --split val

writes OUT/WIDER_{split}/images/<event>/<file> (hard links to the input images; copies
with --copy, or across file systems) and OUT/wider_face_split/wider_face_{split}_bbx_gt.txt,
so every WIDER tool reads it. The input is never written: --out may not lie inside the
input, nor the input inside --out. An existing, non-empty split is left alone unless
--overwrite. Event names and details: data/convert.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# A script in tools/: the repository root is where its packages are.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.cli import path_argument, run_main
from data.convert import convert_to_wider, lies_inside
from data.datasets import FORMATS, load_records
from common.errors import DatasetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Write a labelme / YOLO / COCO / VOC / RetinaFace (or WIDER) dataset in the official WIDER "
                    "FACE layout.",
    )
    parser.add_argument("--input", type=path_argument, required=True,
                        help="dataset folder (or COCO .json) to read")
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                        help="input format (default: detect)")
    parser.add_argument("--out", type=path_argument, required=True, help="WIDER root to write")
    parser.add_argument("--split", default="train", choices=("train", "val"),
                        help="split written (and read, when the input has splits)")
    parser.add_argument("--labels", default="",
                        help="labels / classes / categories read as faces (comma list)")
    parser.add_argument("--copy", action="store_true", help="copy images instead of hard links")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing, non-empty split")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if lies_inside(os.path.realpath(args.out), os.path.realpath(args.input)):
        raise DatasetError(f"--out {args.out}: lies inside the input {args.input}; choose another")
    records = load_records(args.input, args.split, args.format, skip_missing=True,
                           labels=args.labels or None, holdout=False)
    result = convert_to_wider(records, args.out, args.split, args.overwrite, args.copy)
    faces = sum(len(r.boxes) for r in result.records)
    ignored = sum(int(r.ignore.sum()) for r in result.records)
    print(f"wrote {len(result.records)} images, {faces} faces ({ignored} ignored) to "
          f"{result.images_dir} ({result.linked} hard links, {result.copied} copies)")
    print(f"annotations: {result.annotation_path}")
    return 0


if __name__ == "__main__":
    run_main(main, flags=("split",))
