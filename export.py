"""Export a checkpoint as a TensorFlow SavedModel or a TFLite file (float32 or float16).

    python export.py --weights checkpoints/run/model-0.61.keras --format tflite
    python export.py --format tflite --float16 --output face_fp16.tflite   # best checkpoint
    python export.py --weights model-0.61.keras --format saved_model

Without --weights the best model-*.keras under --checkpoint-dir is exported. Without
--output the export goes beside the checkpoint: model-0.61.tflite, model-0.61_fp16.tflite
or model-0.61_saved_model/. Run the result with `python detect.py --weights FILE`.
See model/export.py.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cli import add_config_arguments, config_from_args, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export.py",
        description="Export a .keras checkpoint as a SavedModel folder or a TFLite file.",
    )
    parser.add_argument("--weights", metavar="FILE",
                        help="a .keras checkpoint, or a folder: its best model-*.keras "
                        "(default: the best under --checkpoint-dir)")
    parser.add_argument("--format", required=True, choices=("saved_model", "tflite"))
    parser.add_argument("--float16", action="store_true",
                        help="TFLite with float16 weights (half the size)")
    parser.add_argument("--output", metavar="PATH",
                        help="file (tflite) or folder (saved_model) to write "
                        "(default: beside the checkpoint)")
    add_config_arguments(parser, only=("checkpoint_dir",))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from errors import CheckpointError
    from model.checkpoints import load_checkpoint
    from model.detector import FaceDetector, resolve_weights
    from model.export import default_export_path, export_model

    weights = resolve_weights(args.weights, config.checkpoint_dir)
    if not weights.endswith(".keras"):
        raise CheckpointError(f"{weights}: export reads .keras checkpoints only")
    model = load_checkpoint(weights, compile=False)
    detector = FaceDetector.from_keras(model, weights)  # refuses non-detector models
    output = args.output or default_export_path(weights, args.format, args.float16)
    export_model(model, args.format, output, args.float16)
    print(f"{output}: {args.format}{' float16' if args.float16 else ''}, input "
          f"{detector.input_size}x{detector.input_size}, grid {detector.grid_size}x"
          f"{detector.grid_size}")
    return 0


if __name__ == "__main__":
    run_main(main)
