"""Image reading and the network input form (data/image.py); bad files: huge headers
refused before decoding, truncated ones named."""

import os
import struct
import time
import warnings

import cv2
import numpy as np
import pytest

from data.boxes import InputMapping
from helpers import claim_size
from data.image import (
    MAX_IMAGE_PIXELS, PAD_VALUE, TruncatedImageWarning, resize_to_input, prepare_image,
    read_image, to_network_input,
)
from common.errors import ImageError


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing.jpg: image file not found"):
        read_image(str(tmp_path / "missing.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageError, match=r"corrupt.jpg: not a readable image"):
        read_image(str(corrupt))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg"):
        read_image(str(empty))


def test_reduced_decode_halves_the_size(tmp_path):
    path = str(tmp_path / "a.jpg")
    cv2.imwrite(path, np.full((200, 320, 3), 90, np.uint8))
    assert read_image(path).shape == (200, 320, 3)
    assert read_image(path, reduce=2).shape == (100, 160, 3)


def test_letterbox_places_content_and_pads():
    image = np.full((100, 200, 3), 255, np.uint8)  # wide image
    lb = InputMapping.fit(200, 100, 64)
    out = resize_to_input(image, lb)
    assert out.shape == (64, 64, 3)
    assert (out[:16] == PAD_VALUE).all() and (out[48:] == PAD_VALUE).all()
    assert (out[16:48] == 255).all()


def test_network_input_is_contiguous_rgb_uint8():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue
    bgr[..., 1] = 7
    x = to_network_input(bgr)
    assert x.dtype == np.uint8 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x[0, 0], [0, 7, 255])


def test_prepare_image_returns_input_and_mapping():
    x, lb = prepare_image(np.zeros((300, 150, 3), np.uint8), 96)
    assert x.shape == (96, 96, 3) and lb.content_height == 96 and lb.content_width == 48


# ------------------------------------------------------------------ bad files
def scene(height=96, width=128):
    """A smooth image with detail everywhere: no row of it is flat."""
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 2)


def jpeg_bytes(image=None):
    ok, data = cv2.imencode(".jpg", scene() if image is None else image)
    assert ok
    return bytearray(data.tobytes())




@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("side", [65000, 30000])
def test_huge_header_is_refused_before_decoding(tmp_path, fmt, side):
    """65000x65000 crashed OpenCV (cv2.error), 30000x30000 took ~6 GB and 90 s: both are
    refused from the header in well under a second, naming the file and the limit."""
    ok, encoded = cv2.imencode("." + fmt, scene())
    path = tmp_path / f"huge.{fmt}"
    path.write_bytes(claim_size(bytearray(encoded.tobytes()), fmt, side, side))
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        read_image(str(path))
    assert time.perf_counter() - started < 0.5
    assert str(caught.value) == (
        f"{path}: {side}x{side} image ({side * side / 1e6:.1f} megapixels) is over "
        f"max_image_pixels={MAX_IMAGE_PIXELS} (100 megapixels); not decoded")
    assert MAX_IMAGE_PIXELS == 100_000_000


def test_pixel_limit_is_the_callers(tmp_path):
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, scene(96, 128))
    assert read_image(path, max_pixels=96 * 128).shape == (96, 128, 3)
    with pytest.raises(ImageError, match=r"a.png: 128x96 image .* over max_image_pixels=12287"):
        read_image(path, max_pixels=96 * 128 - 1)
    # A format whose header is not parsed here is checked on its decoded pixels.
    tiff = str(tmp_path / "a.tiff")
    cv2.imwrite(tiff, scene(96, 128))
    with pytest.raises(ImageError, match=r"a.tiff: 128x96 image .* over max_image_pixels=100"):
        read_image(tiff, max_pixels=100)


@pytest.mark.parametrize("ext,params", [
    (".bmp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
])
def test_bmp_and_webp_headers_are_checked_before_decoding(tmp_path, ext, params):
    """BMP and WebP (lossless VP8L, lossy VP8) sizes are read from the header too: a
    patched one claiming a huge size is refused as such, not decoded."""
    ok, encoded = cv2.imencode(ext, scene(50, 70), params)
    data = bytearray(encoded.tobytes())
    path = tmp_path / ("a" + ext)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"a\.\w+: 70x50 image \(0\.0 megapixels\) is over "
                       r"max_image_pixels=3499"):
        read_image(str(path), max_pixels=70 * 50 - 1)
    if ext == ".bmp":
        data[18:26] = struct.pack("<ii", 65000, -65000)  # negative: stored top-down
        side = (65000, 65000)
    elif data[12:16] == b"VP8L":
        data[21:25] = struct.pack("<I", 16382 | (16382 << 14))  # sizes minus one
        side = (16383, 16383)
    else:
        assert data[12:16] == b"VP8 "
        data[26:30] = struct.pack("<HH", 16383, 16383)
        side = (16383, 16383)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=rf"a\.\w+: {side[0]}x{side[1]} image .* is over "
                       "max_image_pixels=100000000"):
        read_image(str(path))


def test_jpeg_with_fewer_rows_than_its_header_warns_naming_the_file(tmp_path):
    """Data ending before the rows the header claims decodes without error, the rest flat
    grey: it warns naming the file, and the image is still returned."""
    full = jpeg_bytes()
    short = tmp_path / "short.jpg"
    short.write_bytes(claim_size(bytearray(full), "jpg", 128, 192))  # 96 rows of data
    with pytest.warns(TruncatedImageWarning) as caught:
        image = read_image(str(short))
    assert image.shape == (192, 128, 3) and (image[-1] == 128).all()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{short}: truncated image (its bottom row is flat grey 128")
    with pytest.warns(TruncatedImageWarning, match="short.jpg"):
        assert read_image(str(short), reduce=2).shape == (96, 64, 3)
    # A cut file with its end marker put back decodes the same way.
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(bytes(full[: len(full) // 2]) + b"\xff\xd9")
    with pytest.warns(TruncatedImageWarning, match="cut.jpg: truncated image"):
        read_image(str(cut))


def test_cut_files_say_they_are_truncated(tmp_path):
    """Without the end marker OpenCV refuses the bytes: the error says what is wrong."""
    full = jpeg_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(bytes(full[: len(full) // 2]))
    with pytest.raises(ImageError, match=r"cut.jpg: not a readable image \(corrupt or "
                       r"unsupported format; JPEG without its end-of-image marker\)"):
        read_image(str(cut))
    ok, png = cv2.imencode(".png", scene())
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.tobytes()[: len(png) // 2])
    with pytest.raises(ImageError, match=r"cut.png: .*PNG without its IEND chunk"):
        read_image(str(cut_png))


def test_good_files_do_not_warn(tmp_path):
    """Complete files, also with bytes after the end marker (some cameras append data),
    and grey images that are not flat 128 read silently."""
    trailing = tmp_path / "trailing.jpg"
    trailing.write_bytes(bytes(jpeg_bytes()) + b"\x00" * 16 + b"camera trailer")
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), scene())
    grey = tmp_path / "grey.jpg"
    cv2.imwrite(str(grey), np.full((40, 40, 3), 127, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (trailing, plain, grey):
            read_image(str(path))


def test_training_warns_about_a_truncated_image_naming_it(tmp_path):
    """The training pipeline reads through read_image: the warning names the file."""
    from config import Config
    from data.data_generator import FaceGridDataset
    from data.records import ImageRecord

    short = tmp_path / "short.jpg"
    short.write_bytes(claim_size(jpeg_bytes(), "jpg", 128, 192))
    record = ImageRecord(str(short), "short.jpg", np.array([[10, 10, 30, 30]], np.float32),
                         np.zeros(1, bool))
    config = Config(input_size=64, grid_size=4, batch_size=1, augment=False)
    dataset = FaceGridDataset([record], config, training=True)
    with pytest.warns(TruncatedImageWarning, match=f"{short}: truncated image"):
        images, _ = dataset[0]
    assert images.shape == (1, 64, 64, 3)


def test_opencv_limit_stops_formats_without_a_parsed_header(tmp_path):
    """TIFF sizes are not parsed here: OpenCV's own limit (read once per process, so
    tried in a fresh one) refuses them before decoding, in one ImageError line."""
    import subprocess
    import sys

    tiff = str(tmp_path / "a.tiff")
    cv2.imwrite(tiff, scene(96, 128))
    code = ("from data.image import read_image\n"
            f"try:\n    read_image({tiff!r})\nexcept Exception as e:\n    print(type(e).__name__, e)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS="1000"))
    assert done.stdout.strip() == (f"ImageError {tiff}: over OpenCV's pixel limit "
                                   "(OPENCV_IO_MAX_IMAGE_PIXELS=1000); not decoded")
