"""Image reading and the network's input form: letterbox resize and MobileNetV2 scaling."""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from data.boxes import Letterbox
from errors import ImageError

# Padding value: mid-grey, which the network's input scaling maps to ~0 in [-1, 1].
PAD_VALUE = 127
# File extensions read as images (lower case), by folder scans and annotation readers.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
    """BGR uint8 (..., H, W, 3) -> the network's input form: RGB uint8, contiguous.

    The network scales its uint8 input to MobileNetV2's [-1, 1] itself (its first layer,
    `model.network.INPUT_SCALING`), so no caller can feed it unscaled pixels, and batches
    stay a quarter of the float32 size on their way to the device or between processes.
    """
    image = np.ascontiguousarray(image_bgr, dtype=np.uint8)
    if image.size == 0:
        return image[..., ::-1].copy()
    # OpenCV's SIMD channel swap: copying the reversed view `[..., ::-1]` is 2-5x slower.
    # A batch (B, H, W, 3) is swapped as one (B*H, W, 3) image.
    return cv2.cvtColor(image.reshape(-1, *image.shape[-2:]), cv2.COLOR_BGR2RGB).reshape(image.shape)


def prepare_image(image_bgr: np.ndarray, input_size: int, keep_aspect: bool = True):
    """Original BGR image -> (network input (S, S, 3) RGB uint8, Letterbox to map boxes back)."""
    h, w = image_bgr.shape[:2]
    letterbox = Letterbox.fit(w, h, input_size, keep_aspect)
    return to_network_input(letterbox_image(image_bgr, letterbox)), letterbox


def image_files(folder: str, extensions=IMAGE_EXTENSIONS) -> list:
    """Sorted image files under `folder` (recursive), by extension."""
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(extensions))
    return sorted(found)


def read_image_size(path: str) -> tuple:
    """(width, height) of an image file as `read_image` decodes it, from its header.

    JPEG and PNG sizes come from the first bytes of the file (a few microseconds, not a
    full decode). A JPEG's EXIF orientation 5-8 swaps the two, because OpenCV's decoder
    rotates such images upright. Other formats, and headers this parser does not
    understand, are decoded in full. Raises ImageError naming the file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            size = None
            if head[:2] == b"\xff\xd8":
                f.seek(2)
                size = _jpeg_size(f)
            elif head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                size = struct.unpack(">II", head[16:24])
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e.strerror})") from None
    if size is None or min(size) <= 0:
        height, width = read_image(path).shape[:2]
        return width, height
    return int(size[0]), int(size[1])


# Start-of-frame markers that carry the image size (not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f):
    """(width, height) from the segments after SOI, or None when they cannot be parsed."""
    orientation = 1
    try:
        while True:
            byte = f.read(1)
            while byte and byte != b"\xff":  # resynchronise on the next marker
                byte = f.read(1)
            while byte == b"\xff":  # fill bytes
                byte = f.read(1)
            if not byte:
                return None
            marker = byte[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                continue
            if marker in (0xD9, 0xDA):  # end of image / scan data before any frame header
                return None
            (length,) = struct.unpack(">H", f.read(2))
            if length < 2:
                return None
            if marker in _JPEG_SOF:
                _, height, width = struct.unpack(">BHH", f.read(5))
                return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            if marker == 0xE1:
                orientation = _exif_orientation(f.read(length - 2)) or orientation
            else:
                f.seek(length - 2, os.SEEK_CUR)
    except struct.error:
        return None


def _exif_orientation(app1: bytes):
    """The EXIF orientation tag (1-8) of an APP1 segment's payload, or None."""
    if not app1.startswith(b"Exif\x00\x00"):
        return None
    tiff = app1[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:  # Orientation, SHORT
                return struct.unpack(order + "H", entry[8:10])[0]
    except struct.error:
        return None
    return None
