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
neither face nor background) per source and degradation. Ours run at the protocol's low
threshold (bench_real.scoring_spec), the peers at their WIDER settings
(benchmarks/peers.py). YuNet-n labelled the Caltech and SCUT-HEAD boxes, so on those two
sets it is scored against its own detections: its figures there are a teacher's, not a
peer's. One thread for every runtime; no times (bench_real.py gives those).
"""

import argparse
import json
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


def heldout_aps(detectors, records, degradations) -> dict:
    """{degradation: {detector name: AP@0.5}} of `detectors` ([(name, detect(image_bgr) ->
    Detections)]) on `records`, each photo decoded once per degradation."""
    from tqdm import tqdm

    from data.image import read_image
    from model.metrics import average_precision

    truths = [(r.boxes, r.ignore) for r in records]
    result = {}
    for name in degradations:
        found = {label: [] for label, _ in detectors}
        for record in tqdm(records, desc=name, unit="image", leave=False):
            photo = degrade(read_image(record.path), name)
            for label, detect in detectors:
                found[label].append(detect(photo))
        result[name] = {label: float(average_precision(found[label], truths))
                        for label, _ in detectors}
    return result


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
    detectors = []
    for path in [args.weights] + args.also:
        ours = load_ours(path)
        spec = scoring_spec(config)
        detectors.append((os.path.basename(path), lambda img, d=ours, s=spec: d.detect(img, s)))
    if not args.no_peers:
        from benchmarks.peers import UltraFace, YuNet

        for peer in (UltraFace(), YuNet()):
            detectors.append((peer.name, peer.detect))
    table = {}
    for source in parse_sources(args.sources, config.dataset_format, "--sources"):
        text = f"{source.fmt}={source.path}"
        records = validation_records(config.replace(dataset=text, val_dataset=""))
        name = os.path.basename(os.path.normpath(source.path))
        table[name] = {"photos": len(records), "ap": heldout_aps(detectors, records, degradations)}
        print(f"{name}: {len(records)} held-out photos done", flush=True)
    columns = [(s, d) for s in table for d in degradations]
    print("| detector | " + " | ".join(f"{s} {d}" for s, d in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for label, _ in detectors:
        print(f"| {label} | " + " | ".join(f"{table[s]['ap'][d][label]:.3f}" for s, d in columns)
              + " |")
    if args.out:
        from common.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    from common.cli import run_main

    run_main(main, flags=("weights", "also", "sources"))
