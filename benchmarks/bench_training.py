"""Training throughput: the real generator against the same model fed from memory.

    python benchmarks/bench_training.py [--steps 30] [--alpha 0.35] [--input-size 224]

Trains the same network (no ImageNet weights) for --steps steps twice in one run: fed by
`FaceGridDataset` (augmentation on) and fed by the same batches held in memory as tensors.
Target (issue 3): the generator reaches at least 0.9 of the in-memory rate on 2 CPU cores.
Uses the demo data (generated into data/demo if missing); images/s exclude the first epoch's
warm-up (graph tracing).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from config import DEMO_ROOT, Config  # noqa: E402
from data.data_generator import FaceGridDataset  # noqa: E402
from data.synthetic import ensure_demo_dataset  # noqa: E402
from data.wider import load_wider_split  # noqa: E402
from model.loss import make_loss, make_loss_metrics  # noqa: E402
from model.network import create_model  # noqa: E402


class InMemory(keras.utils.PyDataset):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def timed_fit(model, data, steps):
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)  # trace, warm up
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--grid-size", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    ensure_demo_dataset(DEMO_ROOT)
    config = Config(dataset=DEMO_ROOT, alpha=args.alpha, input_size=args.input_size,
                    grid_size=args.grid_size, batch_size=args.batch_size,
                    backbone_weights="none", workers=args.workers)
    records = load_wider_split(DEMO_ROOT, "train").records
    generator = FaceGridDataset(records, config, training=True)
    memory = InMemory([generator[i] for i in range(min(len(generator), args.steps + 3))])

    model = create_model(config)
    model.compile(keras.optimizers.AdamW(1e-3), make_loss(config),
                  metrics=make_loss_metrics(config))
    images = args.steps * args.batch_size
    t_memory = timed_fit(model, memory, args.steps)
    t_generator = timed_fit(model, generator, args.steps)
    print(f"config: input {args.input_size}, grid {args.grid_size}, alpha {args.alpha}, "
          f"batch {args.batch_size}, workers {args.workers}, {args.steps} steps")
    print(f"in-memory tensors : {images / t_memory:7.1f} images/s")
    print(f"FaceGridDataset   : {images / t_generator:7.1f} images/s "
          f"({t_memory / t_generator:.2f} of in-memory; target >= 0.9)")


if __name__ == "__main__":
    main()
