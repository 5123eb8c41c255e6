"""What a dataset looks like to the network: counts, face sizes in grid cells, collisions.

`python tools/stats.py --dataset my_faces` prints `format_stats(dataset_stats(...))`.

Faces are measured as training sees them without augmentation (the validation path of
data/augment.py): clipped to the image, letterboxed to the configured input, a face
whose smaller side is under `min_face_size` input pixels is ignored. A face's size is
sqrt(w * h) in input pixels divided by the cell size (input_size / grid_size): a grid
cell predicts one face, so faces much smaller than a cell are hard to place and several
faces whose centres share a cell collide (the largest is kept, `data.grid.encode_grid`).
Image sizes come from file headers (`read_image_size`), so a scan of WIDER train takes
seconds, not a decode of every image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from config import Config
from data.augment import faces_in_image, faces_to_input
from data.boxes import InputMapping, box_sizes
from data.datasets import parse_sources, read_source
from data.grid import encode_grid
from data.image import read_image_size
from data.records import ImageRecord
from common.errors import ImageError

# Bin edges of the face-size histogram, in grid cells.
SIZE_EDGES = (0.25, 0.5, 1.0, 2.0, 4.0)


def size_bin_labels(edges: Sequence[float] = SIZE_EDGES) -> List[str]:
    """'<0.25', '0.25-0.5', ..., '>4' for the histogram rows."""
    labels = [f"<{edges[0]:g}"]
    labels += [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f">{edges[-1]:g}")
    return labels


@dataclass
class DatasetStats:
    """Counts of a dataset at a configuration.

    Attributes:
        images: records scanned.
        negatives: images without a face to learn (all background).
        faces: boxes not ignored in the annotations.
        ignored: boxes ignored in the annotations (WIDER invalid, COCO crowd...).
        missing: images whose file is missing or unreadable (not measured), plus
            `left_out`, annotations the readers left out because their image was missing.
        left_out: see `missing`.
        small: faces to learn that become ignored because their smaller side is under
            min_face_size input pixels.
        size_counts: faces to learn per SIZE_EDGES bin (sizes in grid cells).
        collisions: faces lost to a larger face whose centre shares their grid cell.
        images_with_collisions: images with at least one collision.
        input_size, grid_size, min_face_size: the configuration measured at.
    """

    images: int = 0
    negatives: int = 0
    faces: int = 0
    ignored: int = 0
    missing: int = 0
    left_out: int = 0
    small: int = 0
    size_counts: List[int] = field(default_factory=lambda: [0] * (len(SIZE_EDGES) + 1))
    collisions: int = 0
    images_with_collisions: int = 0
    input_size: int = 0
    grid_size: int = 0
    min_face_size: float = 0.0

    @property
    def cell_size(self) -> float:
        return self.input_size / self.grid_size


def input_faces(record: ImageRecord, width: int, height: int, config: Config):
    """A record's faces in network-input pixels, as validation encodes them.

    Returns:
        (boxes (N, 4) float32 x1, y1, x2, y2 input pixels, ignore (N,) bool, small (N,)
        bool: faces newly ignored by the min_face_size rule).
    """
    boxes, ignore = faces_in_image(record, width, height)
    letterbox = InputMapping.fit(width, height, config.input_size, config.letterbox)
    input_boxes, input_ignore = faces_to_input(boxes, ignore, letterbox, config.min_face_size)
    return input_boxes, input_ignore, input_ignore & ~ignore


def dataset_stats(
    records: Sequence[ImageRecord], config: Config, left_out: int = 0, progress: bool = True
) -> DatasetStats:
    """Scan the records (image headers only) and count what `DatasetStats` describes.

    Args:
        records: the dataset.
        config: input_size, grid_size, letterbox, min_face_size.
        left_out: annotations the readers already left out for a missing image (added to
            `missing`; see `data.datasets.read_source`).
        progress: show a tqdm bar.
    """
    stats = DatasetStats(
        input_size=config.input_size, grid_size=config.grid_size,
        min_face_size=config.min_face_size, left_out=left_out, missing=left_out,
    )
    cell = config.cell_size
    for record in tqdm(records, desc="scan", unit="img", disable=not progress):
        stats.images += 1
        stats.faces += record.num_faces
        stats.ignored += int(record.ignore.sum())
        stats.negatives += int(record.num_faces == 0)
        try:
            width, height = read_image_size(record.path)
        except ImageError:
            stats.missing += 1
            continue
        boxes, ignore, small = input_faces(record, width, height, config)
        stats.small += int(small.sum())
        learn = ~ignore | small  # faces of the annotations, measured even when too small
        sizes = np.sqrt(box_sizes(boxes[learn]).prod(axis=1)) / cell
        for k, n in enumerate(np.bincount(np.searchsorted(SIZE_EDGES, sizes, side="right"),
                                          minlength=len(SIZE_EDGES) + 1)):
            stats.size_counts[k] += int(n)
        collisions = encode_grid(boxes, ignore, config.input_size, config.grid_size).collisions
        stats.collisions += collisions
        stats.images_with_collisions += int(collisions > 0)
    return stats


def format_stats(stats: DatasetStats) -> str:
    """The report the CLI prints: counts, then the size histogram with bars."""
    measured = stats.images - (stats.missing - stats.left_out)
    lines = [
        f"images          {stats.images}  ({stats.negatives} without faces)",
        f"faces           {stats.faces}",
        f"ignored faces   {stats.ignored}",
        f"missing files   {stats.missing}",
        f"at input {stats.input_size}, grid {stats.grid_size}x{stats.grid_size} "
        f"(cell {stats.cell_size:g} px), {measured} images measured:",
        f"too small       {stats.small}  (smaller side < {stats.min_face_size:g} px: ignored)",
        f"collisions      {stats.collisions}  in {stats.images_with_collisions} images "
        f"(faces lost to a larger face in the same cell)",
        "face size (sqrt(w*h) in cells):",
    ]
    total = max(sum(stats.size_counts), 1)
    for label, n in zip(size_bin_labels(), stats.size_counts):
        bar = "#" * round(40 * n / total)
        lines.append(f"  {label:>9}  {n:7d}  {100 * n / total:5.1f}%  {bar}")
    return "\n".join(lines)


def split_records(config: Config, split: str = "train") -> Tuple[List[ImageRecord], int]:
    """Every Config.dataset source's `split` as read for stats: missing images left out.

    A source without splits is read whole (no hold-out); FORMAT= prefixes and
    Config.dataset_format choose the readers, Config.face_labels the labels read as faces.

    Returns:
        (the records of all sources in order, annotations the readers left out because
        their image was missing: `dataset_stats`'s `left_out`).
    """
    records, left_out = [], 0
    for source in parse_sources(config.dataset, config.dataset_format, "dataset"):
        loaded = read_source(source.path, split, source.fmt, skip_missing=True,
                             labels=config.face_labels or None, holdout=False)
        records.extend(loaded.records)
        left_out += loaded.missing_images
    return records, left_out
