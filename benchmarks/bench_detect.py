"""Detection latency per image on this CPU: Keras vs its TFLite exports (float32, float16).

    python benchmarks/bench_detect.py [--images 60] [--repeats 3] [--threads 0]

The default network (Config(): 224 px, grid 7, alpha 0.75) with random weights
(backbone_weights none: weight values do not change the speed), run one image at a time
on real photos of ../shared/wider_val_subset200 (benchmark use only). Each image is timed
in parts, as `FaceDetector.detect` runs them:
- decode: `read_image` (JPEG -> BGR), reported apart: a video frame or camera has none;
- prep: `prepare_image` (letterbox resize + scaling to [-1, 1]);
- network: `FaceDetector.predict_grids` on a batch of one;
- post: `detect_from_grid` (decode grid + letterbox undo + NMS) + `draw_boxes`, twice:
  on the network's grid, whose face bias is raised so that all 49 cells are detections
  (the worst case for this grid), and on the photo's ground-truth faces encoded as a grid
  (what a perfect detector outputs on these crowded photos; one face per cell).

Keras paths compared: a tf.function over `model(x, training=False)` (what FaceDetector
uses), `model.predict_on_batch`, and the eager call. Targets checked: post <= 20% of
network; TFLite network <= half of the Keras network time.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from config import Config  # noqa: E402
from data.draw import draw_boxes  # noqa: E402
from data.grid import CLASS, encode_grid  # noqa: E402
from data.image import prepare_image, read_image  # noqa: E402
from model.detector import FaceDetector  # noqa: E402
from model.postprocess import DetectSpec, detect_from_grid  # noqa: E402

SUBSET = os.path.join(os.path.dirname(REPO), "shared", "wider_val_subset200")


def post_process(image, grid, letterbox, config):
    """The detection tail of `FaceDetector.detect` plus drawing; returns the face count."""
    det = detect_from_grid(grid, letterbox, DetectSpec.from_config(config))
    draw_boxes(image, det.boxes, det.scores)
    return len(det.scores)


def truth_grid(record, letterbox, size, grid_size):
    """The record's valid faces as a predicted grid (score 0.9): a perfect detector."""
    boxes = letterbox.to_input(record.boxes[~record.ignore])
    grid = encode_grid(boxes, np.zeros(len(boxes), bool), size, grid_size).grid
    grid[..., CLASS] *= 0.9
    return grid


def time_detector(detector, images, records, repeats, config):
    """Median ms per image of prep, network, post (worst case and truth), over passes."""
    parts = {"prep": [], "network": [], "post": [], "post_truth": []}
    faces, truth_faces = [], []
    x, _ = prepare_image(images[0], detector.input_size)
    for _ in range(3):  # warm-up (tracing, interpreter allocation)
        detector.predict_grids(x[None])
    for _ in range(repeats):
        for image, record in zip(images, records):
            t0 = time.perf_counter()
            x, letterbox = prepare_image(image, detector.input_size, detector.letterbox)
            t1 = time.perf_counter()
            grid = detector.predict_grids(x[None])[0]
            t2 = time.perf_counter()
            faces.append(post_process(image, grid, letterbox, config))
            t3 = time.perf_counter()
            truth = truth_grid(record, letterbox, detector.input_size, detector.grid_size)
            t4 = time.perf_counter()
            truth_faces.append(post_process(image, truth, letterbox, config))
            t5 = time.perf_counter()
            parts["prep"].append(t1 - t0)
            parts["network"].append(t2 - t1)
            parts["post"].append(t3 - t2)
            parts["post_truth"].append(t5 - t4)
    result = {k: 1000 * float(np.median(v)) for k, v in parts.items()}
    result["total"] = result["prep"] + result["network"] + result["post"]
    result["faces"] = float(np.mean(faces))
    result["truth_faces"] = float(np.mean(truth_faces))
    return result


def time_network_only(predict, images, repeats, size):
    """Median ms per image of a bare predict callable (for the other Keras paths)."""
    inputs = [prepare_image(image, size)[0][None] for image in images]
    for x in inputs[:3]:
        np.asarray(predict(x))
    times = []
    for _ in range(repeats):
        for x in inputs:
            t0 = time.perf_counter()
            np.asarray(predict(x))
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="photos from the subset")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the photos")
    parser.add_argument("--threads", type=int, default=0,
                        help="TFLite interpreter threads (0: all cores)")
    args = parser.parse_args()

    import keras

    from data.wider import load_wider_split
    from model.export import export_model
    from model.network import create_model

    if not os.path.isdir(SUBSET):
        print(f"{SUBSET}: not found; this benchmark needs ../shared", file=sys.stderr)
        return 2
    records = load_wider_split(SUBSET, "val").records[: args.images]
    start = time.perf_counter()
    images = [read_image(r.path) for r in records]
    decode_ms = 1000 * (time.perf_counter() - start) / len(records)

    config = Config(backbone_weights="none")
    keras.utils.set_random_seed(0)
    model = create_model(config)
    head = model.get_layer("head_out")
    bias = head.bias.numpy()
    bias[CLASS] = 2.0  # every cell scores ~0.88: 49 detections, post-processing worst case
    head.bias.assign(bias)

    rows = []
    keras_detector = FaceDetector.from_keras(model, "keras")
    rows.append(("Keras, tf.function (FaceDetector)", time_detector(
        keras_detector, images, records, args.repeats, config)))
    other_keras = {
        "Keras, predict_on_batch": time_network_only(
            model.predict_on_batch, images, args.repeats, config.input_size),
        "Keras, eager model(x)": time_network_only(
            lambda x: model(x, training=False), images[:10], 1, config.input_size),
    }
    with tempfile.TemporaryDirectory(prefix="bench_detect-") as tmp:
        for name, float16 in (("TFLite float32", False), ("TFLite float16", True)):
            path = os.path.join(tmp, f"model{'_fp16' if float16 else ''}.tflite")
            t0 = time.perf_counter()
            export_model(model, "tflite", path, float16=float16)
            export_s = time.perf_counter() - t0
            lite = FaceDetector.load(path, num_threads=args.threads or None)
            result = time_detector(lite, images, records, args.repeats, config)
            result["size_mb"] = os.path.getsize(path) / 2**20
            result["export_s"] = export_s
            rows.append((name, result))

    cores = os.cpu_count()
    print(f"\n{len(images)} photos ({SUBSET}), {args.repeats} passes, 224 px, grid 7, "
          f"alpha 0.75, {cores} CPU cores, TFLite threads {args.threads or cores}; "
          f"median ms per image")
    print(f"JPEG decode (read_image, not in total): {decode_ms:.2f} ms mean\n")
    truth_faces = rows[0][1]["truth_faces"]
    print(f"| runtime | prep | network | post, 49 faces (worst) | post, true faces "
          f"({truth_faces:.1f}/image) | total (worst post) | worst post / network |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['prep']:.2f} | {r['network']:.2f} | {r['post']:.2f} | "
              f"{r['post_truth']:.2f} | {r['total']:.2f} | {100 * r['post'] / r['network']:.0f}% |")
    for name, ms in other_keras.items():
        print(f"| {name} | | {ms:.2f} | | | | |")
    keras_ms = rows[0][1]["network"]
    print()
    for name, r in rows[1:]:
        print(f"{name}: {r['size_mb']:.1f} MiB, export {r['export_s']:.0f} s, network "
              f"{r['network'] / keras_ms:.2f}x Keras")
    for case, key in (("worst case", "post"), ("true faces", "post_truth")):
        ok = all(r[key] <= 0.2 * r["network"] for _, r in rows)
        print(f"target post <= 20% of network, {case}: {'met' if ok else 'NOT met'}")
    lite_ok = all(r["network"] <= 0.5 * keras_ms for _, r in rows[1:])
    print(f"target TFLite network <= 0.5x Keras: {'met' if lite_ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
