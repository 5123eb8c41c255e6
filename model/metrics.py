"""Detection metrics: matching detections to faces, precision-recall, AP, the best-F1 cut.

Plain NumPy. `average_precision` is VOC-style AP at IoU 0.5 over any set of images (the
training validation callback's `val_ap`, and the score when no official .mat files
exist); `best_f1_threshold` is a validated detector's operating point; `pr_curve_counts`
feeds TensorBoard's PR curve. `voc_ap`, the area under a PR curve, is also the last step
of the official WIDER FACE protocol (`model.wider_protocol`).

Detections are per image `model.postprocess.Detections`, (boxes, scores) pairs or (N, 5)
arrays (`model.predictions.as_detections`); ground truth per image an ImageRecord or a
(boxes, ignore) pair, boxes x1, y1, x2, y2 (corners, `data.boxes`) in the same pixels.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from data.boxes import box_iou
from model.predictions import as_detections

IOU_THRESHOLD = 0.5  # the official protocol's (and VOC's) match threshold


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
    overlaps an ignored face that much, else a false positive (0). `boxes` (N, 4) and
    `gt_boxes` (M, 4) are x1, y1, x2, y2 in the same pixels.

    Returns:
        (N,) int8 flags, in the order of `boxes`.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    flags = np.zeros(len(scores), dtype=np.int8)
    if len(scores) == 0 or len(gt_boxes) == 0:
        return flags
    ious = box_iou(np.asarray(boxes).reshape(-1, 1, 4), np.asarray(gt_boxes).reshape(1, -1, 4))
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
        detections: per image, Detections (or a (boxes (N, 4) x1, y1, x2, y2, scores (N,))
            pair).
        ground_truths: per image (same order), an ImageRecord or a (boxes (M, 4) x1, y1,
            x2, y2, ignore (M,) bool) pair, in the same pixels as the detections.
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
        det = as_detections(det)
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
