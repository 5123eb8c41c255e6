"""Box utilities: the one place for box-format conversions, IoU and the letterbox mapping.

Formats used in the project:
- `xywh`: (x, y, w, h) with (x, y) the top-left corner, in pixels. The WIDER FACE format,
  and the format of every record and of every detection the project reports.
- `xyxy`: (x1, y1, x2, y2) corners, in pixels. Used for IoU, NMS and clipping.
Arrays are float32 of shape (N, 4) unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xywh -> (N, 4) xyxy (a new array)."""
    xyxy = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    return xyxy


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) xywh (a new array)."""
    xywh = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    xywh[:, 2:] -= xywh[:, :2]
    return xywh


def clip_xywh(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip (N, 4) xywh boxes to the image [0, width] x [0, height]; sizes may become 0."""
    # In place on one new array: this runs for every training sample, several times.
    xyxy = xywh_to_xyxy(boxes)
    limits = np.array([width, height, width, height], dtype=np.float32)
    np.minimum(np.maximum(xyxy, 0.0, out=xyxy), limits, out=xyxy)
    xyxy[:, 2:] -= xyxy[:, :2]
    return xyxy


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4), xyxy -> (N, M)."""
    a = np.asarray(a_xyxy, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """How an image of (width, height) pixels maps onto the square network input.

    input = original * scale + pad. With `keep_aspect` the scale is the same on both axes
    and the image is centred with padding; otherwise it is stretched (pad 0).
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    input_size: int
    content_width: int  # the resized image inside the input, before padding
    content_height: int

    @classmethod
    def fit(cls, width: int, height: int, input_size: int, keep_aspect: bool = True) -> "Letterbox":
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if not keep_aspect:
            s = input_size
            return cls(s / width, s / height, 0.0, 0.0, s, s, s)
        scale = input_size / max(width, height)
        new_w = min(input_size, max(1, round(width * scale)))
        new_h = min(input_size, max(1, round(height * scale)))
        # Scales from the rounded content size, so content edges map exactly onto pixels.
        return cls(
            new_w / width, new_h / height,
            float((input_size - new_w) // 2), float((input_size - new_h) // 2),
            input_size, new_w, new_h,
        )

    def to_input(self, boxes_xywh: np.ndarray) -> np.ndarray:
        """Boxes in original pixels -> boxes in network-input pixels."""
        b = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4).copy()
        b[:, 0] = b[:, 0] * self.scale_x + self.pad_x
        b[:, 1] = b[:, 1] * self.scale_y + self.pad_y
        b[:, 2] *= self.scale_x
        b[:, 3] *= self.scale_y
        return b

    def to_original(self, boxes_xywh: np.ndarray) -> np.ndarray:
        """Boxes in network-input pixels -> boxes in original pixels (inverse of to_input)."""
        b = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4).copy()
        b[:, 0] = (b[:, 0] - self.pad_x) / self.scale_x
        b[:, 1] = (b[:, 1] - self.pad_y) / self.scale_y
        b[:, 2] /= self.scale_x
        b[:, 3] /= self.scale_y
        return b
