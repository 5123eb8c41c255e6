"""Post-processing: network grid -> face boxes in the pixels of the original image.

The one path from a prediction to detections, shared by `detect.py`, the validation
callback and evaluation:

    decode_levels (cells of every grid level -> corner boxes in input pixels)
    ->  InputMapping.to_original
    ->  clip to the image (its size as the InputMapping holds it)  ->  drop empty boxes
    ->  greedy NMS  ->  Detections (corners x1, y1, x2, y2 in original pixels)

A network with landmarks (15 channels per cell, `data.grid`) gives each box its five
points too: decoded with the box, mapped back by `InputMapping.points_to_original`, kept or
dropped with their box (not clipped: a point of a face at the border may lie outside).

NMS runs after the mapping back so that overlaps are measured in the geometry the
faces are evaluated in (a stretched, non-letterboxed input distorts IoU otherwise), and
once over the boxes of every level: a face two levels both see is kept once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

from config import Config
from data.landmarks import NUM_LANDMARKS
from data.boxes import InputMapping, box_iou, box_sizes, clip_boxes
from data.grid import decode_levels, landmarks_of_cells, output_has_landmarks


# Boxes whose IoUs `nms` computes at once (a 64 x N matrix at most).
_NMS_BLOCK = 64


@dataclass(frozen=True)
class DetectSpec:
    """How cells become detections: the post-processing's part of the configuration.

    Attributes:
        score_threshold: cells scoring below this are dropped.
        nms_iou: IoU above which a lower-scored overlapping box is suppressed.
        max_detections: cap on the detections of one image (<= 0: no cap).

    A model's own threshold, chosen on validation, is `FaceDetector.detect_spec`'s; the
    defaults here are Config's.
    """

    score_threshold: float = Config.score_threshold
    nms_iou: float = Config.nms_iou
    max_detections: int = Config.max_detections

    @classmethod
    def from_config(cls, config: Config, score_threshold: Optional[float] = None
                    ) -> "DetectSpec":
        """`config`'s nms_iou and max_detections with its score_threshold, or this one."""
        threshold = config.score_threshold if score_threshold is None else score_threshold
        return cls(float(threshold), config.nms_iou, config.max_detections)

    def replace(self, **changes) -> "DetectSpec":
        return dataclasses.replace(self, **changes)


class Detections(NamedTuple):
    """Faces found in one image.

    boxes: (N, 4) float32 x1, y1, x2, y2 in the pixels of the original image, clipped to
        it (detect.py and the submission files write them as x y w h).
    scores: (N,) float32 face scores in [0, 1], sorted in descending order.
    landmarks: (N, 5, 2) float32 x, y of each face's five points in original-image pixels
        (`data.landmarks.LANDMARK_NAMES` order), or None from a model without landmarks.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: Optional[np.ndarray] = None

    @classmethod
    def empty(cls, landmarks: bool = False) -> "Detections":
        """No faces; with `landmarks` an empty (0, 5, 2) landmarks array, else None."""
        points = np.zeros((0, NUM_LANDMARKS, 2), np.float32) if landmarks else None
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), points)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = Config.nms_iou,
    max_detections: int = Config.max_detections,
) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: (N, 4) x1, y1, x2, y2 boxes.
        scores: (N,) scores.
        iou_threshold: a box overlapping an already kept, higher-scored box by more than
            this IoU is suppressed.
        max_detections: at most this many indices are returned (<= 0: no cap).

    Returns:
        (K,) int64 indices into `boxes`, by descending score (ties keep input order).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
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
        above = box_iou(boxes[rows, None], boxes[None, cols]) > iou_threshold
        for r, i in enumerate(rows):
            if not alive[i]:
                continue
            keep.append(order[i])
            if len(keep) >= cap:
                return np.asarray(keep, dtype=np.int64)
            alive[cols[above[r]]] = False
    return np.asarray(keep, dtype=np.int64)


def detect_from_grid(
    grid: np.ndarray,
    mapping: InputMapping,
    spec: DetectSpec = DetectSpec(),
    grid_sizes=None,
) -> Detections:
    """Detections of one image from its predicted grid.

    Args:
        grid: (G, G, 5) network output for the image (class channel = face score), or
            the (N, 5) cells of several levels; 15 channels for a network with landmarks
            (the output's shape says it).
        mapping: how the original image was mapped onto the network input
            (from `data.image.prepare_image`).
        spec: the score threshold, NMS IoU and detection cap (`DetectSpec`).
        grid_sizes: each level's cells per side, finest first, for (N, 5) cells
            (`GridSpec.grid_sizes`); None for one (G, G, 5) grid.

    Returns:
        Detections with boxes (N, 4) x1, y1, x2, y2 in original-image pixels, clipped to
        the image, and scores (N,), by descending score; with landmarks their (N, 5, 2)
        points in original-image pixels.
    """
    grid = np.asarray(grid, dtype=np.float32)
    if grid_sizes is None:
        grid_sizes = grid.shape[:1]  # one (G, G, 5) grid (decode_grid checks its shape)
    try:
        landmarks = output_has_landmarks(grid.shape[-1])
    except ValueError:
        landmarks = False  # decode_levels names the shape
    # The points of the boxes NMS keeps are decoded after it, from their cells.
    decoded = decode_levels(grid, mapping.input_size, grid_sizes, spec.score_threshold,
                            with_cells=landmarks)
    boxes, scores = decoded[:2]
    if len(boxes) == 0:
        return Detections.empty(landmarks)
    boxes = clip_boxes(mapping.to_original(boxes), mapping.width, mapping.height)
    # A box predicted entirely inside the letterbox padding clips to nothing.
    visible = (box_sizes(boxes) > 0).all(axis=1)
    boxes, scores = boxes[visible], scores[visible]
    keep = nms(boxes, scores, spec.nms_iou, spec.max_detections)
    points = None
    if landmarks:
        cells = decoded[2][visible][keep]
        points = mapping.points_to_original(
            landmarks_of_cells(grid, mapping.input_size, grid_sizes, cells)).astype(np.float32)
    return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), points)


def detect_batch(
    grids: np.ndarray,
    mappings: Sequence[InputMapping],
    spec: DetectSpec = DetectSpec(),
    grid_sizes=None,
) -> List[Detections]:
    """`detect_from_grid` for a batch: grids (B, G, G, C) (or the (B, N, C) cells of the
    levels `grid_sizes`; C = 5, or 15 with landmarks) and B mappings -> B Detections."""
    grids = np.asarray(grids, dtype=np.float32)
    rank = 4 if grid_sizes is None or len(grid_sizes) == 1 else 3
    if grids.ndim != rank or len(grids) != len(mappings):
        expected = "(B, G, G, 5) grids" if rank == 4 else "(B, N, 5) cells"
        raise ValueError(
            f"detect_batch: expected {expected} and B mappings, got grids of "
            f"shape {grids.shape} and {len(mappings)} mappings"
        )
    return [detect_from_grid(g, lb, spec, grid_sizes) for g, lb in zip(grids, mappings)]
