"""Image reading and the network input form (data/image.py)."""

import cv2
import numpy as np
import pytest

from data.boxes import Letterbox
from data.image import PAD_VALUE, letterbox_image, prepare_image, read_image, to_network_input
from errors import ImageError


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
    lb = Letterbox.fit(200, 100, 64)
    out = letterbox_image(image, lb)
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
