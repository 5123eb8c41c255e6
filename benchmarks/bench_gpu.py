"""GPU figures in one short run: training, data pipeline and detection rates, one table.

    python benchmarks/bench_gpu.py [--steps 30] [--out gpu.json]   # on a GPU: under 10 min
    python benchmarks/bench_gpu.py --smoke                          # any CPU: the code path

Measures, in this order, on whatever device TensorFlow places the work on (the table names
it):
- training images/s of the default configuration (`Config()`: 224 px, grid 7, alpha 0.75)
  and of `--preset real` (320 px, grid 40, alpha 1.0, neighbour cells), at batch 16 and
  64, in float32 and with `--mixed-precision` (mixed_float16). The batches are made once
  and held in memory (random pixels, targets encoded from random faces by
  `data.grid.encode_grid`), so the figure is the model's step alone; the backbone starts
  from random weights (`backbone_weights="none"`: weight values do not change the speed,
  and ImageNet files need not be present);
- data pipeline images/s: `FaceGridDataset` with augmentation at the real preset's input
  size, iterated as `Model.fit` iterates it (Keras' PyDataset adapter), with 8 and 16
  worker threads, on the demo data (made in data/demo if missing) or `--dataset`;
- detection ms per image (batch of one, median) of the real preset's network as Keras,
  TFLite float32 and ONNX, each through `model.detector.FaceDetector`.
`--smoke` runs each kind of row at toy sizes (input 64, batch 2, 2 steps, 2 workers;
training rows for the real preset alone and in mixed_float16 alone, as the default preset's
and float32's go through the same code, which the training tests run) so the test suite
checks the script on a CPU in about a minute (tracing each training step takes about 20 s
there); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from config import DEMO_ROOT, Config, real_config  # noqa: E402
from data.grid import encode_grid  # noqa: E402

WARMUP_STEPS = 2


def device_name() -> str:
    """The accelerator TensorFlow uses, in words (or the CPU)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{len(gpus)} x {details.get('device_name', gpus[0].name)}"


def presets(smoke: bool) -> dict:
    """name -> Config of the two configurations timed (random backbone weights)."""
    named = {"default": Config(), "real": real_config(Config())}
    # Smoke: the smallest network that still runs every layer type (seconds per row).
    toy = dict(input_size=64, grid_size=8, alpha=0.35, head_channels=16) if smoke else {}
    return {name: c.replace(backbone_weights="none", **toy) for name, c in named.items()}


def random_batch(config: Config, batch_size: int, seed: int = 0):
    """uint8 images (B, S, S, 3) and grid targets (B, G, G, 5) of 1-8 random faces each."""
    rng = np.random.default_rng(seed)
    size = config.input_size
    images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    targets = []
    for _ in range(batch_size):
        n = int(rng.integers(1, 9))
        xy = rng.uniform(0, size * 0.8, (n, 2))
        wh = rng.uniform(size * 0.03, size * 0.2, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        targets.append(encode_grid(boxes, np.zeros(n, bool), size, config.grid_size,
                                   neighbours=config.neighbour_cells,
                                   centre_radius=config.centre_radius).grid)
    return images, np.stack(targets)


def training_rate(config: Config, batch_size: int, mixed: bool, steps: int) -> float:
    """Training images/s of `config`'s network at `batch_size` (in-memory batches)."""
    from model.network import create_model
    from model.training import _compile

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        model = create_model(config)
        _compile(model, config, config.learning_rate)
        # Keras builds an unbuilt optimizer inside the first traced step, which then traces
        # twice (variables made while tracing): built here, the step is traced once.
        model.optimizer.build(model.trainable_variables)
        x, y = random_batch(config, batch_size)
        for _ in range(WARMUP_STEPS):  # tracing and autotuning are not counted
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(x, y)
        np.asarray(loss)  # the last step has finished on the device
        return steps * batch_size / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def pipeline_rate(config: Config, records, workers: int, batches: int) -> float:
    """Images/s of the augmenting generator with `workers` threads, as fit iterates it."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from data.data_generator import FaceGridDataset

    dataset = FaceGridDataset(records, config.replace(workers=workers), training=True,
                              endless=True)
    adapter = PyDatasetAdapter(dataset, shuffle=False)
    iterator = iter(adapter.get_numpy_iterator())
    for _ in range(WARMUP_STEPS):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * config.batch_size / (time.perf_counter() - start)
    adapter.on_epoch_end()
    return rate


def detect_ms(config: Config, images: int, tmp: str) -> dict:
    """Median ms per image (batch of one) of the network as Keras, TFLite and ONNX."""
    from model.detector import FaceDetector
    from model.export import export_model
    from model.network import create_model

    keras.backend.clear_session()
    model = create_model(config)
    detectors = {"keras": FaceDetector.from_keras(model, "<bench>")}
    for fmt, name in (("tflite", "model.tflite"), ("onnx", "model.onnx")):
        path = os.path.join(tmp, name)
        try:
            export_model(model, fmt, path)
        except Exception as e:  # a converter missing here must not hide the other rows
            print(f"{fmt}: not measured ({str(e).splitlines()[0][:160]})", file=sys.stderr)
            continue
        detectors[fmt] = FaceDetector.load(path)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(images)]
    result = {}
    for name, detector in detectors.items():
        detector.detect(frames[0])  # warm-up
        times = []
        for frame in frames:
            start = time.perf_counter()
            detector.detect(frame)
            times.append(1000 * (time.perf_counter() - start))
        result[name] = statistics.median(times)
    return result


def demo_records(dataset: str, smoke: bool, tmp: str):
    from data.synthetic import ensure_demo_dataset, make_demo_dataset
    from data.wider import load_wider_split

    if smoke and not dataset:
        dataset = os.path.join(tmp, "demo")
        make_demo_dataset(dataset, num_train=8, num_val=2, seed=3, progress=False)
    elif not dataset:
        dataset = DEMO_ROOT
        ensure_demo_dataset(DEMO_ROOT)
    return load_wider_split(dataset, "train").records


def run(args) -> dict:
    smoke = args.smoke
    steps = 2 if smoke else args.steps
    batch_sizes = (2,) if smoke else (16, 64)
    worker_counts = (2,) if smoke else (8, 16)
    configs = presets(smoke)
    rows = {"device": device_name(), "smoke": smoke, "training": [], "pipeline": [],
            "detect_ms": {}}
    trained = ["real"] if smoke else list(configs)
    # Smoke: mixed_float16 alone; float32 steps are what every training test runs.
    precisions = (True,) if smoke else (False, True)
    for name in trained:
        config = configs[name]
        for batch in batch_sizes:
            for mixed in precisions:
                rate = training_rate(config, batch, mixed, steps)
                rows["training"].append({"preset": name, "batch": batch,
                                         "mixed_precision": mixed, "images_per_s": rate})
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        records = demo_records(args.dataset, smoke, tmp)
        real = configs["real"].replace(batch_size=2 if smoke else 16)
        for workers in worker_counts:
            rate = pipeline_rate(real, records, workers, batches=2 if smoke else 40)
            rows["pipeline"].append({"workers": workers, "images_per_s": rate})
        rows["detect_ms"] = detect_ms(configs["real"], 3 if smoke else 50, tmp)
    return rows


def table(rows: dict) -> str:
    lines = [f"device: {rows['device']}" + ("  (smoke run: figures mean nothing)"
                                           if rows["smoke"] else ""),
             "| measure | setting | figure |", "| --- | --- | --- |"]
    for r in rows["training"]:
        precision = "mixed_float16" if r["mixed_precision"] else "float32"
        lines.append(f"| training images/s | {r['preset']}, batch {r['batch']}, {precision} "
                     f"| {r['images_per_s']:.1f} |")
    for r in rows["pipeline"]:
        lines.append(f"| pipeline images/s | real preset, {r['workers']} worker threads "
                     f"| {r['images_per_s']:.1f} |")
    for name, ms in rows["detect_ms"].items():
        lines.append(f"| detect ms / image | real preset, {name} | {ms:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes: checks the code path on a CPU in seconds")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per row")
    parser.add_argument("--dataset", default="",
                        help="WIDER-layout root for the pipeline rows (default: the demo data)")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps {args.steps}: must be positive")
    rows = run(args)
    print(table(rows))
    if args.out:
        from common.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
