"""Image reading and the network's input form: letterbox resize and MobileNetV2 scaling.

Reading guards against two kinds of bad file before they cost memory or train silently:
- an image whose header claims more than `max_pixels` pixels (Config.max_image_pixels)
  is refused from its header, before decoding: a JPEG claiming 65000x65000 crashes
  OpenCV's decoder, one claiming 30000x30000 takes ~6 GB and 90 s to decode. JPEG, PNG,
  BMP and WebP headers are parsed here; other formats are checked after decoding (and
  OpenCV refuses anything over its own OPENCV_IO_MAX_IMAGE_PIXELS, 2**30 by default).
- a truncated file: a JPEG without its end-of-image marker, or one whose data ends before
  the rows its header claims (libjpeg fills the rest with flat grey 128), warns with a
  `TruncatedImageWarning` naming the file, since the decoded picture is partly made up;
  when the decoder refuses it, the ImageError says why.
"""

from __future__ import annotations

import os
import struct
import warnings
from typing import Optional, Tuple

import cv2
import numpy as np

from data.boxes import InputMapping, band_top
from common.errors import ImageError

# The network's input form, which `to_network_input` makes: the one statement of it (the
# network's Input, every model's contract and the runtimes' checks read these).
INPUT_DTYPE = "uint8"
CHANNEL_ORDER = "RGB"

# Padding value: mid-grey, which the network's input scaling maps to ~0 in [-1, 1].
PAD_VALUE = 127
# File extensions read as images (lower case), by folder scans and annotation readers.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Default pixel limit of read_image / decode_image, and Config.max_image_pixels' default
# (config.py says why this many).
MAX_IMAGE_PIXELS = 100_000_000
# libjpeg's value for the pixels of blocks it has no data for (zero coefficients).
_JPEG_FILL = 128
_PNG_IEND = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC, its last 8 bytes


class TruncatedImageWarning(UserWarning):
    """An image decoded although its file is cut short: part of the picture is filler."""


def read_image(path: str, reduce: int = 1, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); raise ImageError naming the file.

    `reduce` in (1, 2, 4, 8) decodes a JPEG directly at 1/reduce of its size, which is
    several times faster than decoding in full and resizing afterwards. `max_pixels`
    (default MAX_IMAGE_PIXELS) caps width x height as the file states it; see the module
    docstring for that and for the TruncatedImageWarning.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e.strerror})") from None
    return decode_image(data, path, reduce, max_pixels)


_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode_image(data: np.ndarray, path: str = "<bytes>", reduce: int = 1,
                 max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode encoded image bytes (uint8 array) to BGR uint8; ImageError if corrupt.

    Refuses images over `max_pixels` (default MAX_IMAGE_PIXELS) pixels, from the header
    when its format is parsed here; warns TruncatedImageWarning for a truncated file.
    """
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce={reduce}: must be one of 1, 2, 4, 8")
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    size = _header_size(_BufferReader(data)) if data.size else None
    if size is not None:
        check_pixels(path, size[0], size[1], limit)
    try:
        image = cv2.imdecode(data, _REDUCED_FLAGS[reduce]) if data.size else None
    except cv2.error as e:  # OpenCV's own size limit, or a decoder's assertion
        text = str(e).strip().splitlines()[0] if str(e).strip() else "cv2.error"
        if "CV_IO_MAX_IMAGE_PIXELS" in text:
            opencv_limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**30))
            raise ImageError(f"{path}: over OpenCV's pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS="
                             f"{opencv_limit}); not decoded") from None
        raise ImageError(f"{path}: not a readable image ({text})") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode this image") from None
    truncated = _truncation(data)
    if image is None or image.size == 0:
        reason = f"; {truncated}" if truncated else ""
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format{reason})")
    if size is None:  # a format whose header is not parsed here: check what was decoded
        h, w = image.shape[:2]
        check_pixels(path, w * reduce, h * reduce, limit)
    if truncated is None and data[:2].tobytes() == b"\xff\xd8" and _flat_bottom_row(image):
        truncated = (f"its bottom row is flat grey {_JPEG_FILL}, libjpeg's fill for missing "
                     "data: the file holds fewer rows than its header claims")
    if truncated:
        warnings.warn(f"{path}: truncated image ({truncated}); part of the picture is "
                      "filler", TruncatedImageWarning, stacklevel=3)
    return image


def check_pixels(path: str, width: int, height: int, limit: int) -> None:
    """ImageError naming the file when width x height is over `limit` pixels."""
    if width * height > limit:
        raise ImageError(
            f"{path}: {width}x{height} image ({width * height / 1e6:.1f} megapixels) is over "
            f"max_image_pixels={limit} ({limit / 1e6:g} megapixels); not decoded"
        )


def _truncation(data: np.ndarray) -> Optional[str]:
    """Why the encoded bytes look cut short (JPEG without EOI, PNG without IEND), or None.

    The common case, the marker in the last bytes, costs nothing; otherwise (data after
    the end marker, as some cameras append, or a real truncation) the bytes after the
    first scan are searched once. An end marker cannot occur inside JPEG scan data
    (0xFF is stuffed there), so finding none after the scan start means truncation.
    """
    if data[:2].tobytes() == b"\xff\xd8":
        if data[-2:].tobytes() == b"\xff\xd9":
            return None
        scan = _jpeg_scan_start(_BufferReader(data))
        if scan is None:  # no scan found: corrupt, not (recognisably) truncated
            return None
        if data[scan:].tobytes().find(b"\xff\xd9") < 0:
            return "JPEG without its end-of-image marker"
        return None
    if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
        if data[-8:].tobytes() == _PNG_IEND or data.tobytes().rfind(_PNG_IEND) >= 0:
            return None
        return "PNG without its IEND chunk"
    return None


def _flat_bottom_row(image: np.ndarray) -> bool:
    """True when the last pixel row is exactly libjpeg's filler grey in every channel.

    libjpeg-turbo leaves the blocks it has no data for at zero coefficients, which decode
    to exactly 128: a JPEG whose data stops early (its end marker present) decodes with a
    flat grey bottom and no error. Real photos practically never end in a row of exact
    128s after lossy compression.
    """
    return bool(image.shape[0] > 0 and (image[-1] == _JPEG_FILL).all())


def resize_to_input(image: np.ndarray, mapping: InputMapping) -> np.ndarray:
    """Resize a (H, W, 3) image into the network input as `mapping` says: (S, S, 3), or
    the (input_height, S, 3) band of the square for a band input."""
    resized = cv2.resize(
        image, (mapping.content_width, mapping.content_height), interpolation=cv2.INTER_LINEAR
    )
    s = mapping.input_size
    rows = mapping.input_height or s
    if resized.shape[:2] == (rows, s):
        return resized
    out = np.full((rows, s, image.shape[2]), PAD_VALUE, dtype=image.dtype)
    x = int(mapping.pad_x)
    y = int(mapping.pad_y) - band_top(s, mapping.input_height)
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


def prepare_image(image_bgr: np.ndarray, input_size: int, letterbox: bool = True,
                  input_height: int = 0):
    """Original BGR image -> (network input (S, S, 3) RGB uint8, or the (input_height, S,
    3) band of a band input, InputMapping to map boxes back).

    Detection's path, from the image decoded in full; training decodes JPEGs at reduced
    size first (`data.augment.load_training_sample` says why the two differ, with their figures)."""
    h, w = image_bgr.shape[:2]
    mapping = InputMapping.fit(w, h, input_size, letterbox, input_height)
    return to_network_input(resize_to_input(image_bgr, mapping)), mapping


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
            size = _header_size(f, jpeg_png_only=True)
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e.strerror})") from None
    if size is None:
        height, width = read_image(path).shape[:2]
        return width, height
    return size


class _BufferReader:
    """The read / seek / tell of a file over an in-memory uint8 array, without copying it."""

    def __init__(self, data: np.ndarray):
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else min(self._pos + n, len(self._view))
        chunk = self._view[self._pos:end].tobytes()
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _header_size(f, jpeg_png_only: bool = False) -> Optional[Tuple[int, int]]:
    """(width, height) as the decoder will produce it, from the header of a file object
    at its start; None for other formats or headers this parser does not understand.

    JPEG (SOF segment; EXIF orientation 5-8 swaps the two, as OpenCV rotates those
    upright), PNG (IHDR), and unless `jpeg_png_only`, BMP (DIB header) and WebP (VP8,
    VP8L or VP8X chunk): for those the pixel count is sure, the orientation OpenCV
    decodes them in is not checked here.
    """
    head = f.read(32)
    size = None
    try:
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            size = _jpeg_size(f)
        elif head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            size = struct.unpack(">II", head[16:24])
        elif jpeg_png_only:
            return None
        elif head[:2] == b"BM" and len(head) >= 26:
            (dib,) = struct.unpack("<I", head[14:18])
            if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
                size = struct.unpack("<HH", head[18:22])
            elif dib >= 40:  # BITMAPINFOHEADER and later: a negative height is top-down
                width, height = struct.unpack("<ii", head[18:26])
                size = (width, abs(height))
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            size = _webp_size(head)
    except struct.error:
        return None
    if size is None or min(size) <= 0:
        return None
    return int(size[0]), int(size[1])


def _webp_size(head: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the first chunk of a WebP file (its first 30 bytes)."""
    chunk = head[12:16]
    if chunk == b"VP8X":  # extended: canvas size minus one, 24 bits each
        w, h = head[24:27], head[27:30]
        return int.from_bytes(w, "little") + 1, int.from_bytes(h, "little") + 1
    if chunk == b"VP8L" and head[20:21] == b"\x2f":  # lossless: 14 bits each, minus one
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


# Start-of-frame markers that carry the image size (not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segments(f):
    """Yield (marker, length) of each segment after SOI, `f` at the segment's payload.

    Stops after yielding the start of scan (0xDA, `f` just past its marker) or end of
    image (0xD9), or where the stream cannot be parsed.
    """
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":  # resynchronise on the next marker
            byte = f.read(1)
        while byte == b"\xff":  # fill bytes
            byte = f.read(1)
        if not byte:
            return
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image / scan data
            yield marker, 0
            return
        raw = f.read(2)
        if len(raw) < 2:
            return
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            return
        start = f.tell()
        yield marker, length
        f.seek(start + length - 2)


def _jpeg_size(f):
    """(width, height) from the segments after SOI, or None when they cannot be parsed."""
    orientation = 1
    try:
        for marker, length in _jpeg_segments(f):
            if marker in _JPEG_SOF:
                _, height, width = struct.unpack(">BHH", f.read(5))
                return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            if marker == 0xE1:
                orientation = _exif_orientation(f.read(length - 2)) or orientation
    except struct.error:
        return None
    return None


def _jpeg_scan_start(f) -> Optional[int]:
    """Offset just past the first start-of-scan marker of a JPEG stream at SOI, or None."""
    f.seek(2)
    for marker, _ in _jpeg_segments(f):
        if marker == 0xDA:
            return f.tell()
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
