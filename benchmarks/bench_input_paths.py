"""Two image-to-input paths: does decoding JPEGs at reduced size, as training and
validation do, score differently from decoding in full, as detection does?

    python benchmarks/bench_input_paths.py [--weights models/face_detector.tflite]

The 200 test photos, upscaled to their original WIDER sizes as JPEG q90 (as
bench_generator.py builds them), each run through the same model twice:
- detection's path: the JPEG decoded in full, then resized into the network input
  (`FaceDetector.detect`);
- training's path: the JPEG decoded by libjpeg at 1/2, 1/4 or 1/8 size wherever the input
  needs no more pixels (`data.augment.choose_reduction`, which `load_sample` applies to
  every training and validation image), then resized the same way;
with the same decoding of the grid and the same NMS, each scored by the official protocol.
It measures; the test photos choose nothing.
"""

import argparse
import collections
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.bench_generator import (DEFAULT_SUBSET, build_wider_sized_images,  # noqa: E402
                                        read_original_sizes)
from config import Config  # noqa: E402
from data.augment import choose_reduction  # noqa: E402
from data.boxes import clip_boxes  # noqa: E402
from data.image import read_image, read_image_size  # noqa: E402
from model.postprocess import DetectSpec, detect_from_grid  # noqa: E402

MAX_DETECTIONS = 1000  # as bench_real.py scores crowds


def evaluation_spec(config: Config) -> DetectSpec:
    """The protocol's low threshold and bench_real.py's cap, for both paths alike."""
    return DetectSpec(config.eval_score_threshold, config.nms_iou, MAX_DETECTIONS)


def detect_reduced(detector, path: str, config: Config):
    """Training's path: decode at the reduction `choose_reduction` allows, then detect;
    (Detections in the file's pixels, the reduction used)."""
    from model.postprocess import Detections

    width, height = read_image_size(path)
    reduce = choose_reduction(width, height, detector.input_size, detector.letterbox)
    image = read_image(path, reduce)
    x, mapping = detector.prepare(image)
    found = detect_from_grid(detector.predict_grids(x[None])[0], mapping,
                             evaluation_spec(config), detector.grid_sizes)
    # libjpeg's scaled pixel i covers the file's pixels [k i, k i + k).
    boxes = clip_boxes(found.boxes * np.float32(reduce), width, height)
    return Detections(boxes, found.scores), reduce


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.path.join(REPO, "models", "face_detector.tflite"))
    parser.add_argument("--subset", default=DEFAULT_SUBSET)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import cv2

    from model.detector import FaceDetector
    from model.wider_protocol import wider_ap

    cv2.setNumThreads(1)
    config = Config()
    detector = FaceDetector.load(args.weights, num_threads=args.threads)
    predictions = {"full decode (detection)": {}, "reduced decode (training)": {}}
    reductions = collections.Counter()
    sizes = read_original_sizes(args.subset)
    with tempfile.TemporaryDirectory(prefix="bench-input-paths-") as tmp:
        records = build_wider_sized_images(args.subset, tmp)
        for record in tqdm(records, desc="test photos", unit="image"):
            key = os.path.splitext(record.name)[0]
            # The ground truth is in the subset files' pixels, these JPEGs at original size.
            ow, oh, fw, fh = sizes[record.name]
            to_file = np.float32([fw / ow, fh / oh] * 2)
            full = detector.detect(read_image(record.path), evaluation_spec(config))
            reduced, k = detect_reduced(detector, record.path, config)
            reductions[k] += 1
            predictions["full decode (detection)"][key] = (full.boxes * to_file, full.scores)
            predictions["reduced decode (training)"][key] = (reduced.boxes * to_file,
                                                             reduced.scores)
    gt_dir = os.path.join(args.subset, "eval_tools", "ground_truth")
    print(f"{args.weights}: {detector.input_size} px; JPEG reductions used by training's "
          f"path: {dict(sorted(reductions.items()))}")
    print("| path | easy | medium | hard |")
    print("| --- | --- | --- | --- |")
    for name, found in predictions.items():
        ap = wider_ap(found, gt_dir)
        print(f"| {name} | {ap['easy']:.3f} | {ap['medium']:.3f} | {ap['hard']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
