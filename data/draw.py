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
