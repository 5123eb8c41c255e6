"""Box utilities: the one place for box formats, IoU and the letterbox mapping.

One working format, from the annotation readers to the reported detections: corners
(x1, y1, x2, y2) in pixels, float32 arrays of shape (N, 4), named `boxes` with the
format in the docstring. Records (`ImageRecord.boxes`), the augmentation, the grid
encoder's input, `Detections.boxes`, the metrics' matching, validation and drawing all
hold corners; a box's size is `box_sizes` (x2 - x1, y2 - y1).

xywh (top-left x, y, width, height in pixels) exists only where a file format holds
it, converted once at that edge with `xywh_to_xyxy` / `xyxy_to_xywh`: the WIDER FACE
annotation files (data/wider.py), the official evaluation ground truth (.mat) and
submission files `x y w h score` (model/wider_protocol.py, model/predictions.py), COCO's
`bbox` (data/formats/coco.py), the RetinaFace label files (data/formats/retinaface.py,
data/landmark_files.py) and detect.py's `x y w h score` output and its JSON
(`model.detector.face_rows`). YOLO's normalised centre boxes and VOC's and labelme's
corners are turned into pixel corners by their readers. The grid's target channels
(h, w, yc, xc) are the network's own layout (data/grid.py), not a box format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _float_array(boxes) -> np.ndarray:
    """(N, 4) float array, a new one: float64 input stays float64, anything else float32."""
    values = np.asarray(boxes)
    dtype = np.float64 if values.dtype == np.float64 else np.float32
    return np.array(values, dtype=dtype).reshape(-1, 4)


def xywh_to_xyxy(boxes: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, 4) xywh -> (N, 4) corners x1, y1, x2, y2 (a new array of `dtype`).

    x2 = x + w is added in the input's precision (float64 numbers read from a file stay
    exact until the one cast to `dtype`).
    """
    corners = _float_array(boxes)
    corners[:, 2:] += corners[:, :2]
    return corners.astype(dtype, copy=False)


def xyxy_to_xywh(boxes: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, 4) corners x1, y1, x2, y2 -> (N, 4) xywh (a new array of `dtype`), for the
    file formats that hold xywh; w = x2 - x1 is taken in the input's precision."""
    xywh = _float_array(boxes)
    xywh[:, 2:] -= xywh[:, :2]
    return xywh.astype(dtype, copy=False)


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) widths and heights (x2 - x1, y2 - y1) of (N, 4) corner boxes."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return boxes[:, 2:] - boxes[:, :2]


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N, 4) corner boxes clipped to the image [0, width] x [0, height] (a new float32
    array); a box outside it keeps a size of 0 on that axis."""
    # In place on one new array: this runs for every training sample, several times.
    clipped = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    limits = np.array([width, height, width, height], dtype=np.float32)
    return np.minimum(np.maximum(clipped, 0.0, out=clipped), limits, out=clipped)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes `a` (..., 4) and `b` (..., 4), broadcast -> (...) float32.

    `box_iou(a[:, None], b[None])` is the (N, M) IoU of every box of `a` with every box
    of `b` (matching, NMS); two (N, 4) arrays give the (N,) IoUs of their rows paired
    (validation's cell IoU). Continuous pixels: a box with no area has IoU 0 with
    everything. The one NumPy IoU of the project; the official WIDER FACE protocol's
    inclusive-pixel (+1) overlap stays in `model.wider_protocol`.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


# Every band's first row is a multiple of this (the coarsest cell the backbone gives),
# so that each grid level's cells of the band are whole cells of the square's grid.
BAND_ALIGN = 32


def band_top(input_size: int, input_height: int) -> int:
    """First row, in the square input's pixels, of the `input_height`-row band a network
    of a band input sees (0 for the square itself): the band centred, its top rounded down
    to a multiple of BAND_ALIGN."""
    if not input_height or input_height == input_size:
        return 0
    return (input_size - input_height) // 2 // BAND_ALIGN * BAND_ALIGN


def content_size(width: float, height: float, input_size: int, letterbox: bool = True,
                 input_height: int = 0):
    """(width, height) in input pixels of a (width, height) image resized into the input:
    the S x S square, or its band of `input_height` rows; aspect kept (as large as fits)
    or stretched to fill it."""
    rows = input_height or input_size
    if not letterbox:
        return input_size, rows
    scale = min(input_size / width, rows / height)
    return (min(input_size, max(1, round(width * scale))),
            min(rows, max(1, round(height * scale))))


@dataclass(frozen=True)
class InputMapping:
    """How an image of (width, height) pixels maps onto the square network input: either
    letterboxed or stretched (the name says both; it was `Letterbox` before it stretched).

    input = original * scale + pad. With `letterbox` the scale is the same on both axes
    and the image is centred with padding; otherwise it is stretched (pad 0). Planned
    once per image (`fit`, or data.augment for a training crop) and passed along with it:
    `width` and `height` are that image's size as given, never re-derived.

    With `input_height` (a network of a band input, `data.grid.GridSpec.input_height`) the
    image goes into the band of that many rows of the square (`band_top`), centred there;
    the coordinates stay the square's, so boxes and grids are those of the square input.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    input_size: int
    content_width: int  # the resized image inside the input, before padding
    content_height: int
    width: int  # the image mapped (the original, or a training crop), its pixels
    height: int
    input_height: int = 0  # rows of the band the network sees; 0: the whole square

    @classmethod
    def fit(cls, width: int, height: int, input_size: int, letterbox: bool = True,
            input_height: int = 0) -> "InputMapping":
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        new_w, new_h = content_size(width, height, input_size, letterbox, input_height)
        rows = input_height or input_size
        # Scales from the rounded content size, so content edges map exactly onto pixels.
        return cls(
            new_w / width, new_h / height,
            float((input_size - new_w) // 2),
            float(band_top(input_size, input_height) + (rows - new_h) // 2),
            input_size, new_w, new_h, width, height, int(input_height),
        )

    def _scale_pad(self):
        scale = np.array([self.scale_x, self.scale_y] * 2, dtype=np.float32)
        pad = np.array([self.pad_x, self.pad_y] * 2, dtype=np.float32)
        return scale, pad

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) corner boxes in original pixels -> corner boxes in input pixels."""
        scale, pad = self._scale_pad()
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale + pad

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) corner boxes in input pixels -> corner boxes in original pixels (the
        inverse of `to_input`)."""
        scale, pad = self._scale_pad()
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - pad) / scale

    def points_to_input(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) x, y points in original pixels -> input pixels (a new float32 array),
        by the boxes' arithmetic; NaN (absent) points stay NaN."""
        scale = np.array([self.scale_x, self.scale_y], dtype=np.float32)
        pad = np.array([self.pad_x, self.pad_y], dtype=np.float32)
        return np.asarray(points, dtype=np.float32) * scale + pad

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) x, y points in input pixels -> original pixels (the inverse of
        `points_to_input`)."""
        scale = np.array([self.scale_x, self.scale_y], dtype=np.float32)
        pad = np.array([self.pad_x, self.pad_y], dtype=np.float32)
        return (np.asarray(points, dtype=np.float32) - pad) / scale
