"""Export a checkpoint as a TensorFlow SavedModel, a TFLite file (float32, float16 or
int8) or an ONNX file.

    python export.py --weights checkpoints/run/model-0.61.keras --format tflite
    python export.py --format tflite --float16 --output face_fp16.tflite   # best checkpoint
    python export.py --weights model-0.61.keras --format tflite --int8 --calibration-images 200
    python export.py --weights model-0.61.keras --format onnx
    python export.py --weights model-0.61.keras --format saved_model
    python export.py --weights model-0.61.keras --format tflite --float16 --boxes-only
    python export.py --weights model-0.61.keras --format tflite --float16 --input-size 384 --input-height 256

--int8 quantises weights and activations to 8 bits, calibrated on --calibration-images
training photos: those of the run's config.json beside the checkpoint (the dataset it was
trained on), or of --dataset.

--boxes-only exports a landmark model's box detector alone (`model.network.without_landmarks`:
the same layers and weights without the landmark heads, so the same boxes and scores, at a
box-only network's cost; its contract says it has no landmarks). --threshold stores another
score threshold in the export (the default of detect.py for it) than the checkpoint's.
--input-size S exports the trained network for an S x S input (any multiple of 32: the
network is convolutional, `model.network.at_input_size`), and --input-height H for the
band of H rows of that square which landscape photos fill (`data.grid.GridSpec.input_height`:
the cost of S x H pixels, taller photos letterboxed smaller into it); both read the run's
config.json beside the checkpoint.
Without --weights the best model-*.keras under --checkpoint-dir is exported. Without
--output the export goes beside the checkpoint: model-0.61.tflite, model-0.61_fp16.tflite
or model-0.61_saved_model/. Run the result with `python detect.py --weights FILE`.
An --output that is the checkpoint itself, or a SavedModel folder holding it, is refused
before anything is written: the export would replace the checkpoint. See model/export.py.
The checkpoint's preprocessing contract (letterbox or stretch, the validated score
threshold; model/contract.py) is stored in every export, so `detect.py --weights FILE`
needs no preprocessing flag; --letterbox / --no-letterbox serve only checkpoints saved
without one, and one that contradicts it is an error.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.cli import add_config_arguments, config_from_args, overwritten_input, run_main, start_runtime
from data.grid import levels_text, output_has_landmarks
from model.formats import EXPORT_FORMATS
from common.errors import ConfigError


def check_output_folder(output: str) -> None:
    """ConfigError when the folder `output` goes in cannot be made: the nearest part of its
    path that exists is a file (`--output /etc/passwd/x.tflite`), which os.makedirs would
    report as a bare "File exists"."""
    path = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ConfigError(f"--output {output}: {path} is a file, not a folder; "
                          f"choose a path in a folder")


def check_output_keeps_checkpoint(output: str, weights: str, fmt: str) -> None:
    """ConfigError naming both when writing `output` would replace or delete `weights`."""
    if overwritten_input([output], [weights]) is not None:
        raise ConfigError(f"--output {output}: is the checkpoint being exported ({weights}); "
                          "not writing over it")
    # A SavedModel export replaces the whole folder: a checkpoint inside it would go too.
    folder, checkpoint = os.path.realpath(output), os.path.realpath(weights)
    if fmt == "saved_model" and os.path.isdir(folder) \
            and os.path.commonpath([folder, checkpoint]) == folder:
        raise ConfigError(f"--output {output}: holds the checkpoint being exported "
                          f"({weights}); replacing the folder would delete it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export.py",
        description="Export a .keras checkpoint as a SavedModel folder, a TFLite or an ONNX file.",
    )
    parser.add_argument("--weights", metavar="FILE",
                        help="a .keras checkpoint, or a folder: its best model-*.keras "
                        "(default: the best under --checkpoint-dir)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up lines (CUDA, absl), hidden otherwise")
    parser.add_argument("--float16", action="store_true",
                        help="TFLite with float16 weights (half the size)")
    parser.add_argument("--int8", action="store_true",
                        help="TFLite with int8 weights and activations (calibrated)")
    parser.add_argument("--calibration-images", type=int, default=200, metavar="N",
                        help="--int8: training images that set the value ranges (default 200)")
    parser.add_argument("--threshold", type=float, default=None,
                        metavar="SCORE", help="the score threshold the export carries "
                        "(default: the checkpoint's, chosen on validation)")
    parser.add_argument("--boxes-only", action="store_true",
                        help="a landmark model's boxes alone, without its landmark heads")
    # dest not input_size: config_from_args would take it for the training's Config field.
    parser.add_argument("--input-size", dest="export_size", type=int, default=None, metavar="S",
                        help="export for an S x S input (default: the checkpoint's)")
    parser.add_argument("--input-height", dest="export_height", type=int, default=None,
                        metavar="H",
                        help="export for the band of H rows of the square input, which "
                        "landscape photos fill (default: the whole square)")
    parser.add_argument("--output", metavar="PATH",
                        help="file (tflite, onnx) or folder (saved_model) to write "
                        "(default: beside the checkpoint)")
    add_config_arguments(parser, only=("checkpoint_dir", "dataset", "dataset_format",
                                       "face_labels", "letterbox", "seed"))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    start_runtime(config, verbose=args.verbose)
    from common.errors import CheckpointError
    from model.detector import FaceDetector, resolve_weights
    from model.export import default_export_path, export_model

    if args.int8 and args.format != "tflite":
        raise ConfigError("--int8 applies to --format tflite only")
    if args.int8 and args.calibration_images <= 0:
        raise ConfigError(f"--calibration-images {args.calibration_images}: must be positive")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold:g}: must be in [0, 1]")
    weights = resolve_weights(args.weights, config.checkpoint_dir)
    if not weights.endswith(".keras"):
        raise CheckpointError(f"{weights}: export reads .keras checkpoints only")
    output = args.output or default_export_path(weights, args.format, args.float16, args.int8)
    check_output_folder(output)  # both before the slow load
    check_output_keeps_checkpoint(output, weights, args.format)
    # The checkpoint's contract (letterbox, threshold) goes into the export; --letterbox
    # serves only checkpoints saved without one. Refuses non-detector models.
    detector = FaceDetector.load(weights, letterbox=args.letterbox)
    network, contract = detector.model, detector.contract
    if args.export_size is not None or args.export_height is not None:
        network, contract = _resized(args, weights, network, contract)
    calibration = None
    if args.int8:
        calibration = _calibration(args, weights, contract.grid)
    threshold = detector.score_threshold
    if args.threshold is not None:
        threshold = args.threshold
        contract = contract.replace(score_threshold=threshold)
    if args.boxes_only:
        from model.network import without_landmarks

        network = without_landmarks(network)
        contract = contract.replace(grid=contract.grid.replace(landmarks=False))
    export_model(network, args.format, output, args.float16, int8_inputs=calibration,
                 contract=contract)
    precision = " float16" if args.float16 else f" int8 ({len(calibration)} calibration " \
        "images)" if args.int8 else ""
    rows, size, _ = contract.grid.input_shape
    band = f" (rows {rows} of {size}x{size})" if contract.grid.input_height else ""
    print(f"{output}: {args.format}{precision}, input "
          f"{size}x{rows}{band}, grid {levels_text(contract.grid.grid_sizes)}"
          f", {'letterbox' if contract.grid.letterbox else 'stretch'}, "
          f"score threshold {threshold:g}{', landmarks' if contract.grid.landmarks else ''}")
    return 0


def _resized(args, weights: str, network, contract):
    """The network and contract for --input-size / --input-height: the same weights on
    another input (`model.network.at_input_size`), built from the run's config.json."""
    from config import run_config_beside
    from model.network import at_input_size

    config = run_config_beside(weights)
    if config is None:
        raise ConfigError(f"--input-size / --input-height: need the run's config.json beside "
                          f"{weights} (the network's widths), not found")
    size = contract.grid.input_size if args.export_size is None else args.export_size
    height = args.export_height or 0
    grid = contract.grid.at_input_size(size, height)  # ConfigError for a bad size or height
    # The landmark heads too if the checkpoint has them (--boxes-only drops them after).
    config = config.replace(landmarks=output_has_landmarks(network.output_shape[-1]))
    return at_input_size(network, config, size, height), contract.replace(grid=grid)


def _calibration(args, weights: str, grid):
    """Calibration inputs from the training photos of the run (or of --dataset), prepared
    as detection prepares images for `grid` (its input size, band and letterbox)."""
    from config import run_config_beside
    from data.datasets import training_records
    from model.export import calibration_inputs

    base = None if args.config else run_config_beside(weights)
    config = config_from_args(args, base=base)
    records = training_records(config)
    return calibration_inputs([r.path for r in records], grid.input_size, grid.letterbox,
                              args.calibration_images, config.seed, grid.input_height)


if __name__ == "__main__":
    run_main(main, flags=("format", "float16", "int8", "calibration_images", "output",
                          "boxes_only", "input_size", "input_height"))
