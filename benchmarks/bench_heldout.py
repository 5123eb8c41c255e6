"""Held-out training photos, ours beside the peers, clean and degraded: is the gap on the
WIDER test photos the network's, or the training data's?

    python benchmarks/bench_heldout.py --weights models/face_detector.tflite
    python benchmarks/bench_heldout.py --weights M --also OTHER --degrade clean,blur,lowres
    python benchmarks/bench_heldout.py --weights M --sources wider=../shared/real_faces/caltech_webfaces

Photos: the held-out split of each training source of benchmarks/bench_real.py (the seeded
hash split that its training leaves out and validates on; `--seed`, default Config's), so
our models never trained on them: the face-mask photos (human boxes), Caltech WebFaces and
the SCUT-HEAD crowds (YuNet-n's boxes, ../shared/README.md). Each detector runs on every
photo, as it is or degraded (`--degrade`, each a fixed change of the decoded photo):

    clean   the photo as decoded
    blur    Gaussian blur, sigma 2 px of the photo (defocus)
    motion  a 9-px horizontal box blur (camera shake)
    lowres  shrunk to 0.3 of its sides (area) and enlarged back (a small original)
    jpeg    re-encoded at JPEG quality 20

and the table gives AP at IoU 0.5 (`model.metrics.average_precision`, ignore regions
neither face nor background) per source and degradation. A second table gives, on the clean
photos, each detector's recall by face size: the share of faces that some detection of any
score overlaps at IoU >= 0.5, by the face's shorter side in pixels of the photo scaled to a
long side of 640 (the size at which the test photos are scored, bench_real.py). Ours run at the protocol's low
threshold (bench_real.scoring_spec), the peers at their WIDER settings
(benchmarks/peers.py). A third table gives each of our detectors' operating point, the
score threshold of its best F1 (with its precision and recall) on the clean photos of each
source and of all of them pooled: the threshold a model ships with is checked here, on
held-out training photos, never on the test photos. YuNet-n labelled the Caltech and SCUT-HEAD boxes, so on those two
sets it is scored against its own detections: its figures there are a teacher's, not a
peer's. One thread for every runtime; no times (bench_real.py gives those).
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common.errors import ConfigError  # noqa: E402

DEGRADATIONS = ("clean", "blur", "motion", "lowres", "jpeg")
LOWRES_FACTOR = 0.3
MOTION_LENGTH = 9
BLUR_SIGMA = 2.0
JPEG_QUALITY = 20
# Face sizes of the recall table: shorter side, px at a long side of SIZE_LONG_SIDE.
SIZE_EDGES = (0, 6, 8, 10, 12, 16, 24, 32, 64, math.inf)
SIZE_LONG_SIDE = 640


def degrade(image: np.ndarray, name: str) -> np.ndarray:
    """`image` (H, W, 3) uint8 changed as DEGRADATIONS[name] says (module docstring); the
    same shape and dtype, so boxes stay where they were."""
    import cv2

    if name == "clean":
        return image
    if name == "blur":
        return cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)
    if name == "motion":
        kernel = np.zeros((MOTION_LENGTH, MOTION_LENGTH), np.float32)
        kernel[MOTION_LENGTH // 2, :] = 1.0 / MOTION_LENGTH
        return cv2.filter2D(image, -1, kernel)
    if name == "lowres":
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * LOWRES_FACTOR)), max(1, round(h * LOWRES_FACTOR))),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if name == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    raise ConfigError(f"--degrade {name!r}: must be one of {', '.join(DEGRADATIONS)}")


def parse_degradations(text: str) -> list:
    """'clean,blur' -> ['clean', 'blur']; ConfigError naming --degrade for an unknown one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DEGRADATIONS]
    if bad or not names:
        raise ConfigError(f"--degrade {text!r}: a comma-separated list of "
                          f"{', '.join(DEGRADATIONS)}")
    return names


def heldout_aps(detectors, records, degradations) -> tuple:
    """({degradation: {detector name: AP@0.5}}, {detector name: (B,) faces found per size
    bin of SIZE_EDGES on the clean photos}, (B,) faces per bin, {detector name: its
    Detections of each clean photo}) of `detectors` ([(name, detect(image_bgr) ->
    Detections)]) on `records`, each photo decoded once per degradation; the size counts
    and the clean detections only when 'clean' is among `degradations`."""
    from tqdm import tqdm

    from data.image import read_image
    from model.metrics import average_precision

    truths = [(r.boxes, r.ignore) for r in records]
    bins = len(SIZE_EDGES) - 1
    found_by_size = {label: np.zeros(bins, np.int64) for label, _ in detectors}
    faces_by_size = np.zeros(bins, np.int64)
    result, clean = {}, {label: [] for label, _ in detectors}
    for name in degradations:
        found = {label: [] for label, _ in detectors}
        for record in tqdm(records, desc=name, unit="image", leave=False):
            image = read_image(record.path)
            photo = degrade(image, name)
            for label, detect in detectors:
                found[label].append(detect(photo))
            if name == "clean":
                size_bin = face_size_bins(record, max(image.shape[:2]))
                np.add.at(faces_by_size, size_bin, 1)
                for label, _ in detectors:
                    np.add.at(found_by_size[label], size_bin[faces_found(record, found[label][-1])], 1)
        result[name] = {label: float(average_precision(found[label], truths))
                        for label, _ in detectors}
        if name == "clean":
            clean = found
    return result, found_by_size, faces_by_size, clean


def face_size_bins(record, long_side: int) -> np.ndarray:
    """(F,) SIZE_EDGES bin of each face (not ignore region) of `record`, by its shorter side
    scaled to a long side of SIZE_LONG_SIDE."""
    from data.boxes import box_sizes

    faces = record.boxes[~record.ignore]
    side = box_sizes(faces).min(axis=1) * SIZE_LONG_SIDE / long_side if len(faces) else np.zeros(0)
    return np.digitize(side, SIZE_EDGES[1:-1])


def faces_found(record, detections) -> np.ndarray:
    """(F,) bool: which faces (not ignore regions) of `record` some detection overlaps at
    IoU >= 0.5, whatever its score."""
    from data.boxes import box_iou

    faces = record.boxes[~record.ignore]
    if not len(faces) or not len(detections.boxes):
        return np.zeros(len(faces), bool)
    return box_iou(faces[:, None], np.asarray(detections.boxes)[None]).max(axis=1) >= 0.5


def print_tables(table: dict, labels: list, degradations: list) -> None:
    """The AP table (a column per source and degradation) and, with 'clean', the recall
    by face size of each source."""
    columns = [(s, d) for s in table for d in degradations]
    print("| detector | " + " | ".join(f"{s} {d}" for s, d in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{table[s]['ap'][d][label]:.3f}" for s, d in columns)
              + " |")
    if "clean" not in degradations:
        return
    bins = [f"{SIZE_EDGES[i]}-{SIZE_EDGES[i + 1]}" if math.isfinite(SIZE_EDGES[i + 1])
            else f"{SIZE_EDGES[i]}+" for i in range(len(SIZE_EDGES) - 1)]
    for source, row in table.items():
        faces = np.asarray(row["faces_by_size"])
        print(f"\n{source}, recall by the face's shorter side (px at a long side of "
              f"{SIZE_LONG_SIDE}; faces per bin in brackets)")
        print("| detector | " + " | ".join(f"{b} ({n})" for b, n in zip(bins, faces)) + " |")
        print("| --- |" + " --- |" * len(bins))
        for label in labels:
            found = np.asarray(row["found_by_size"][label])
            print(f"| {label} | " + " | ".join(
                f"{f / n:.2f}" if n else "-" for f, n in zip(found, faces)) + " |")


def operating_points(detections: dict, truths: list, labels: list) -> dict:
    """{label: model.metrics.best_f1_threshold of detections[label] (one Detections per
    photo) against `truths` ([(boxes, ignore)] of the same photos)}: each of our detectors'
    operating point on these photos (the peers ship their own thresholds)."""
    from model.metrics import best_f1_threshold

    return {label: best_f1_threshold(detections[label], truths) for label in labels}


def print_operating_points(table: dict, labels: list) -> None:
    """The score threshold of best F1 of each of our detectors, per source and over all of
    them pooled (every face counts once: the training callback's rule, val_f1_threshold,
    on the validation split it uses)."""
    print("\nOperating point: the score threshold of best F1 (IoU 0.5) on the clean photos")
    print("| detector | " + " | ".join(table) + " |")
    print("| --- |" + " --- |" * len(table))
    for label in labels:
        cells = [f"{row['best_f1'][label]['threshold']:.3f} (F1 {row['best_f1'][label]['f1']:.3f}, "
                 f"P {row['best_f1'][label]['precision']:.2f}, R {row['best_f1'][label]['recall']:.2f})"
                 for row in table.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")


def parse_args(argv=None):
    from benchmarks.bench_real import REAL_SOURCES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="our model (any format detect.py loads)")
    p.add_argument("--also", action="append", default=[], metavar="MODEL",
                   help="another of our models, in the same run (repeatable)")
    p.add_argument("--degrade", default="clean", help=f"comma-separated: {', '.join(DEGRADATIONS)}")
    p.add_argument("--sources", default=REAL_SOURCES,
                   help="training sources (bench_real.py's by default), their held-out splits")
    p.add_argument("--seed", type=int, default=None, help="the split's seed (default: Config's)")
    p.add_argument("--no-peers", action="store_true", help="our models alone")
    p.add_argument("--out", help="write the figures as JSON")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from benchmarks.bench_landmarks import load_ours, one_thread
    from benchmarks.bench_real import scoring_spec
    from config import Config
    from data.datasets import parse_sources, validation_records

    args = parse_args(argv)
    degradations = parse_degradations(args.degrade)
    one_thread(tensorflow=True)
    config = Config() if args.seed is None else Config(seed=args.seed)
    detectors, ours = [], [args.weights] + args.also
    for path in ours:
        model = load_ours(path)
        spec = scoring_spec(config)
        detectors.append((os.path.basename(path), lambda img, d=model, s=spec: d.detect(img, s)))
    if not args.no_peers:
        from benchmarks.peers import UltraFace, YuNet

        for peer in (UltraFace(), YuNet()):
            detectors.append((peer.name, peer.detect))
    labels = [label for label, _ in detectors]
    table, pooled = {}, {"truths": [], **{label: [] for label, _ in detectors}}
    for source in parse_sources(args.sources, config.dataset_format, "--sources"):
        text = f"{source.fmt}={source.path}"
        records = validation_records(config.replace(dataset=text, val_dataset=""))
        name = os.path.basename(os.path.normpath(source.path))
        aps, found, faces, clean = heldout_aps(detectors, records, degradations)
        table[name] = {"photos": len(records), "ap": aps, "faces_by_size": faces.tolist(),
                       "found_by_size": {label: f.tolist() for label, f in found.items()}}
        if "clean" in degradations:
            truths = [(r.boxes, r.ignore) for r in records]
            table[name]["best_f1"] = operating_points(clean, truths, labels[:len(ours)])
            pooled["truths"] += truths
            for label in labels[:len(ours)]:
                pooled[label] += clean[label]
        print(f"{name}: {len(records)} held-out photos done", flush=True)
    print_tables(table, labels, degradations)
    if "clean" in degradations:
        best = operating_points(pooled, pooled["truths"], labels[:len(ours)])
        table["all sources"] = {"best_f1": best}
        print_operating_points(table, labels[:len(ours)])
    if args.out:
        from common.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    from common.cli import run_main

    run_main(main, flags=("weights", "also", "sources"))
