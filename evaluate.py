"""Score a checkpoint, or any detector's prediction folder, on WIDER FACE.

    python evaluate.py --weights checkpoints/<run>/ --dataset data/WIDER [--out predictions/]
    python evaluate.py --predictions other_detector/ --gt data/WIDER/eval_tools/ground_truth

With the official .mat files (found under --dataset, or the folder --gt names) the score
is the official protocol's easy / medium / hard AP (`model.wider_protocol`); with a
wider_face_*_bbx_gt.txt as --gt, plain AP at IoU 0.5 (`model.metrics`). --weights runs
the model over the split first (`model.evaluate.evaluate_model`).
"""

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from typing import Optional, Sequence

from common.cli import add_config_arguments, config_from_args, path_argument, run_main, start_runtime
from common.errors import ConfigError, DatasetError
from common.files import atomic_write_text
from model.metrics import IOU_THRESHOLD, average_precision
from model.predictions import detections_for, prediction_key, read_predictions
from model.wider_protocol import GT_FILE, SETTINGS, find_gt_dir, load_wider_gt, wider_ap


def _records_from_gt_file(path: str) -> list:
    from data.wider import read_wider_annotations

    return read_wider_annotations(path, os.path.dirname(os.path.abspath(path))).records


def _print_result(result: dict) -> None:
    if "easy" in result:
        for setting in SETTINGS:
            print(f"{setting:<6} AP {result[setting]:.4f}")
    else:
        print(f"AP {result['ap']:.4f} (IoU {IOU_THRESHOLD}, {result['images']} images, "
              f"{result['faces']} valid faces)")


@contextlib.contextmanager
def _warnings_as_lines(prog: str):
    """Print the warnings raised inside (skipped prediction files) as one stderr line
    each, `<prog>: warning: <message>`, instead of Python's two-line form."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                print(f"{prog}: warning: {warning.message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score a checkpoint on a WIDER-layout split, or any prediction folder in "
        "the official layout, with the official WIDER FACE protocol (easy/medium/hard AP) "
        "when its .mat files are there, else with plain AP at IoU 0.5.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up lines (CUDA, absl), hidden otherwise")
    source.add_argument("--weights", metavar="CKPT",
                        help="a .keras checkpoint, .tflite file or SavedModel folder, or a "
                        "folder: its best model-*.keras")
    source.add_argument("--predictions", metavar="DIR",
                        help="a prediction folder in the official layout <event>/<image>.txt")
    parser.add_argument("--split", default="val", choices=("val", "train"),
                        help="split of --dataset to run --weights on (default: val)")
    parser.add_argument("--gt", metavar="PATH",
                        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat"
                        ", or a wider_face_*_bbx_gt.txt for plain AP (default with --weights: "
                        "found under --dataset)")
    parser.add_argument("--out", type=path_argument, metavar="DIR",
                        help="with --weights: write the predictions here in the official layout")
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    add_config_arguments(parser, only=(
        "dataset", "letterbox", "batch_size", "nms_iou", "max_detections", "workers",
        "eval_score_threshold", "skip_missing_images", "max_image_pixels",
    ))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, evaluate, print the APs (and write --json); see build_parser."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    started = time.perf_counter()
    summary = {}
    gt_path = args.gt
    if args.weights:
        start_runtime(config, verbose=args.verbose)
        from data.wider import load_wider_split
        from model.detector import FaceDetector, resolve_weights
        from model.evaluate import evaluate_model

        weights = resolve_weights(args.weights, config.checkpoint_dir)
        # The model file says how its images are prepared; --letterbox only when given.
        detector = FaceDetector.load(weights, letterbox=args.letterbox)
        records = load_wider_split(config.dataset, args.split, config.skip_missing_images).records
        predictions = evaluate_model(detector, records, config, args.out)
        if gt_path is None and args.split == "val":
            gt_path = find_gt_dir(config.dataset)
        summary.update(weights=weights, dataset=config.dataset, split=args.split)
        if args.out:
            summary["predictions"] = args.out
    else:
        if gt_path is None:
            raise ConfigError("--predictions needs --gt (the .mat folder or a bbx_gt.txt file)")
        if not os.path.isdir(args.predictions):
            raise DatasetError(f"{args.predictions}: predictions folder not found")
        # Read below, once the ground truth names the images: other .txt files are skipped.
        predictions = args.predictions
        records = None
        summary["predictions"] = args.predictions

    if gt_path is not None and os.path.isdir(gt_path):
        mat_dir = find_gt_dir(gt_path)
        if mat_dir is None:
            raise DatasetError(
                f"{gt_path}: no {GT_FILE} with wider_{{easy,medium,hard}}_val.mat here; "
                "pass a wider_face_*_bbx_gt.txt file as --gt for plain AP"
            )
        gt = load_wider_gt(mat_dir)
        # Images left out with --skip-missing-images have no predictions, by request.
        with _warnings_as_lines(build_parser().prog):
            result = wider_ap(predictions, gt, allow_missing=config.skip_missing_images,
                              progress=True)
        summary.update(protocol="wider", gt=mat_dir, images=len(gt.names), **result)
    else:
        if gt_path is not None:
            if not os.path.isfile(gt_path):
                raise DatasetError(f"{gt_path}: ground truth not found")
            records = _records_from_gt_file(gt_path)
            summary["gt"] = gt_path
        names = [prediction_key(r.name) for r in records]
        if isinstance(predictions, str):
            with _warnings_as_lines(build_parser().prog):
                predictions = read_predictions(predictions, progress=True, names=names)
        dets = detections_for(names, predictions, False, summary.get("predictions", "predictions"))
        ap = average_precision(dets, records)
        faces = sum(r.num_faces for r in records)
        summary.update(protocol="plain", ap=ap, images=len(records), faces=faces)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    _print_result(summary)
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main, flags=("weights", "predictions", "gt", "out", "json", "split"))
