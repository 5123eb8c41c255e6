"""Box conversions, IoU and the letterbox mapping (data/boxes.py)."""

import numpy as np
import pytest

from data.boxes import (
    InputMapping, box_iou, box_sizes, clip_boxes, content_size, xywh_to_xyxy, xyxy_to_xywh,
)


def test_format_round_trip():
    boxes = np.array([[1.5, 2, 10, 20], [0, 0, 1, 1]], np.float32)
    np.testing.assert_allclose(xywh_to_xyxy(boxes), [[1.5, 2, 11.5, 22], [0, 0, 1, 1]])
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)


def test_format_conversion_keeps_float64_file_values_exact_until_the_cast():
    # x2 = x + w is added in float64 and cast once: what the readers of xywh files rely on.
    corners = xywh_to_xyxy(np.array([[0.1, 0.2, 0.7, 1e-9]]))
    assert corners.dtype == np.float32
    assert corners[0, 2] == np.float32(0.1 + 0.7) and corners[0, 3] == np.float32(0.2 + 1e-9)
    assert xyxy_to_xywh(np.array([[0.5, 1.0, 3.0, 4.5]]), np.float64).dtype == np.float64
    np.testing.assert_array_equal(box_sizes([[1, 2, 4, 8], [0, 0, 0, 5]]), [[3, 6], [0, 5]])


def test_iou_known_values():
    a = xywh_to_xyxy([[0, 0, 10, 10]])
    b = xywh_to_xyxy([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]])
    np.testing.assert_allclose(box_iou(a[:, None], b[None]), [[1.0, 50 / 150, 0.0, 0.0]], rtol=1e-6)


def test_iou_matches_a_hand_computation():
    # [0, 4] x [0, 4] and [2, 6] x [1, 5]: the overlap is [2, 4] x [1, 4] = 2 * 3 = 6 px^2;
    # the union 16 + 16 - 6 = 26 px^2.
    a = np.array([[0, 0, 4, 4]], np.float32)
    b = np.array([[2, 1, 6, 5], [4, 0, 8, 4], [1, 1, 3, 3]], np.float32)
    expected = [6 / 26, 0.0, 4 / 16]  # touching edges share no area; a box inside: its area
    np.testing.assert_allclose(box_iou(a[:, None], b[None])[0], expected, rtol=1e-6)
    # rows paired (validation's per-cell IoU), and symmetric
    np.testing.assert_allclose(box_iou(np.repeat(a, 3, axis=0), b), expected, rtol=1e-6)
    np.testing.assert_allclose(box_iou(b[:, None], a[None])[:, 0], expected, rtol=1e-6)
    assert box_iou(a[:, None], np.zeros((0, 4))).shape == (1, 0)


def test_clip_to_image():
    clipped = clip_boxes([[-5, -5, 15, 15], [90, 40, 110, 140]], width=100, height=80)
    np.testing.assert_allclose(clipped, [[0, 0, 15, 15], [90, 40, 100, 80]])


@pytest.mark.parametrize("w,h", [(640, 480), (300, 900), (224, 224), (1023, 77)])
@pytest.mark.parametrize("letterbox", [True, False])
def test_letterbox_round_trip_and_geometry(w, h, letterbox):
    lb = InputMapping.fit(w, h, 224, letterbox)
    boxes = np.array([[0, 0, w, h], [w / 3, h / 4, w / 3 + w / 5, h / 4 + h / 6]], np.float32)
    inside = lb.to_input(boxes)
    np.testing.assert_allclose(lb.to_original(inside), boxes, rtol=1e-5, atol=1e-3)
    # the whole image maps onto the content area, centred
    np.testing.assert_allclose(
        inside[0], [lb.pad_x, lb.pad_y, lb.pad_x + lb.content_width,
                    lb.pad_y + lb.content_height], atol=1e-3
    )
    if letterbox:
        assert max(lb.content_width, lb.content_height) == 224
        assert abs(lb.content_width / lb.content_height - w / h) < 0.05 * (w / h) + 0.02
    else:
        assert (lb.content_width, lb.content_height) == (224, 224)


def test_letterbox_rejects_empty_image():
    with pytest.raises(ValueError, match="positive"):
        InputMapping.fit(0, 10, 224)


@pytest.mark.parametrize("w,h", [(1023, 77), (333, 1), (1, 4001), (12345, 678), (225, 224), (7, 3)])
@pytest.mark.parametrize("input_size", [224, 320, 416])
@pytest.mark.parametrize("letterbox", [True, False])
def test_letterbox_keeps_the_original_size_it_was_fitted_to(w, h, input_size, letterbox):
    """The image size is stored, not re-derived from the rounded content size and scale
    (content_width / scale_x): odd sizes whose content side rounds (1023 x 77 -> 224 x 17,
    333 x 1 -> 224 x 1) keep exactly their own width and height."""
    lb = InputMapping.fit(w, h, input_size, letterbox)
    assert (lb.width, lb.height) == (w, h)
    assert (lb.content_width, lb.content_height) == content_size(w, h, input_size, letterbox)
    # the content edges (the rounded size) map back onto the image's own edges
    inside = np.array([[lb.pad_x, lb.pad_y, lb.pad_x + lb.content_width,
                        lb.pad_y + lb.content_height]], np.float32)
    np.testing.assert_allclose(lb.to_original(inside), [[0, 0, w, h]], rtol=1e-6, atol=1e-3)
