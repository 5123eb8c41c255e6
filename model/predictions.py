"""Predictions: a detector's faces per image, and the official submission files holding them.

A prediction set maps each image's key (`prediction_key`: its dataset name without
extension, '/'-separated) to its Detections, boxes x1, y1, x2, y2 in the original
image's pixels. On disk it is the official WIDER FACE submission layout, one file per
image, `<dir>/<event>/<image>.txt`: the image name, the number of boxes, one
`x y w h score` line per box (`write_predictions`, `read_predictions`: the one place
the corners and the file's xywh convert). Any detector's folder in that layout is
scored the same way as this project's (`model.wider_protocol.wider_ap`).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from tqdm import tqdm

from data.boxes import xywh_to_xyxy, xyxy_to_xywh
from common.errors import AnnotationError, DatasetError
from common.files import atomic_write_text
from model.postprocess import Detections

Predictions = Dict[str, Detections]  # prediction_key(image name) -> Detections


def prediction_key(name: str) -> str:
    """An image's key in predictions: its dataset name without extension, '/'-separated.

    '0--Parade/0_Parade_marchingband_1_20.jpg' -> '0--Parade/0_Parade_marchingband_1_20',
    which is also the submission file's path (plus '.txt') and the .mat's event/file.
    """
    return os.path.splitext(name.replace("\\", "/"))[0]


def as_detections(value) -> Detections:
    """Detections, a (boxes, scores) pair or an (N, 5) [x1 y1 x2 y2 score] array ->
    Detections (boxes x1, y1, x2, y2).

    Kept in float64: scores read from files are compared with the protocol's thresholds
    as the official code does, in double precision.
    """
    if isinstance(value, Detections):  # three fields: its landmarks are not scored
        boxes, scores = value.boxes, value.scores
    elif isinstance(value, tuple) and len(value) == 2:
        boxes, scores = value
    else:
        rows = np.asarray(value, dtype=np.float64).reshape(-1, 5)
        boxes, scores = rows[:, :4], rows[:, 4]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    return Detections(boxes, scores)


def detections_for(keys: Sequence[str], predictions: Mapping, allow_missing: bool,
                   source: str) -> List[Detections]:
    """The detections of each key, in order; an image without predictions has none with
    `allow_missing`, else DatasetError naming `source` (the folder) and the first one."""
    lookup = {prediction_key(k): v for k, v in predictions.items()}
    missing = [k for k in keys if k not in lookup]
    if missing and not allow_missing:
        raise DatasetError(
            f"{source}: no predictions for {len(missing)} of {len(keys)} images "
            f"(first: {missing[0]}.txt); the protocol needs one file per image, "
            "empty ones included"
        )
    return [as_detections(lookup[k]) if k in lookup else Detections.empty() for k in keys]


# --------------------------------------------------------------------------------------
# The official submission layout
# --------------------------------------------------------------------------------------
def prediction_path(out_dir: str, name: str) -> str:
    """Where the submission file of image `name` lives: `<out_dir>/<event>/<image>.txt`."""
    return os.path.join(out_dir, *prediction_key(name).split("/")) + ".txt"


def write_predictions(out_dir: str, name: str, boxes: np.ndarray, scores: np.ndarray) -> str:
    """Write one image's detections in the official layout, atomically; return the path.

    File: the image name, the number of boxes, then one `x y w h score` line per box
    (original-image pixels; `boxes` are (N, 4) x1, y1, x2, y2). Images without detections
    still get a file (count 0).
    """
    det = as_detections((boxes, scores))
    # w = x2 - x1 in the boxes' own precision (float32 detections round as they always did).
    xywh = xyxy_to_xywh(np.asarray(boxes).reshape(-1, 4), np.float64)
    lines = [os.path.basename(name.replace("\\", "/")), str(len(det.scores))]
    lines += [
        f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.6f}"
        for (x, y, w, h), s in zip(xywh.tolist(), det.scores.tolist())
    ]
    path = prediction_path(out_dir, name)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_prediction_file(path: str) -> Detections:
    """Read one submission file -> Detections (float64, as the official reader's doubles;
    the file's x y w h become x1, y1, x2, y2 with x2 = x + w, as the official code does).

    An empty file (0 bytes, or blank lines only) is an image without detections, as the
    official read_pred.m scores it. Raises AnnotationError naming the file and line if it
    is malformed: a count that is not a whole number (3.7, inf, 1e400), a box line that
    is not five numbers, a coordinate or score that is NaN or infinite, a negative size.
    """
    return _detections_from_lines(path, _prediction_lines(path))


def _detections_from_lines(path: str, lines: List[str]) -> Detections:
    """`read_prediction_file` on the file's lines, already read (`path` names it)."""
    if not lines:
        return Detections(np.zeros((0, 4), np.float64), np.zeros(0, np.float64))
    if len(lines) < 2:
        raise AnnotationError(
            f"{path}: expected the image name on line 1 and the box count on line 2"
        )
    count = _box_count(lines[1])
    if count is None:
        raise AnnotationError(
            f"{path}:2: expected the number of boxes (a whole number), got {lines[1]!r}"
        )
    rows = lines[2:]
    if len(rows) != count:
        raise AnnotationError(f"{path}:2: says {count} boxes but {len(rows)} box lines follow")
    values = np.zeros((count, 5), np.float64)
    for i, line in enumerate(rows):
        parts = line.split()
        try:
            if len(parts) != 5:
                raise ValueError
            values[i] = [float(p) for p in parts]
        except ValueError:
            raise AnnotationError(
                f"{path}:{i + 3}: expected 'x y w h score', got {line!r}"
            ) from None
        # A NaN score sorts anywhere and a NaN or infinite box overlaps nothing, or
        # everything: either would change the AP without a word.
        if not np.isfinite(values[i]).all():
            raise AnnotationError(
                f"{path}:{i + 3}: 'x y w h score' must be finite numbers, got {line!r}"
            )
        if values[i, 2] < 0 or values[i, 3] < 0:
            raise AnnotationError(
                f"{path}:{i + 3}: box width and height must be >= 0, got {line!r}"
            )
    return Detections(xywh_to_xyxy(values[:, :4], np.float64), values[:, 4])


def _prediction_lines(path: str) -> List[str]:
    """The stripped lines of a submission file, trailing blank lines dropped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _box_count(text: str) -> Optional[int]:
    """The box count of line 2: a whole, finite, non-negative number ('3', '3.0', '1e3'),
    else None ('3.7', 'inf', '1e400' which is inf as a float, '-1', 'many')."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or not value.is_integer():
        return None
    return int(value)


def _names_image(path: str, lines: List[str]) -> bool:
    """True when line 1 of a submission file names its image: the file's name with an
    image extension ('0_Parade_1.jpg' in 0_Parade_1.txt), or without one, with or
    without the event folder before it; an empty file names nothing and passes."""
    if not lines:
        return True
    stem = os.path.splitext(os.path.basename(path))[0]
    first = os.path.basename(lines[0].replace("\\", "/"))
    return first == stem or os.path.splitext(first)[0] == stem


def read_predictions(directory: str, progress: bool = False,
                     names: Optional[Sequence[str]] = None) -> Predictions:
    """Read a folder in the submission layout -> {'<event>/<image>': Detections}.

    A .txt file that is not a prediction file is skipped, and the skipped files are
    counted in one warning naming the first: with `names` (the ground truth's images,
    as `prediction_key` takes them), any file whose path is not one of them, as the
    official tool only opens the files of its ground truth; without, any file whose
    first line does not name its image (a README.txt beside the event folders).
    """
    if not os.path.isdir(directory):
        raise DatasetError(f"{directory}: predictions folder not found")
    paths = []
    for root, _, files in os.walk(directory):
        paths.extend(os.path.join(root, f) for f in files if f.endswith(".txt"))
    if not paths:
        raise DatasetError(f"{directory}: no prediction files (<event>/<image>.txt) found")
    # Both spellings: a .mat name has no extension, a bbx_gt.txt name has one.
    wanted = None if names is None else {k for n in names for k in (n, prediction_key(n))}
    predictions, skipped = {}, []
    for path in tqdm(sorted(paths), desc="read predictions", unit="file", disable=not progress):
        key = prediction_key(os.path.relpath(path, directory))
        if wanted is not None and key not in wanted:
            skipped.append(f"{path}: not an image of the ground truth")
            continue
        lines = _prediction_lines(path)
        if wanted is None and not _names_image(path, lines):
            skipped.append(f"{path}: line 1 does not name the image {os.path.basename(key)}")
            continue
        predictions[key] = _detections_from_lines(path, lines)
    if skipped:
        warnings.warn(f"{directory}: skipped {len(skipped)} .txt file(s) that are not "
                      f"prediction files (first: {skipped[0]})", stacklevel=2)
    return predictions
