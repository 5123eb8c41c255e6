"""Image reading and the network's input form: letterbox resize and MobileNetV2 scaling."""

from __future__ import annotations

import os

import cv2
import numpy as np

from data.boxes import Letterbox
from errors import ImageError

# Padding value: mid-grey maps to ~0 in MobileNetV2's [-1, 1] range.
PAD_VALUE = 127


def read_image(path: str, reduce: int = 1) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); raise ImageError naming the file.

    `reduce` in (1, 2, 4, 8) decodes a JPEG directly at 1/reduce of its size, which is
    several times faster than decoding in full and resizing afterwards.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e.strerror})") from None
    return decode_image(data, path, reduce)


_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode_image(data: np.ndarray, path: str = "<bytes>", reduce: int = 1) -> np.ndarray:
    """Decode encoded image bytes (uint8 array) to BGR uint8; ImageError if corrupt."""
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce={reduce}: must be one of 1, 2, 4, 8")
    image = cv2.imdecode(data, _REDUCED_FLAGS[reduce]) if data.size else None
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


def letterbox_image(image: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """Resize a (H, W, 3) image into the (S, S, 3) network input as `letterbox` says."""
    resized = cv2.resize(
        image, (letterbox.content_width, letterbox.content_height), interpolation=cv2.INTER_LINEAR
    )
    if resized.shape[0] == resized.shape[1] == letterbox.input_size:
        return resized
    s = letterbox.input_size
    out = np.full((s, s, image.shape[2]), PAD_VALUE, dtype=image.dtype)
    x, y = int(letterbox.pad_x), int(letterbox.pad_y)
    out[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return out


def to_network_input(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 (..., H, W, 3) -> RGB float32 in MobileNetV2's range [-1, 1]."""
    rgb = image_bgr[..., ::-1].astype(np.float32)
    return rgb * (2.0 / 255.0) - 1.0


def prepare_image(image_bgr: np.ndarray, input_size: int, keep_aspect: bool = True):
    """Original BGR image -> (network input (S, S, 3) float32, Letterbox to map boxes back)."""
    h, w = image_bgr.shape[:2]
    letterbox = Letterbox.fit(w, h, input_size, keep_aspect)
    return to_network_input(letterbox_image(image_bgr, letterbox)), letterbox


def image_files(folder: str, extensions=(".jpg", ".jpeg", ".png", ".bmp", ".webp")) -> list:
    """Sorted image files under `folder` (recursive), by extension."""
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(extensions))
    return sorted(found)
