"""Real faces: train a preset on real photos within a time budget, then score it beside the peers.

    python benchmarks/bench_real.py [--preset real] [--minutes 60] [any train.py flag]
    python benchmarks/bench_real.py --epochs 5 --steps-per-epoch 100   # a fixed length
    python benchmarks/bench_real.py --resume checkpoints/RUN/      # finish an interrupted run
    python benchmarks/bench_real.py --weights RUN/last-e009.keras --epochs 12   # another cycle
    python benchmarks/bench_real.py --score checkpoints/RUN/          # score a trained run
    python benchmarks/bench_real.py --score checkpoints/RUN/ --detect-sizes 320,416,512
    python benchmarks/bench_real.py --score checkpoints/RUN/ --detect-sizes 320,384x256

Training (skipped with --score) uses the real photos of ../shared/real_faces, three sets
mixed: the face-mask photos (Pascal VOC), the Caltech WebFaces and the SCUT-HEAD crowds
(both WIDER layout). None has a validation split, so each is split by the project's seeded
hash (10 % validate, the same images every run): that split selects the checkpoint, and
SCUT-HEAD's part of it the detection size and threshold (`--select-on`). The backbone is
../shared/weights' MobileNetV2 ImageNet file of the preset's width (1.0 or 0.35). The
budget is kept by measuring a few training steps and one validation pass first and giving
the run as many epochs of `--steps-per-epoch` (default 100) steps as fit; the run's real
time is printed. The measurement runs `train_on_batch`, which can be slower per step than
`fit`'s loop (2026-12-04, small preset: 0.75 measured against 0.43 s per step in the run,
so `--minutes 85` would have trained for about 50). Runs compared with each other should
rather get the same `--epochs`: a measured budget moves with the machine's load.

Scoring runs in a fresh process with one thread (TF, TFLite and OpenCV), so latencies are
comparable. It picks the detection input size with the best AP at IoU 0.5 on the
validation split (`--detect-sizes`; the network is convolutional, so the trained weights
run at any multiple of 32; `384x256` is the 384-px square's band of 256 rows,
`data.grid.GridSpec.input_height`), then takes turns image by image on the 200 real WIDER FACE
photos of ../shared/wider_val_subset200 between
    this model (Keras), its TFLite float32, float16 and int8 exports (int8 calibrated on
    --calibration-images training photos), its ONNX export (onnxruntime), YuNet-n,
    UltraFace RFB-320
and prints one table: the official protocol's easy / medium / hard AP and the median ms
per image (each detector's own pre-processing, network and NMS on the decoded photo).
The photos are stored at 416x416; each is first resized back to its original aspect ratio
(long side 640, `original_sizes.txt`) for every detector alike, and boxes are mapped back
to the 416x416 pixels of the official ground truth. The test set is only reported on:
nothing is chosen on it.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared")
REAL_FACES = os.path.join(SHARED, "real_faces")
# The small-face crowds (SCUT-HEAD, median face 13 px): they choose the detection size
# and the threshold, since the test photos' faces are small too (the other sets' are not).
SMALL_FACES = "wider=" + os.path.join(REAL_FACES, "scut_head_faces")
REAL_SOURCES = ",".join([
    "voc=" + os.path.join(REAL_FACES, "face_mask_voc"),
    "wider=" + os.path.join(REAL_FACES, "caltech_webfaces"),
    SMALL_FACES,
])
# The ImageNet backbone of each width at hand in ../shared/weights.
BACKBONES = {alpha: os.path.join(SHARED, "weights", f"mobilenet_v2_{alpha}_imagenet_no_top.h5")
             for alpha in ("1.0", "0.35")}
BACKBONE = BACKBONES["1.0"]
SUBSET = os.path.join(SHARED, "wider_val_subset200")
RESTORED_LONG_SIDE = 640
# Detections kept per image when scoring: the crowded WIDER photos hold up to ~700 faces.
SCORE_MAX_DETECTIONS = 1000
CALIBRATION_STEPS = 6


def scoring_spec(config):
    """Our detectors' post-processing when scored: the protocol's low threshold (AP needs
    the whole curve) and the crowd-sized cap."""
    from model.postprocess import DetectSpec

    return DetectSpec(config.eval_score_threshold, config.nms_iou, SCORE_MAX_DETECTIONS)


# ----------------------------------------------------------------------------- training
def budgeted_config(config, minutes: float):
    """`config` with as many epochs as fit in `minutes` on this machine (measured)."""
    import numpy as np

    from data.data_generator import FaceGridDataset
    from data.datasets import training_records, validation_records
    from model.training import _compile, initial_model

    steps = config.steps_per_epoch or 100
    train_records = training_records(config)
    val_records = validation_records(config)
    data = FaceGridDataset(train_records, config, training=True)
    model = initial_model(config)
    _compile(model, config, config.finetune_learning_rate)
    start = time.perf_counter()
    batches = [data[i] for i in range(CALIBRATION_STEPS + 2)]
    load_s = (time.perf_counter() - start) / len(batches)
    for x, y in batches[:2]:  # traces the step, warms the kernels
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for x, y in batches[2:]:
        model.train_on_batch(x, y)
    step_s = (time.perf_counter() - start) / CALIBRATION_STEPS
    predict = model.predict_on_batch
    predict(batches[0][0])
    start = time.perf_counter()
    predict(batches[1][0])
    val_s = (time.perf_counter() - start) * math.ceil(len(val_records) / config.batch_size)
    # The loader threads take CPU from the step: with 2 cores, half their time adds to it.
    cores = max(1, min(os.cpu_count() or 1, config.workers + 1))
    epoch_s = steps * (step_s + load_s / cores) + 1.3 * val_s  # + validation decode and AP
    epochs = max(1, int(minutes * 60 // epoch_s))
    head = min(config.head_epochs, max(0, epochs - 1))
    print(f"budget {minutes:g} min: {step_s:.2f} s per step + {load_s:.2f} s of loading, "
          f"~{val_s:.0f} s per validation "
          f"pass -> {epochs} epochs of {steps} steps ({head} with the backbone frozen); "
          f"{len(train_records)} training and {len(val_records)} validation images",
          flush=True)
    del model, data, batches
    np.random.seed(config.seed)
    return config.replace(steps_per_epoch=steps, head_epochs=head, finetune_epochs=epochs - head)


def train_preset(args, config) -> str:
    """Train within the budget; return the run's checkpoint folder."""
    from model.training import train

    if args.epochs:
        steps = config.steps_per_epoch or 100
        head = min(config.head_epochs, max(0, args.epochs - 1))
        config = config.replace(steps_per_epoch=steps, head_epochs=head,
                                finetune_epochs=args.epochs - head)
    else:
        config = budgeted_config(config, args.minutes)
    result = train(config, weights=args.weights)
    budget = f"{args.epochs} epochs asked" if args.epochs else f"budget {args.minutes:g} min"
    print(f"trained {result.epochs_done} epochs in {result.minutes:.1f} min "
          f"({budget}); best {config.monitor} {result.best_score:.4f}: "
          f"{result.best_checkpoint}", flush=True)
    return result.paths.checkpoint_dir


# ------------------------------------------------------------------------------ scoring
def restore_aspect(image, original_size):
    """The 416x416 file resized to its original aspect, long side RESTORED_LONG_SIDE."""
    import cv2

    w, h = original_size
    k = RESTORED_LONG_SIDE / max(w, h)
    return cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))),
                      interpolation=cv2.INTER_LINEAR)


def checkpoint_of(path: str):
    """(best .keras file, its run's Config) from a run folder or a checkpoint file."""
    from config import load_config
    from model.checkpoints import best_checkpoints, find_best_checkpoint

    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isdir(path):
        best = best_checkpoints(path)
        path = best[0][1] if best else find_best_checkpoint(path)
    return path, load_config(os.path.join(folder, "config.json"))


def validation_ap(detector, records, config) -> dict:
    """AP at IoU 0.5 of `detector` on validation records (original pixels, ignores kept),
    and the score threshold of its best F1 there: {'ap', 'threshold', 'f1', 'precision',
    'recall'}."""
    from data.image import read_image
    from model.metrics import average_precision, best_f1_threshold

    detections, truths = [], []
    for record in records:
        detections.append(detector.detect(read_image(record.path), scoring_spec(config)))
        truths.append((record.boxes, record.ignore))
    return {"ap": float(average_precision(detections, truths, iou_threshold=0.5)),
            **best_f1_threshold(detections, truths, iou_threshold=0.5)}


def score(args) -> dict:
    """The table: this model (Keras, every export, `--also` files) and the peers on the 200
    WIDER photos, each stage a function below in the order it runs."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import cv2

    cv2.setNumThreads(1)
    from benchmarks.peers import UltraFace, YuNet
    from model.checkpoints import load_checkpoint
    from model.contract import ModelContract
    from model.detector import FaceDetector

    weights, config = checkpoint_of(args.score)
    trained = load_checkpoint(weights, compile=False)
    print(f"scoring {weights} (trained at {config.input_size} px, cell {config.cell_size} px)")
    size, net, val_aps, held_out = choose_detection_size(trained, config, args)
    # What every export carries: fed as trained, at the size and threshold chosen above.
    contract = ModelContract(config.grid_spec().at_input_size(*detect_shape(size)),
                             score_threshold=round(val_aps[size]["threshold"], 3))
    ours, exports = our_detectors(net, config, size, contract, args)
    if args.ship:
        ship_float16(exports[1], args.ship, contract, val_aps[size])
    # Other model files scored in the same run (the model shipped today, to compare).
    ours += [(f"also {os.path.basename(path)}", FaceDetector.load(path, num_threads=1))
             for path in args.also]
    detectors = ours + [(YuNet.name, YuNet()), (UltraFace.name, UltraFace())]
    try:
        predictions, times = detect_test_photos(detectors, config)
    finally:
        for path in exports:
            os.remove(path)
    rows, curves = protocol_rows(predictions, times)
    if args.curves:
        draw_pr_curves(curves, {r["detector"]: r for r in rows}, args.curves)
        print(f"precision-recall curves: {args.curves}")
    result = {"weights": weights, "detect_size": size, "val_ap50": val_aps, "rows": rows,
              "config": config.to_dict()}
    print(f"\nbest checkpoint {weights}; detection at {size} px (validation AP@0.5 "
          f"{val_aps[size]['ap']:.4f} on {held_out} held-out training photos)")
    print_table(rows, size)
    if args.out:
        from common.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


def detect_shape(text: str):
    """(input_size, input_height) of a --detect-sizes entry: '320' the 320-px square
    (input_height 0), '384x256' its 384-px square's band of 256 rows."""
    width, _, height = str(text).partition("x")
    try:
        shape = int(width), int(height or 0)
    except ValueError:
        raise SystemExit(f"bench_real: --detect-sizes {text!r}: sizes are S or SxH "
                         "(e.g. 320 or 384x256)") from None
    return shape if shape[1] != shape[0] else (shape[0], 0)


def choose_detection_size(trained, config, args):
    """The detection size and threshold, chosen on the small-face set's held-out split
    (--select-on), never on the test photos: (size, the network at it, {size: validation_ap},
    the number of held-out photos); sizes as --detect-sizes gives them ('320', '384x256')."""
    from data.datasets import validation_records
    from model.detector import FaceDetector
    from model.network import at_input_size

    val = validation_records(config.replace(dataset=args.select_on, val_dataset=""))
    sizes = args.detect_sizes.split(",") if args.detect_sizes else [str(config.input_size)]
    val_aps, nets = {}, {}
    for size in sizes:
        shape = detect_shape(size)
        net = nets[size] = (trained if shape == (config.input_size, 0)
                            else at_input_size(trained, config, *shape))
        val_aps[size] = validation_ap(FaceDetector.from_keras(net, letterbox=config.letterbox),
                                      val, config)
        v = val_aps[size]
        print(f"  validation AP@0.5 at {size} px: {v['ap']:.4f} ({len(val)} images); best F1 "
              f"{v['f1']:.3f} at score {v['threshold']:.3f} (P {v['precision']:.3f}, "
              f"R {v['recall']:.3f})", flush=True)
    size = max(val_aps, key=lambda s: val_aps[s]["ap"])
    return size, nets[size], val_aps, len(val)


def our_detectors(net, config, size: int, contract, args):
    """([(label, FaceDetector)] of the Keras network and its exports: TFLite float32,
    float16, int8 and ONNX, in that order, one thread each), [the export files]."""
    from data.datasets import training_records
    from model.detector import FaceDetector
    from model.export import calibration_inputs, export_model

    ours = [("ours Keras", FaceDetector.from_keras(net, letterbox=config.letterbox))]
    exports = []
    # int8 ranges are measured on training photos, prepared as detection prepares them.
    width, height = detect_shape(size)
    calibration = calibration_inputs([r.path for r in training_records(config)], width,
                                     config.letterbox, args.calibration_images, config.seed,
                                     height)
    for label, fmt, options in (("ours TFLite fp32", "tflite", {}),
                                ("ours TFLite fp16", "tflite", {"float16": True}),
                                ("ours TFLite int8", "tflite", {"int8_inputs": calibration}),
                                ("ours ONNX", "onnx", {})):
        path = os.path.join(args.tmp_dir, f"bench_real_{os.getpid()}_{len(exports)}.{fmt}")
        export_model(net, fmt, path, contract=contract, **options)
        exports.append(path)
        ours.append((label, FaceDetector.load(path, num_threads=1)))
    return ours, exports


def ship_float16(export: str, ship: str, contract, validation: dict) -> None:
    """Copy the scored float16 export to `ship` atomically. The file carries its contract:
    the operating point chosen on the held-out photos (best F1 at IoU 0.5) is detect.py's
    default threshold for it."""
    from common.files import atomic_write_bytes

    os.makedirs(os.path.dirname(os.path.abspath(ship)), exist_ok=True)
    with open(export, "rb") as f:
        atomic_write_bytes(ship, f.read())
    print(f"shipped the float16 TFLite export ({os.path.getsize(ship) / 1e6:.1f} MB) "
          f"as {ship}, score threshold {contract.score_threshold} (best F1 on the "
          f"held-out split: {validation})")


def detect_test_photos(detectors, config):
    """Every detector on the 200 test photos at their original aspect, boxes mapped back to
    the subset files' pixels: ({name: {image key: (boxes, scores)}}, {name: [seconds]})."""
    import numpy as np
    from tqdm import tqdm

    from benchmarks.bench_generator import read_original_sizes
    from data.image import read_image
    from data.wider import load_wider_split

    records = load_wider_split(SUBSET, "val").records
    originals = read_original_sizes(SUBSET)
    predictions = {name: {} for name, _ in detectors}
    times = {name: [] for name, _ in detectors}
    for record in tqdm(records, desc="test photos", unit="image"):
        key = os.path.splitext(record.name)[0]
        image = read_image(record.path)
        file_h, file_w = image.shape[:2]
        photo = restore_aspect(image, originals[record.name][:2])
        to_file = np.float32([file_w / photo.shape[1], file_h / photo.shape[0]] * 2)
        for name, det in detectors:
            start = time.perf_counter()
            if name.startswith(("ours", "also")):
                found = det.detect(photo, scoring_spec(config))
            else:
                found = det.detect(photo)
            times[name].append(time.perf_counter() - start)
            predictions[name][key] = (found.boxes * to_file, found.scores)
    return predictions, times


def protocol_rows(predictions: dict, times: dict):
    """The official protocol's easy / medium / hard AP and the median ms of each detector:
    ([{'detector', 'easy', 'medium', 'hard', 'ms'}], {name: its PR curves})."""
    import numpy as np

    from model.wider_protocol import wider_ap

    gt_dir = os.path.join(SUBSET, "eval_tools", "ground_truth")
    rows, curves = [], {}
    for name in predictions:
        curves[name] = {}
        ap = wider_ap(predictions[name], gt_dir, curves=curves[name])
        rows.append({"detector": name, **ap, "ms": 1000 * float(np.median(times[name]))})
    return rows, curves


def print_table(rows: list, size: int) -> None:
    """The rows as the Markdown table docs/benchmarks.md holds."""
    print("| detector | easy | medium | hard | ms / image (1 thread) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        label = r["detector"] + (f" {size} px" if r["detector"].startswith("ours") else "")
        print(f"| {label} | {r['easy']:.3f} | {r['medium']:.3f} | {r['hard']:.3f} | "
              f"{r['ms']:.1f} |")


def draw_pr_curves(curves: dict, rows: dict, path: str) -> None:
    """One PNG, easy / medium / hard side by side, every detector's precision-recall curve
    with its AP in the legend, as the WIDER FACE results page draws them.

    Args:
        curves: detector -> {setting: (recall, precision)} (`wider_ap(curves=...)`).
        rows: detector -> its table row (the AP of each setting, ms).
        path: the PNG, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: benchmarks run headless
    import matplotlib.pyplot as plt

    from common.files import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharey=True)
    for ax, setting in zip(axes, ("easy", "medium", "hard")):
        for name, by_setting in curves.items():
            recall, precision = by_setting[setting]
            ours = name.startswith("ours")
            ax.plot(recall, precision, linewidth=2.0 if ours else 1.5,
                    linestyle="-" if ours else "--",
                    label=f"{name} ({rows[name][setting]:.3f}, {rows[name]['ms']:.0f} ms)")
        ax.set_title(f"WIDER FACE val, {setting} (200 photos)")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel("precision")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------- main
def parse_args(argv=None):
    from common.cli import add_config_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="real", help="config.py preset (default: real)")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="training budget on this machine, minutes (default 60)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="train this many epochs instead of a measured budget")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue an interrupted run folder (its config.json), then score")
    parser.add_argument("--weights", metavar="CKPT",
                        help="start from this checkpoint's weights (a new run, a fresh "
                             "optimizer and learning-rate schedule), as train.py --weights")
    parser.add_argument("--score", metavar="RUN", help="only score this run folder or checkpoint")
    parser.add_argument("--detect-sizes", default="",
                        help="comma-separated input sizes to choose from on validation: S "
                             "(the S x S square) or SxH (its band of H rows, for landscape "
                             "photos; default: the training size)")
    parser.add_argument("--select-on", default=SMALL_FACES, metavar="SOURCES",
                        help="sources whose held-out split chooses the detection size and "
                             "threshold (default: the small-face set, SCUT-HEAD)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--curves", metavar="PNG",
                        help="also draw the easy / medium / hard precision-recall curves "
                             "of every detector into this PNG")
    parser.add_argument("--ship", metavar="PATH",
                        help="also write the scored float16 TFLite export here "
                             "(models/face_detector.tflite: the model detect.py falls back to)")
    parser.add_argument("--tmp-dir", default="/tmp", help="where the exports are written")
    parser.add_argument("--also", action="append", default=[], metavar="MODEL",
                        help="score this model file too, in the same run (e.g. "
                             "models/face_detector.tflite); repeatable")
    parser.add_argument("--calibration-images", type=int, default=200, metavar="N",
                        help="training photos that calibrate the int8 export (default 200)")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(REAL_FACES) or not os.path.isfile(BACKBONE):
        raise SystemExit(f"bench_real: needs {REAL_FACES} and {BACKBONE} (../shared)")
    if args.score:
        score(args)
        return
    from common.cli import config_from_args
    from config import PRESETS, Config, load_config

    if args.resume:
        from model.training import train

        config = load_config(os.path.join(args.resume, "config.json"))
        result = train(config, resume=True)
        print(f"resumed {result.paths.name}: {result.epochs_done} epochs in "
              f"{result.minutes:.1f} min", flush=True)
        score_in_fresh_process(result.paths.checkpoint_dir, args)
        return

    if args.preset not in PRESETS:
        raise SystemExit(f"bench_real: --preset {args.preset!r}: one of {', '.join(PRESETS)}")
    base = PRESETS[args.preset](Config()).replace(
        dataset=REAL_SOURCES,
        run_name=f"real-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    config = config_from_args(args, base=base)
    if config.backbone_weights == "imagenet":  # the file at hand for this width
        if f"{config.alpha:g}" not in {f"{float(a):g}" for a in BACKBONES}:
            raise SystemExit(f"bench_real: --alpha {config.alpha:g}: ../shared/weights has "
                             f"ImageNet backbones for alpha {', '.join(BACKBONES)} only")
        config = config.replace(backbone_weights=next(
            p for a, p in BACKBONES.items() if float(a) == config.alpha))
    score_in_fresh_process(train_preset(args, config), args)


def score_in_fresh_process(run_dir: str, args) -> None:
    """`--score run_dir` in a new one-thread process: training's threads would skew the
    latencies, and TF's thread counts are fixed once it starts."""
    command = [sys.executable, os.path.abspath(__file__), "--score", run_dir,
               "--tmp-dir", args.tmp_dir, "--calibration-images", str(args.calibration_images)]
    if args.detect_sizes:
        command += ["--detect-sizes", args.detect_sizes]
    if args.out:
        command += ["--out", args.out]
    if args.ship:
        command += ["--ship", args.ship]
    command += ["--select-on", args.select_on]
    if args.curves:
        command += ["--curves", args.curves]
    for path in args.also:
        command += ["--also", path]
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
