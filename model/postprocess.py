"""Post-processing: network grid -> face boxes in the pixels of the original image.

The one path from a prediction to detections, shared by `detect.py`, the validation
callback and evaluation:

    decode_grid (cells -> boxes in input pixels)  ->  Letterbox.to_original  ->  clip
    ->  drop empty boxes  ->  greedy NMS  ->  Detections

NMS runs after the mapping back so that overlaps are measured in the geometry the
faces are evaluated in (a stretched, non-letterboxed input distorts IoU otherwise).
"""

from __future__ import annotations

from typing import List, NamedTuple, Sequence

import numpy as np

from config import Config
from data.boxes import Letterbox, clip_xywh, iou_matrix, xywh_to_xyxy
from data.grid import decode_grid


# Boxes whose IoUs `nms` computes at once (a 64 x N matrix at most).
_NMS_BLOCK = 64


class Detections(NamedTuple):
    """Faces found in one image.

    boxes: (N, 4) float32 xywh in the pixels of the original image, clipped to it.
    scores: (N,) float32 face scores in [0, 1], sorted in descending order.
    """

    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


def nms(
    boxes_xywh: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = Config.nms_iou,
    max_detections: int = Config.max_detections,
) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes_xywh: (N, 4) boxes.
        scores: (N,) scores.
        iou_threshold: a box overlapping an already kept, higher-scored box by more than
            this IoU is suppressed.
        max_detections: at most this many indices are returned (<= 0: no cap).

    Returns:
        (K,) int64 indices into `boxes_xywh`, by descending score (ties keep input order).
    """
    boxes = xywh_to_xyxy(boxes_xywh)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    cap = max_detections if max_detections > 0 else len(scores)
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    alive = np.ones(len(order), dtype=bool)  # not suppressed (yet)
    keep = []
    # IoUs for a block of boxes at a time, against the boxes still alive after them: a
    # kept box suppresses the lower-scored ones it overlaps. NumPy does the arithmetic,
    # Python one cheap step per box: ~0.2 ms for the 49 cells of a 7x7 grid, where one
    # IoU call per kept box costs ~70 us each.
    for start in range(0, len(order), _NMS_BLOCK):
        rows = start + np.flatnonzero(alive[start : start + _NMS_BLOCK])
        if rows.size == 0:
            continue
        cols = start + np.flatnonzero(alive[start:])
        above = iou_matrix(boxes[rows], boxes[cols]) > iou_threshold
        for r, i in enumerate(rows):
            if not alive[i]:
                continue
            keep.append(order[i])
            if len(keep) >= cap:
                return np.asarray(keep, dtype=np.int64)
            alive[cols[above[r]]] = False
    return np.asarray(keep, dtype=np.int64)


def original_size(letterbox: Letterbox) -> tuple:
    """(width, height) of the image that `letterbox` was fitted to, in pixels."""
    return (
        int(round(letterbox.content_width / letterbox.scale_x)),
        int(round(letterbox.content_height / letterbox.scale_y)),
    )


def detect_from_grid(
    grid: np.ndarray,
    letterbox: Letterbox,
    score_threshold: float = Config.score_threshold,
    nms_iou: float = Config.nms_iou,
    max_detections: int = Config.max_detections,
) -> Detections:
    """Detections of one image from its predicted grid.

    Args:
        grid: (G, G, 5) network output for the image (class channel = face score).
        letterbox: how the original image was mapped onto the network input
            (from `data.image.prepare_image`).
        score_threshold: cells scoring below this are dropped.
        nms_iou: IoU above which a lower-scored overlapping box is suppressed.
        max_detections: cap on the number of detections (<= 0: no cap).

    Returns:
        Detections with boxes (N, 4) xywh in original-image pixels, clipped to the image,
        and scores (N,), by descending score.
    """
    boxes, scores = decode_grid(grid, letterbox.input_size, score_threshold)
    if len(boxes) == 0:
        return Detections.empty()
    width, height = original_size(letterbox)
    boxes = clip_xywh(letterbox.to_original(boxes), width, height)
    # A box predicted entirely inside the letterbox padding clips to nothing.
    visible = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    boxes, scores = boxes[visible], scores[visible]
    keep = nms(boxes, scores, nms_iou, max_detections)
    return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32))


def detect_batch(
    grids: np.ndarray,
    letterboxes: Sequence[Letterbox],
    score_threshold: float = Config.score_threshold,
    nms_iou: float = Config.nms_iou,
    max_detections: int = Config.max_detections,
) -> List[Detections]:
    """`detect_from_grid` for a batch: grids (B, G, G, 5) and B letterboxes -> B Detections."""
    grids = np.asarray(grids, dtype=np.float32)
    if grids.ndim != 4 or len(grids) != len(letterboxes):
        raise ValueError(
            f"detect_batch: expected (B, G, G, 5) grids and B letterboxes, got grids of "
            f"shape {grids.shape} and {len(letterboxes)} letterboxes"
        )
    return [
        detect_from_grid(g, lb, score_threshold, nms_iou, max_detections)
        for g, lb in zip(grids, letterboxes)
    ]
