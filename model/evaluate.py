"""Evaluation: the official WIDER FACE protocol (easy / medium / hard AP) and plain AP.

Two measures:
- `wider_ap`: a port of the official MATLAB evaluation (eval_tools/evaluation.m, with
  read_pred.m, norm_score.m, image_evaluation.m, image_pr_info.m, dataset_pr_info.m,
  boxoverlap.m and VOCap; cross-checked against the public Python port
  wondervictor/WiderFace-Evaluation, evaluation.py). Reads the official ground truth
  (.mat) and the official submission layout `<dir>/<event>/<image>.txt`.
- `average_precision`: plain VOC-style AP at IoU 0.5 over any set of ImageRecords; the
  training validation callback's `val_ap`, and the score when no .mat files exist.

`evaluate_model` runs a network over images and produces predictions in original pixels,
written in the submission layout, so this project's models and any other detector's
prediction folders are scored the same way (`python evaluate.py --predictions DIR --gt DIR`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from cli import add_config_arguments, config_from_args, run_main
from config import Config
from data.boxes import iou_matrix, xywh_to_xyxy
from data.image import prepare_image, read_image
from errors import AnnotationError, ConfigError, DatasetError
from files import atomic_write_text
from model.postprocess import Detections, detect_batch

IOU_THRESHOLD = 0.5  # the official protocol's (and VOC's) match threshold
THRESH_NUM = 1000  # points of the official PR curve
SETTINGS = ("easy", "medium", "hard")
GT_FILE = "wider_face_val.mat"
SETTING_FILES = {s: f"wider_{s}_val.mat" for s in SETTINGS}

Predictions = Dict[str, Detections]  # prediction_key(image name) -> Detections


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------
def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under a PR curve with the precision envelope (VOC 2010+ all-point AP).

    The official WIDER FACE `VOCap`. Points are ordered by increasing recall; NaN
    precisions (0/0 at thresholds with no proposal) are skipped by the envelope, as
    MATLAB's `max` skips them.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, np.float64), [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def prediction_key(name: str) -> str:
    """An image's key in predictions: its dataset name without extension, '/'-separated.

    '0--Parade/0_Parade_marchingband_1_20.jpg' -> '0--Parade/0_Parade_marchingband_1_20',
    which is also the submission file's path (plus '.txt') and the .mat's event/file.
    """
    return os.path.splitext(name.replace("\\", "/"))[0]


def _as_detections(value) -> Detections:
    """Detections, a (boxes, scores) pair or an (N, 5) [x y w h score] array -> Detections.

    Kept in float64: scores read from files are compared with the protocol's thresholds
    as the official code does, in double precision.
    """
    if isinstance(value, tuple) and len(value) == 2:
        boxes, scores = value
    else:
        rows = np.asarray(value, dtype=np.float64).reshape(-1, 5)
        boxes, scores = rows[:, :4], rows[:, 4]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    return Detections(boxes, scores)


def _detections_for(keys: Sequence[str], predictions: Mapping, allow_missing: bool, source: str):
    """The detections of each key; DatasetError naming the first missing image."""
    lookup = {prediction_key(k): v for k, v in predictions.items()}
    missing = [k for k in keys if k not in lookup]
    if missing and not allow_missing:
        raise DatasetError(
            f"{source}: no predictions for {len(missing)} of {len(keys)} images "
            f"(first: {missing[0]}.txt); the protocol needs one file per image, "
            "empty ones included"
        )
    return [_as_detections(lookup[k]) if k in lookup else Detections.empty() for k in keys]


# --------------------------------------------------------------------------------------
# Plain AP (validation metric, evaluation without .mat files)
# --------------------------------------------------------------------------------------
def _gt_arrays(gt):
    """An ImageRecord or a (boxes, ignore) pair -> (boxes (N, 4), ignore (N,) bool)."""
    if isinstance(gt, tuple):
        boxes, ignore = gt
    else:
        boxes, ignore = gt.boxes, gt.ignore
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    if len(ignore) != len(boxes):
        raise ValueError(f"{len(boxes)} ground-truth boxes but {len(ignore)} ignore flags")
    return boxes, ignore


def match_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
) -> np.ndarray:
    """Greedy matching of one image's detections to its faces, best score first.

    A detection is a true positive (1) if it overlaps a not yet matched valid face by
    IoU >= `iou_threshold` (the highest-IoU such face is taken), else ignored (-1) if it
    overlaps an ignored face that much, else a false positive (0).

    Returns:
        (N,) int8 flags, in the order of `boxes`.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    flags = np.zeros(len(scores), dtype=np.int8)
    if len(scores) == 0 or len(gt_boxes) == 0:
        return flags
    ious = iou_matrix(xywh_to_xyxy(boxes), xywh_to_xyxy(gt_boxes))
    ignored_hit = (ious[:, gt_ignore] >= iou_threshold).any(axis=1)
    ious[:, gt_ignore] = -1.0  # ignored faces never become matches
    # Only detections reaching some valid face need the sequential greedy pass.
    reaches = ious.max(axis=1) >= iou_threshold
    flags[~reaches & ignored_hit] = -1
    matched = np.zeros(len(gt_boxes), dtype=bool)
    order = np.argsort(-scores, kind="stable")
    for d in order[reaches[order]]:
        overlaps = np.where(matched, -1.0, ious[d])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            flags[d] = 1
            matched[best] = True
        elif ignored_hit[d]:
            flags[d] = -1
    return flags


def average_precision(
    detections: Sequence,
    ground_truths: Sequence,
    iou_threshold: float = IOU_THRESHOLD,
    return_recall: bool = False,
):
    """VOC-style AP over all faces of a set of images.

    Args:
        detections: per image, Detections (or a (boxes (N, 4) xywh, scores (N,)) pair).
        ground_truths: per image (same order), an ImageRecord or a
            (boxes (M, 4) xywh, ignore (M,) bool) pair, in the same pixels as the detections.
        iou_threshold: match threshold.
        return_recall: also return the recall over all detections given.

    Detections are matched per image (`match_detections`); those matching an ignored face
    count neither as true nor as false positives. The ranked list over all images gives the
    PR curve, whose all-point interpolated area (`voc_ap`) is returned. 0.0 when there is
    no valid face.

    Returns:
        AP, or (AP, recall) with `return_recall`.
    """
    scores, flags, num_faces = _ranked_matches(detections, ground_truths, iou_threshold)
    if num_faces == 0:
        return (0.0, 0.0) if return_recall else 0.0
    tp = np.cumsum(flags == 1)
    fp = np.cumsum(flags == 0)
    recall = tp / num_faces
    precision = tp / np.maximum(tp + fp, 1)
    ap = voc_ap(recall, precision)
    if return_recall:
        return ap, float(recall[-1]) if len(recall) else 0.0
    return ap


def best_f1_threshold(
    detections: Sequence, ground_truths: Sequence, iou_threshold: float = IOU_THRESHOLD
) -> Dict[str, float]:
    """The score threshold with the best F1 (precision and recall at IoU `iou_threshold`)
    over a set of images: the operating point of a detector validated on them.

    Args and matching as `average_precision`.

    Returns:
        {'threshold', 'f1', 'precision', 'recall'}; all 0 when nothing matches.
    """
    scores, flags, num_faces = _ranked_matches(detections, ground_truths, iou_threshold)
    tp = np.cumsum(flags == 1)
    fp = np.cumsum(flags == 0)
    if num_faces == 0 or not len(tp) or tp[-1] == 0:
        return {"threshold": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    recall = tp / num_faces
    precision = tp / (tp + fp)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # A cut is only possible between different scores: the last detection of each score.
    last_of_score = np.append(scores[1:] != scores[:-1], True)
    k = int(np.flatnonzero(last_of_score)[np.argmax(f1[last_of_score])])
    return {"threshold": float(scores[k]), "f1": float(f1[k]),
            "precision": float(precision[k]), "recall": float(recall[k])}


def pr_curve_counts(detections: Sequence, ground_truths: Sequence,
                    iou_threshold: float = IOU_THRESHOLD, num_thresholds: int = 101
                    ) -> np.ndarray:
    """The precision-recall curve at `num_thresholds` score cuts evenly spaced in [0, 1].

    Args and matching as `average_precision`.

    Returns:
        (6, T) float32 rows: true positives, false positives, true negatives (always 0:
        a detector has no countable negatives), false negatives (valid faces missed),
        precision (1 where no detection is kept) and recall, of the detections scoring
        >= each threshold: the layout of TensorBoard's PR-curve summary.
    """
    scores, flags, num_faces = _ranked_matches(detections, ground_truths, iou_threshold)
    thresholds = np.linspace(0.0, 1.0, num_thresholds)
    # Detections at or above each threshold: scores are sorted descending.
    kept = np.searchsorted(-scores, -thresholds, side="right")
    tp_cum = np.concatenate([[0], np.cumsum(flags == 1)])
    tp = tp_cum[kept].astype(np.float64)
    fp = kept - tp
    fn = num_faces - tp
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = tp / max(num_faces, 1)
    return np.stack([tp, fp, np.zeros_like(tp), fn, precision, recall]).astype(np.float32)


def _ranked_matches(detections: Sequence, ground_truths: Sequence, iou_threshold: float):
    """(scores, flags 1 true / 0 false positive) of all counted detections, by descending
    score, and the number of valid faces: what AP and F1 are computed from."""
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"average_precision: {len(detections)} detection lists for "
            f"{len(ground_truths)} images"
        )
    all_scores, all_flags, num_faces = [], [], 0
    for det, gt in zip(detections, ground_truths):
        det = _as_detections(det)
        gt_boxes, gt_ignore = _gt_arrays(gt)
        num_faces += int((~gt_ignore).sum())
        all_flags.append(match_detections(det.boxes, det.scores, gt_boxes, gt_ignore, iou_threshold))
        all_scores.append(det.scores)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
    flags = np.concatenate(all_flags) if all_flags else np.zeros(0, np.int8)
    counted = flags >= 0
    scores, flags = scores[counted], flags[counted]
    order = np.argsort(-scores, kind="stable")
    return scores[order], flags[order], num_faces


# --------------------------------------------------------------------------------------
# The official submission layout
# --------------------------------------------------------------------------------------
def prediction_path(out_dir: str, name: str) -> str:
    """Where the submission file of image `name` lives: `<out_dir>/<event>/<image>.txt`."""
    return os.path.join(out_dir, *prediction_key(name).split("/")) + ".txt"


def write_predictions(out_dir: str, name: str, boxes: np.ndarray, scores: np.ndarray) -> str:
    """Write one image's detections in the official layout, atomically; return the path.

    File: the image name, the number of boxes, then one `x y w h score` line per box
    (original-image pixels). Images without detections still get a file (count 0).
    """
    det = _as_detections((boxes, scores))
    lines = [os.path.basename(name.replace("\\", "/")), str(len(det.scores))]
    lines += [
        f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.6f}"
        for (x, y, w, h), s in zip(det.boxes.tolist(), det.scores.tolist())
    ]
    path = prediction_path(out_dir, name)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_prediction_file(path: str) -> Detections:
    """Read one submission file -> Detections (float64, as the official reader's doubles).

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
    return Detections(values[:, :4], values[:, 4])


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


# --------------------------------------------------------------------------------------
# The official WIDER FACE protocol
# --------------------------------------------------------------------------------------
@dataclass
class WiderGroundTruth:
    """The official evaluation ground truth, flattened to one entry per image.

    names: '<event>/<file>' per image, in the .mat's order.
    boxes: per image, (N, 4) float64 xywh faces.
    keep: setting ('easy', 'medium', 'hard') -> per image, int64 0-based indices of the
        faces that setting counts (the .mat keep-lists are 1-based).
    """

    names: List[str]
    boxes: List[np.ndarray]
    keep: Dict[str, List[np.ndarray]]

    def num_faces(self, setting: str) -> int:
        return int(sum(len(k) for k in self.keep[setting]))


def find_gt_dir(root: str) -> Optional[str]:
    """The folder holding the official .mat files at or under a WIDER root, or None."""
    for candidate in (
        root,
        os.path.join(root, "eval_tools", "ground_truth"),
        os.path.join(root, "ground_truth"),
        os.path.join(root, "wider_face_split"),
    ):
        names = [GT_FILE] + list(SETTING_FILES.values())
        if all(os.path.isfile(os.path.join(candidate, n)) for n in names):
            return candidate
    return None


def _loadmat(path: str, keys: Sequence[str]) -> dict:
    from scipy.io import loadmat  # scipy is only needed for the official protocol

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: official ground-truth file not found")
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for a bad file; one line for all
        raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DatasetError(f"{path}: missing variable(s) {', '.join(missing)}")
    return mat


def load_wider_gt(gt_dir: str) -> WiderGroundTruth:
    """Read wider_face_val.mat and wider_{easy,medium,hard}_val.mat from `gt_dir`."""
    path = os.path.join(gt_dir, GT_FILE)
    mat = _loadmat(path, ("event_list", "file_list", "face_bbx_list"))
    names, boxes = [], []
    try:
        for i in range(len(mat["event_list"])):
            event = str(mat["event_list"][i][0][0])
            files = mat["file_list"][i][0]
            faces = mat["face_bbx_list"][i][0]
            for j in range(len(files)):
                names.append(f"{event}/{files[j][0][0]}")
                boxes.append(np.asarray(faces[j][0], dtype=np.float64).reshape(-1, 4))
    except (IndexError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: not the official ground-truth structure ({e})") from None

    keep = {}
    for setting, filename in SETTING_FILES.items():
        spath = os.path.join(gt_dir, filename)
        smat = _loadmat(spath, ("gt_list",))
        lists = []
        try:
            for i in range(len(smat["gt_list"])):
                lists.extend(smat["gt_list"][i][0][j][0] for j in range(len(smat["gt_list"][i][0])))
        except (IndexError, TypeError) as e:
            raise DatasetError(f"{spath}: not the official keep-list structure ({e})") from None
        if len(lists) != len(names):
            raise DatasetError(
                f"{spath}: keep-lists for {len(lists)} images but {path} has {len(names)}"
            )
        indices = []
        for name, faces, k in zip(names, boxes, lists):
            # Keep-lists are stored as uint8/uint16/double: widen before going 0-based.
            k = np.asarray(k, dtype=np.int64).reshape(-1) - 1
            if len(k) and (k.min() < 0 or k.max() >= len(faces)):
                raise DatasetError(
                    f"{spath}: {name}: keep index {k.max() + 1} outside its {len(faces)} faces"
                )
            indices.append(k)
        keep[setting] = indices
    return WiderGroundTruth(names, boxes, keep)


def _official_overlaps(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """(P, G) IoU as the official boxoverlap.m computes it: inclusive pixels (+1).

    The official code turns xywh into corners as x2 = x + w and then counts x2 - x1 + 1
    pixels; reproduced as is, since it shifts IoU for small faces.
    """
    p = np.asarray(pred_xywh, np.float64).copy()
    g = np.asarray(gt_xywh, np.float64).copy()
    p[:, 2:] += p[:, :2]
    g[:, 2:] += g[:, :2]
    w = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1
    h = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    inter = w * h
    area_p = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    area_g = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlaps = inter / (area_p[:, None] + area_g[None, :] - inter)
    overlaps[(w <= 0) | (h <= 0)] = 0.0
    return overlaps


def wider_ap(
    predictions: Union[str, Mapping],
    gt: Union[str, WiderGroundTruth],
    iou_threshold: float = IOU_THRESHOLD,
    allow_missing: bool = False,
    progress: bool = False,
) -> Dict[str, float]:
    """The official WIDER FACE easy / medium / hard AP.

    Args:
        predictions: a folder in the submission layout (`<event>/<image>.txt`), or a
            mapping from image name ('<event>/<image>' with or without extension) to
            Detections / (boxes, scores) / (N, 5) arrays, boxes xywh in the .mat's pixels.
        gt: a folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat, or a
            loaded WiderGroundTruth.
        iou_threshold: 0.5 in the protocol.
        allow_missing: score images without predictions as having no detection instead
            of raising DatasetError (the official code refuses them).

    Returns:
        {'easy': AP, 'medium': AP, 'hard': AP}.

    As the official code: each image's detections are sorted by score; scores are
    min-max normalised over all predictions of the set; a detection whose best-IoU face
    is outside the setting's keep-list is dropped (neither true nor false positive);
    a second detection of a found face is a false positive; images with no face are
    skipped; precision and recall are taken at 1,000 score thresholds and the area
    comes from `voc_ap`. One deliberate difference: the official normaliser starts
    from max 0 / min 1, which only matters for scores outside [0, 1]; here it is the
    true min-max, so any positive rescaling of the scores leaves AP unchanged. When all
    scores are equal (official: 0/0) every detection counts at every threshold.
    """
    if not isinstance(gt, WiderGroundTruth):
        gt = load_wider_gt(gt)
    source = predictions if isinstance(predictions, (str, os.PathLike)) else "predictions"
    if isinstance(predictions, (str, os.PathLike)):
        predictions = read_predictions(str(predictions), progress=progress, names=gt.names)
    dets = _detections_for(gt.names, predictions, allow_missing, str(source))

    # read_pred.m sorts each image's boxes by descending score; image_pr_info.m relies on it.
    orders = [np.argsort(-d.scores, kind="stable") for d in dets]
    boxes = [d.boxes[o].astype(np.float64) for d, o in zip(dets, orders)]
    scores = [d.scores[o].astype(np.float64) for d, o in zip(dets, orders)]
    nonempty = [s for s in scores if len(s)]
    if nonempty:
        low = min(float(s.min()) for s in nonempty)
        high = max(float(s.max()) for s in nonempty)
        span = high - low
        scores = [(s - low) / span if span > 0 else np.ones_like(s) for s in scores]

    # Thresholds 0.999, 0.998, ..., 0 as `1 - t / thresh_num` for t = 1..1000.
    thresholds = 1.0 - np.arange(1, THRESH_NUM + 1, dtype=np.float64) / THRESH_NUM
    curves = {s: np.zeros((THRESH_NUM, 2)) for s in SETTINGS}  # (proposals, recalled)
    iterator = tqdm(range(len(gt.names)), desc="wider_ap", unit="image", disable=not progress)
    for i in iterator:
        gt_boxes, pred_boxes, pred_scores = gt.boxes[i], boxes[i], scores[i]
        if len(gt_boxes) == 0 or len(pred_boxes) == 0:
            continue
        overlaps = _official_overlaps(pred_boxes, gt_boxes)
        best = overlaps.argmax(axis=1)  # first maximum, as MATLAB's max
        hit = overlaps[np.arange(len(best)), best] >= iou_threshold
        # Detections above each threshold: with scores sorted descending, a prefix.
        counts = np.searchsorted(-pred_scores, -thresholds, side="right")
        above = counts > 0
        last = counts[above] - 1
        for setting in SETTINGS:
            kept = np.zeros(len(gt_boxes), dtype=bool)
            kept[gt.keep[setting][i]] = True
            # image_evaluation.m, vectorised: the state it carries reduces to "which kept
            # faces were found so far" and "which detections hit a face not kept".
            proposal = ~(hit & ~kept[best])
            found = np.flatnonzero(hit & kept[best])
            first = np.zeros(len(best), dtype=bool)
            first[found[np.unique(best[found], return_index=True)[1]]] = True
            pred_recall = np.cumsum(first)
            curves[setting][above, 0] += np.cumsum(proposal)[last]
            curves[setting][above, 1] += pred_recall[last]

    result = {}
    for setting in SETTINGS:
        count_face = gt.num_faces(setting)
        if count_face == 0:
            result[setting] = 0.0
            continue
        proposals, recalled = curves[setting][:, 0], curves[setting][:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals
        result[setting] = voc_ap(recalled / count_face, precision)
    return result


# --------------------------------------------------------------------------------------
# Running a network
# --------------------------------------------------------------------------------------
def _predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    """A FaceDetector, a Keras model (predict_on_batch: compiled) or any callable."""
    if hasattr(model, "predict_grids"):
        return model.predict_grids
    if hasattr(model, "predict_on_batch"):
        return lambda x: np.asarray(model.predict_on_batch(x))
    return lambda x: np.asarray(model(x))


def evaluate_model(
    model,
    records: Sequence,
    config: Config,
    out_dir: Optional[str] = None,
    score_threshold: Optional[float] = None,
    progress: bool = True,
) -> Predictions:
    """Run a network over images and collect (and optionally write) its detections.

    Args:
        model: a `model.detector.FaceDetector`, a Keras model or any callable mapping a
            (B, S, S, 3) uint8 batch of network inputs to (B, G, G, 5) grids
            (S = config.input_size).
        records: ImageRecords; their images are read from `record.path`.
        config: input_size, letterbox, batch_size, nms_iou, max_detections, workers and
            eval_score_threshold.
        out_dir: if given, each image's detections are written there in the submission
            layout (`write_predictions`), also for images without detection.
        score_threshold: detections below it are dropped; default
            config.eval_score_threshold, low, as the protocol scores the whole PR curve.

    Returns:
        {prediction_key(record.name): Detections in original-image pixels}.
    """
    predict = _predictor(model)
    if score_threshold is None:
        score_threshold = config.eval_score_threshold

    def load(record):
        image = read_image(record.path, max_pixels=config.max_image_pixels)
        return prepare_image(image, config.input_size, config.letterbox)

    batches = [records[i : i + config.batch_size] for i in range(0, len(records), config.batch_size)]
    predictions: Predictions = {}
    bar = tqdm(total=len(records), desc="evaluate", unit="image", disable=not progress)
    # Images of the next batch are decoded in threads while the network runs this one, and
    # the submission files (each fsync'ed, a few ms) are written by a second pool meanwhile.
    writes = []
    with ThreadPoolExecutor(max_workers=max(2, config.workers)) as pool, \
            ThreadPoolExecutor(max_workers=4) as writer, bar:
        pending = [pool.submit(load, r) for r in batches[0]] if batches else []
        for b, batch in enumerate(batches):
            loaded = [f.result() for f in pending]
            if b + 1 < len(batches):
                pending = [pool.submit(load, r) for r in batches[b + 1]]
            inputs = np.stack([x for x, _ in loaded])
            grids = predict(inputs)
            if grids.ndim != 4 or grids.shape[0] != len(batch) or grids.shape[-1] != 5:
                raise ConfigError(
                    f"the network returned shape {grids.shape} for {inputs.shape} inputs; "
                    "expected (batch, G, G, 5)"
                )
            found = detect_batch(
                grids, [lb for _, lb in loaded], score_threshold, config.nms_iou,
                config.max_detections,
            )
            for record, det in zip(batch, found):
                predictions[prediction_key(record.name)] = det
                if out_dir is not None:
                    writes.append(writer.submit(
                        write_predictions, out_dir, record.name, det.boxes, det.scores
                    ))
            bar.update(len(batch))
        for done in writes:
            done.result()  # re-raise the first failed write
    return predictions


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def _records_from_gt_file(path: str) -> list:
    from data.wider import read_wider_annotations

    return read_wider_annotations(path, os.path.dirname(os.path.abspath(path))).records


def _print_result(result: dict) -> None:
    if "easy" in result:
        for setting in SETTINGS:
            print(f"{setting:<6} AP {result[setting]:.4f}")
    else:
        print(f"AP {result['ap']:.4f} (IoU {IOU_THRESHOLD}, {result['images']} images, "
              f"{result['faces']} valid faces)")


@contextlib.contextmanager
def _warnings_as_lines(prog: str):
    """Print the warnings raised inside (skipped prediction files) as one stderr line
    each, `<prog>: warning: <message>`, instead of Python's two-line form."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                print(f"{prog}: warning: {warning.message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score a checkpoint on a WIDER-layout split, or any prediction folder in "
        "the official layout, with the official WIDER FACE protocol (easy/medium/hard AP) "
        "when its .mat files are there, else with plain AP at IoU 0.5.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", metavar="CKPT",
                        help="a .keras checkpoint, .tflite file or SavedModel folder, or a "
                        "folder: its best model-*.keras")
    source.add_argument("--predictions", metavar="DIR",
                        help="a prediction folder in the official layout <event>/<image>.txt")
    parser.add_argument("--split", default="val", choices=("val", "train"),
                        help="split of --dataset to run --weights on (default: val)")
    parser.add_argument("--gt", metavar="PATH",
                        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat"
                        ", or a wider_face_*_bbx_gt.txt for plain AP (default with --weights: "
                        "found under --dataset)")
    parser.add_argument("--out", metavar="DIR",
                        help="with --weights: write the predictions here in the official layout")
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    add_config_arguments(parser, only=(
        "dataset", "letterbox", "batch_size", "nms_iou", "max_detections", "workers",
        "eval_score_threshold", "skip_missing_images", "max_image_pixels",
    ))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, evaluate, print the APs (and write --json); see build_parser."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    started = time.perf_counter()
    summary = {}
    gt_path = args.gt
    if args.weights:
        from data.wider import load_wider_split
        from model.detector import FaceDetector, resolve_weights

        weights = resolve_weights(args.weights, config.checkpoint_dir)
        detector = FaceDetector.load(weights, keep_aspect=config.letterbox)
        config = config.replace(input_size=detector.input_size, grid_size=detector.grid_size)
        records = load_wider_split(config.dataset, args.split, config.skip_missing_images).records
        predictions = evaluate_model(detector, records, config, args.out)
        if gt_path is None and args.split == "val":
            gt_path = find_gt_dir(config.dataset)
        summary.update(weights=weights, dataset=config.dataset, split=args.split)
        if args.out:
            summary["predictions"] = args.out
    else:
        if gt_path is None:
            raise ConfigError("--predictions needs --gt (the .mat folder or a bbx_gt.txt file)")
        if not os.path.isdir(args.predictions):
            raise DatasetError(f"{args.predictions}: predictions folder not found")
        # Read below, once the ground truth names the images: other .txt files are skipped.
        predictions = args.predictions
        records = None
        summary["predictions"] = args.predictions

    if gt_path is not None and os.path.isdir(gt_path):
        mat_dir = find_gt_dir(gt_path)
        if mat_dir is None:
            raise DatasetError(
                f"{gt_path}: no {GT_FILE} with wider_{{easy,medium,hard}}_val.mat here; "
                "pass a wider_face_*_bbx_gt.txt file as --gt for plain AP"
            )
        gt = load_wider_gt(mat_dir)
        # Images left out with --skip-missing-images have no predictions, by request.
        with _warnings_as_lines(build_parser().prog):
            result = wider_ap(predictions, gt, allow_missing=config.skip_missing_images,
                              progress=True)
        summary.update(protocol="wider", gt=mat_dir, images=len(gt.names), **result)
    else:
        if gt_path is not None:
            if not os.path.isfile(gt_path):
                raise DatasetError(f"{gt_path}: ground truth not found")
            records = _records_from_gt_file(gt_path)
            summary["gt"] = gt_path
        names = [prediction_key(r.name) for r in records]
        if isinstance(predictions, str):
            with _warnings_as_lines(build_parser().prog):
                predictions = read_predictions(predictions, progress=True, names=names)
        dets = _detections_for(names, predictions, False, summary.get("predictions", "predictions"))
        ap = average_precision(dets, records)
        faces = sum(r.num_faces for r in records)
        summary.update(protocol="plain", ap=ap, images=len(records), faces=faces)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    _print_result(summary)
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
