"""Training step time under Keras' precision policies: is mixed precision worth it here?

    python benchmarks/bench_precision.py                       # small preset + landmarks, batch 16
    python benchmarks/bench_precision.py --policies float32,mixed_bfloat16 --steps 20

Each policy builds the preset's network afresh (no ImageNet weights: speed only), trains a
few warm-up steps on one fixed random batch, then times `--steps` more; a step's time is
the median over them. What `Config.mixed_precision` turns on is `mixed_float16`; on CPUs
with bfloat16 units (AVX512_BF16, AMX) `mixed_bfloat16` is the one that could pay.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def step_seconds(config, policy: str, batch_size: int, steps: int, warmup: int) -> float:
    """Median seconds per training step of `config`'s network under `policy`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from model.network import create_model

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = create_model(config, backbone_weights="none")
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch_size, config.input_size, config.input_size, 3),
                              dtype=np.uint8)
        outputs = keras.tree.flatten(model(images[:1]))
        targets = tuple(rng.random((batch_size, *o.shape[1:]), dtype=np.float32)
                        for o in outputs)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="mse")
        data = tf.data.Dataset.from_tensors(
            (images, targets if len(targets) > 1 else targets[0])).repeat()
        model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)  # traces the step
        times = []
        timer = keras.callbacks.LambdaCallback(
            on_train_batch_begin=lambda batch, logs: times.append(time.perf_counter()),
            on_train_end=lambda logs: times.append(time.perf_counter()))
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
                  callbacks=[timer])
        return float(np.median(np.diff(times)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(argv=None) -> None:
    from common.cli import start_runtime
    from config import PRESETS, Config

    parser = argparse.ArgumentParser(prog=os.path.basename(__file__),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS),
                        help="config.py preset (default: small)")
    parser.add_argument("--no-landmarks", action="store_true", help="the network without landmarks")
    parser.add_argument("--policies", default="float32,mixed_bfloat16,mixed_float16",
                        help="comma-separated Keras dtype policies")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per policy")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    args = parser.parse_args(argv)
    import keras

    policies = args.policies.split(",")
    for policy in policies:  # a wrong name fails here in one line, before any model is built
        try:
            keras.mixed_precision.DTypePolicy(policy)
        except ValueError:
            parser.error(f"--policies: {policy!r} is not a Keras dtype policy "
                         "(float32, mixed_float16, mixed_bfloat16, ...)")
    config = PRESETS[args.preset](Config()).replace(landmarks=not args.no_landmarks)
    start_runtime(config)
    print(f"preset {args.preset}{'' if args.no_landmarks else ' + landmarks'}, "
          f"{config.input_size} px, batch {args.batch_size}, {args.steps} timed steps")
    print("| policy | s / step (median) |\n| --- | --- |")
    for policy in policies:
        seconds = step_seconds(config, policy, args.batch_size, args.steps, args.warmup)
        print(f"| {policy} | {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
