"""Time the official WIDER FACE protocol (`wider_ap`) on the shared ground truth.

    python benchmarks/bench_evaluate.py [--repeats 3] [--detections 50]

Cases, for the 200-image subset and the full 3,226-image val set:
- GT as predictions (score 1), loaded .mat excluded: the protocol's own cost;
- a detector-like load: the GT boxes jittered plus random boxes, `--detections` per image
  in all (what a model writes at the low evaluation threshold);
- the submission files: writing one file per image, then `wider_ap` reading the folder.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data.boxes import xywh_to_xyxy, xyxy_to_xywh  # noqa: E402
from model.predictions import write_predictions  # noqa: E402
from model.wider_protocol import SETTINGS, load_wider_gt, wider_ap  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared")
GT_DIRS = {
    "subset200": os.path.join(SHARED, "wider_val_subset200", "eval_tools", "ground_truth"),
    "full val": os.path.join(SHARED, "wider_val_annotations"),
}


def detector_like(gt, per_image: int, seed: int = 0) -> dict:
    """Jittered GT boxes plus random ones, `per_image` boxes per image, random scores
    (the jitter and the random boxes drawn on x y w h; the predictions are corners)."""
    rng = np.random.default_rng(seed)
    preds = {}
    for name, boxes in zip(gt.names, gt.boxes):
        xywh = xyxy_to_xywh(boxes[: per_image], np.float64)
        found = xywh + rng.normal(0, 0.1, xywh.shape) * 10
        # A jittered tiny face may get a negative size, which no detector writes (and the
        # submission reader refuses, naming the line): keep it at 0.
        found[:, 2:] = np.maximum(found[:, 2:], 0.0)
        extra = max(0, per_image - len(found))
        noise = np.column_stack([rng.uniform(0, 900, (extra, 2)), rng.uniform(5, 80, (extra, 2))])
        preds[name] = (xywh_to_xyxy(np.concatenate([found, noise]), np.float64),
                       rng.uniform(0.02, 1.0, len(found) + extra))
    return preds


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times), sorted(times)[len(times) // 2]


def fmt(result: dict) -> str:
    return " / ".join(f"{result[s]:.4f}" for s in SETTINGS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detections", type=int, default=50, help="boxes per image, detector-like case")
    args = parser.parse_args()
    for label, gt_dir in GT_DIRS.items():
        if not os.path.isdir(gt_dir):
            print(f"{label}: {gt_dir} not present, skipped")
            continue
        gt, load_best, _ = timed(lambda: load_wider_gt(gt_dir), 1)
        faces = sum(len(b) for b in gt.boxes)
        print(f"{label}: {len(gt.names)} images, {faces} faces; load_wider_gt {load_best:.2f} s")

        truth = {n: (b, np.ones(len(b))) for n, b in zip(gt.names, gt.boxes)}
        result, best, median = timed(lambda: wider_ap(truth, gt), args.repeats)
        print(f"  GT as predictions: easy/medium/hard {fmt(result)}; "
              f"wider_ap best {best:.2f} s, median {median:.2f} s")

        noisy = detector_like(gt, args.detections)
        result, best, median = timed(lambda: wider_ap(noisy, gt), args.repeats)
        print(f"  detector-like ({args.detections} boxes/image): {fmt(result)}; "
              f"wider_ap best {best:.2f} s, median {median:.2f} s")

        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for name, (boxes, scores) in noisy.items():
                write_predictions(folder, name, boxes, scores)
            written = time.perf_counter() - start
            result, best, _ = timed(lambda: wider_ap(folder, gt), 1)
            print(f"  submission files: write (one by one) {written:.2f} s, read + wider_ap {best:.2f} s "
                  f"({fmt(result)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
