"""Drawing face boxes on an image, to check data and detections by eye.

Used by the batch generator's debug images, by detection output and by the TensorBoard
image summaries, so every picture of boxes in the project looks the same.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

# Ignored faces (too small, WIDER `invalid`, cut by a crop) are drawn in grey.
IGNORE_COLOR = (160, 160, 160)


def draw_boxes(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    scores: Optional[np.ndarray] = None,
    ignore: Optional[np.ndarray] = None,
    color: Sequence[int] = (0, 255, 0),
) -> np.ndarray:
    """Return a copy of `image_bgr` with the boxes drawn on it.

    Args:
        image_bgr: (H, W, 3) uint8 BGR image; not modified.
        boxes: (N, 4) x1, y1, x2, y2 boxes in the pixels of `image_bgr`.
        scores: optional (N,) scores, written above each box with two decimals.
        ignore: optional (N,) bool; True boxes are drawn in grey (`IGNORE_COLOR`).
        color: BGR colour of the other boxes.

    Returns:
        (H, W, 3) uint8 BGR image with the boxes drawn.
    """
    out = np.ascontiguousarray(image_bgr, dtype=np.uint8).copy()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(scores)} scores")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool).reshape(-1)
        if len(ignore) != len(boxes):
            raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(ignore)} ignore flags")
    # Lines one pixel wide on network inputs, thicker on photos, so both stay readable.
    thickness = max(1, round(min(out.shape[:2]) / 400))
    font_scale = max(0.3, min(out.shape[:2]) / 1200)
    face_color = tuple(int(c) for c in color)
    for i, box in enumerate(boxes):
        box_color = IGNORE_COLOR if ignore is not None and ignore[i] else face_color
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), box_color, thickness)
        if scores is not None:
            cv2.putText(
                out, f"{scores[i]:.2f}", (x1, max(y1 - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                font_scale, box_color, thickness, cv2.LINE_AA,
            )
    return out


# One colour per landmark, in data.landmarks.LANDMARK_NAMES order (BGR): the eyes red and
# blue, the nose green, the mouth corners magenta and yellow, so a swapped left and right
# shows at a glance.
LANDMARK_COLORS = ((0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255))


def draw_points(image_bgr: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Return a copy of `image_bgr` with each face's landmarks drawn as filled dots.

    Args:
        image_bgr: (H, W, 3) uint8 BGR image; not modified.
        points: (N, 5, 2) x, y pixels of `image_bgr` (`data.landmarks.LANDMARK_NAMES`
            order, coloured by LANDMARK_COLORS); NaN points are not drawn.

    Returns:
        (H, W, 3) uint8 BGR image with the points drawn.
    """
    out = np.ascontiguousarray(image_bgr, dtype=np.uint8).copy()
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[1:] != (len(LANDMARK_COLORS), 2):
        raise ValueError(f"draw_points: points must be (N, {len(LANDMARK_COLORS)}, 2), got "
                         f"{points.shape}")
    radius = max(1, round(min(out.shape[:2]) / 300))
    for face in points:
        for (x, y), color in zip(face, LANDMARK_COLORS):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(out, (int(round(x)), int(round(y))), radius, color, -1, cv2.LINE_AA)
    return out
