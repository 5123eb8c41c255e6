"""Memory of the batch generator over a long epoch: the resident set must stay flat.

    python benchmarks/bench_generator_memory.py [--images 10000] [--files 300] [--workers 1]

Writes a WIDER-format annotation file of `--images` entries that point, in turn, at
`--files` small synthetic JPEGs (640x480, a few drawn "faces" each), reads it with
data.wider.read_wider_annotations, and iterates FaceGridDataset (training, augmentation
on) over all of it as Model.fit does, sampling VmRSS / VmHWM from /proc/self/status.
Prints the resident set after 1k, 5k and 10k images (and every 10% of the way); it
asserts nothing: a flat line means the generator holds no images between batches.
"""

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter  # noqa: E402

from config import Config  # noqa: E402
from data.data_generator import FaceGridDataset  # noqa: E402
from data.records import ImageRecord  # noqa: E402
from data.wider import read_wider_annotations, write_wider_annotations  # noqa: E402

REPORT_AT = (1000, 5000, 10000)


def memory_mib() -> dict:
    """VmRSS (resident now) and VmHWM (peak resident) of this process, MiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values


def write_dataset(folder: str, files: int, images: int, rng) -> str:
    """`files` synthetic JPEGs and an annotation file listing `images` entries over them."""
    images_dir = os.path.join(folder, "images")
    os.makedirs(os.path.join(images_dir, "bench"), exist_ok=True)
    faces = []
    for k in range(files):
        image = rng.integers(60, 200, size=(480, 640, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (0, 0), 3)  # photo-like, compressible
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, [560, 400], size=(n, 2))
        wh = rng.uniform(12, 80, size=(n, 2))
        xy, wh = xy.round(), wh.round()
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)  # x1, y1, x2, y2
        for x1, y1, x2, y2 in boxes.astype(int):
            cv2.rectangle(image, (x1, y1), (x2, y2), (40, 90, 200), -1)
        cv2.imwrite(os.path.join(images_dir, "bench", f"{k:04d}.jpg"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        faces.append(boxes)
    records = [
        ImageRecord(os.path.join(images_dir, "bench", f"{i % files:04d}.jpg"),
                    f"bench/{i % files:04d}.jpg", faces[i % files], np.zeros(len(faces[i % files]), bool))
        for i in range(images)
    ]
    annotation = os.path.join(folder, "bench_bbx_gt.txt")
    write_wider_annotations(records, annotation)
    return annotation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="entries in the annotation file")
    parser.add_argument("--files", type=int, default=300, help="distinct JPEGs they point at")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--processes", action="store_true", help="worker processes, not threads")
    args = parser.parse_args()
    config = Config()

    with tempfile.TemporaryDirectory(prefix="bench_generator_memory_") as tmp:
        annotation = write_dataset(tmp, args.files, args.images, np.random.default_rng(0))
        records = read_wider_annotations(annotation, os.path.join(tmp, "images")).records
        dataset = FaceGridDataset(records, config, training=True, workers=args.workers,
                                  use_multiprocessing=args.processes)
        adapter = PyDatasetAdapter(dataset, shuffle=False)
        print(f"{len(records)} records over {args.files} JPEGs of 640x480; batch "
              f"{config.batch_size}, input {config.input_size}, workers {args.workers} "
              f"({'processes' if args.processes else 'threads'}); {len(dataset)} batches")
        before = memory_mib()
        print(f"{'images':>7s} {'VmRSS MiB':>10s} {'VmHWM MiB':>10s} {'img/s':>7s}")
        print(f"{0:7d} {before['VmRSS']:10.1f} {before['VmHWM']:10.1f} {'':>7s}")

        total = len(dataset) * config.batch_size
        marks = sorted(set(REPORT_AT) | {round(total * f / 10) for f in range(1, 11)})
        marks = [m for m in marks if 0 < m <= total]
        samples = []
        seen, next_mark = 0, 0
        start = time.perf_counter()
        adapter.on_epoch_begin()
        for i, (x, _) in enumerate(adapter.get_numpy_iterator()):
            seen += len(x)
            if i % 10 == 0:
                samples.append(memory_mib()["VmRSS"])
            while next_mark < len(marks) and seen >= marks[next_mark]:
                mem = memory_mib()
                rate = seen / (time.perf_counter() - start)
                print(f"{seen:7d} {mem['VmRSS']:10.1f} {mem['VmHWM']:10.1f} {rate:7.1f}")
                next_mark += 1
        adapter.on_epoch_end()

    first, last = samples[len(samples) // 10], samples[-1]
    print(f"\nVmRSS sampled every 10 batches: min {min(samples):.1f}, max {max(samples):.1f} MiB; "
          f"from 10% to the end of the epoch {last - first:+.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
