"""Training throughput: the real generator against the same model fed from memory.

    python benchmarks/bench_training.py [--steps 40] [--workers 2] [--input-size 224]

Trains one network (the demo preset's: 224 px, 14x14 grid, alpha 0.35, head 64, no
ImageNet weights, unless flags say otherwise) with
`Model.fit` fed three ways, in this order, in one run: the same batches held in memory as
NumPy arrays, then `FaceGridDataset` (augmentation on, as the demo trains), then the
in-memory arrays again, which brackets the machine's drift during the run. Target
(issue 3): the generator reaches at least 0.9 of the in-memory rate on 2 CPU cores.
Uses the demo data (generated into data/demo if missing); each timing follows a short
warm-up fit, so graph tracing is not counted.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from config import DEMO_ROOT, Config, demo_config  # noqa: E402
from data.data_generator import FaceGridDataset  # noqa: E402
from data.synthetic import ensure_demo_dataset  # noqa: E402
from data.wider import load_wider_split  # noqa: E402
from model.loss import make_loss, make_loss_metrics  # noqa: E402
from model.network import create_model  # noqa: E402

WARMUP_STEPS = 3


def timed_fit(model, steps, batch_size, data=None, arrays=None):
    """Seconds for `steps` training steps, after a warm-up fit of the same feed."""
    def fit(n):
        if arrays is not None:
            x, y = arrays
            model.fit(x[: n * batch_size], y[: n * batch_size], batch_size=batch_size,
                      epochs=1, verbose=0, shuffle=False)
        else:
            model.fit(data, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False)

    fit(WARMUP_STEPS)
    start = time.perf_counter()
    fit(steps)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    preset = demo_config(Config())
    parser.add_argument("--input-size", type=int, default=preset.input_size)
    parser.add_argument("--grid-size", type=int, default=preset.grid_size)
    parser.add_argument("--batch-size", type=int, default=preset.batch_size)
    parser.add_argument("--workers", type=int, default=preset.workers, help="generator threads")
    args = parser.parse_args()

    ensure_demo_dataset(DEMO_ROOT)
    config = preset.replace(
        input_size=args.input_size, grid_size=args.grid_size, batch_size=args.batch_size,
        workers=args.workers, augment=True)
    records = load_wider_split(DEMO_ROOT, "train").records
    generator = FaceGridDataset(records, config, training=True)
    if len(generator) < args.steps + WARMUP_STEPS:
        parser.error(f"--steps {args.steps}: the demo set has {len(generator)} batches")
    batches = [generator[i] for i in range(args.steps + WARMUP_STEPS)]
    arrays = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))

    model = create_model(config)
    model.compile(keras.optimizers.AdamW(1e-3), make_loss(config),
                  metrics=make_loss_metrics(config))
    images = args.steps * args.batch_size
    t_before = timed_fit(model, args.steps, args.batch_size, arrays=arrays)
    t_generator = timed_fit(model, args.steps, args.batch_size, data=generator)
    t_after = timed_fit(model, args.steps, args.batch_size, arrays=arrays)
    t_memory = (t_before + t_after) / 2
    print(f"config: input {args.input_size}, grid {args.grid_size}, alpha {config.alpha}, "
          f"head {config.head_channels}, batch {args.batch_size}, workers {args.workers}, "
          f"{args.steps} steps per timing")
    print(f"in-memory arrays  : {images / t_before:7.1f} images/s before, "
          f"{images / t_after:.1f} after")
    print(f"FaceGridDataset   : {images / t_generator:7.1f} images/s "
          f"({t_memory / t_generator:.2f} of in-memory; target >= 0.9)")


if __name__ == "__main__":
    main()
