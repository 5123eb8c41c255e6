"""Train the face detector.

    python train.py                      # WIDER FACE in the official layout under data/WIDER
    python train.py --demo               # the bundled demo data (generated on first use)
    python train.py --preset real        # the recipe measured on real photos (config.py)
    python train.py --resume             # continue the latest run after a crash or Ctrl-C
    TF_CONFIG='{"cluster": ...}' python train.py --run-name R   # one of several machines (README)
    python train.py --weights checkpoints/RUN/model-0.81-e007.keras   # fine-tune from a checkpoint
    tensorboard --logdir logs

Every field of config.py is a flag (--grid-size 14, --no-augment, ...); the resolved
configuration is written beside the run's logs and checkpoints.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.cli import add_config_arguments, config_from_args, run_main, start_runtime
from common.errors import ConfigError
from config import DEMO_ROOT, PRESETS, Config, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true",
                        help=f"train on the bundled demo data in {DEMO_ROOT} (made if missing)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="start from a named recipe of config.py (flags still override)")
    parser.add_argument("--resume", action="store_true",
                        help="continue --run-name (default: the latest run) from its last epoch "
                             "(several machines: all of them, from the chief's checkpoint folder)")
    parser.add_argument("--weights", metavar="CKPT", help="start from a checkpoint's weights")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up lines (CUDA, absl), hidden otherwise")
    parser.add_argument("--format", dest="dataset_format", default=None,
                        help="alias of --dataset-format: auto, wider, labelme, yolo, coco, voc, retinaface")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.demo and args.preset not in (None, "demo"):
        raise ConfigError(f"--demo and --preset {args.preset}: give one")
    preset = "demo" if args.demo else args.preset
    base = None
    if preset:
        # A preset (--demo included) starts from --config FILE when one is given, else
        # from the defaults; the flags still override both.
        start = load_config(args.config) if args.config else Config()
        base = PRESETS[preset](start)
    config = config_from_args(args, base=base)
    start_runtime(config, verbose=args.verbose)
    if preset == "demo" and config.dataset == DEMO_ROOT:
        from data.synthetic import ensure_demo_dataset

        ensure_demo_dataset(DEMO_ROOT)

    from model.training import train

    result = train(config, resume=args.resume, weights=args.weights)
    print(f"run {result.paths.name}: {result.epochs_done} epochs in {result.minutes:.1f} min")
    if result.best_checkpoint:
        print(f"best {config.monitor} {result.best_score:.4f}: {result.best_checkpoint}")
    print(f"logs: tensorboard --logdir {config.log_dir}")


if __name__ == "__main__":
    run_main(main, flags=("resume", "weights"))
