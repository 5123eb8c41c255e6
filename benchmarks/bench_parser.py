"""Time the WIDER FACE annotation reader on the full official val file (best of N).

    python benchmarks/bench_parser.py [ANNOTATION_FILE] [--repeats 5]
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data.wider import read_wider_annotations  # noqa: E402

DEFAULT_FILE = os.path.join(os.path.dirname(REPO), "shared", "wider_val_annotations",
                            "wider_face_val_bbx_gt.txt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=DEFAULT_FILE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = read_wider_annotations(args.path, "images")
        times.append(time.perf_counter() - start)
    print(f"{args.path}: {result.num_images} images, {result.num_listed} face lines "
          f"({result.dropped_boxes} dropped, {result.num_ignored} invalid)")
    print(f"read_wider_annotations: best {min(times) * 1000:.1f} ms, "
          f"median {sorted(times)[len(times) // 2] * 1000:.1f} ms of {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
