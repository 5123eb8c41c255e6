"""Box conversions, IoU and the letterbox mapping (data/boxes.py)."""

import numpy as np
import pytest

from data.boxes import Letterbox, clip_xywh, iou_matrix, xywh_to_xyxy, xyxy_to_xywh


def test_format_round_trip():
    boxes = np.array([[1.5, 2, 10, 20], [0, 0, 1, 1]], np.float32)
    np.testing.assert_allclose(xywh_to_xyxy(boxes), [[1.5, 2, 11.5, 22], [0, 0, 1, 1]])
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)


def test_iou_known_values():
    a = xywh_to_xyxy([[0, 0, 10, 10]])
    b = xywh_to_xyxy([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0, 0.0]], rtol=1e-6)


def test_clip_to_image():
    clipped = clip_xywh([[-5, -5, 20, 20], [90, 40, 20, 100]], width=100, height=80)
    np.testing.assert_allclose(clipped, [[0, 0, 15, 15], [90, 40, 10, 40]])


@pytest.mark.parametrize("w,h", [(640, 480), (300, 900), (224, 224), (1023, 77)])
@pytest.mark.parametrize("keep_aspect", [True, False])
def test_letterbox_round_trip_and_geometry(w, h, keep_aspect):
    lb = Letterbox.fit(w, h, 224, keep_aspect)
    boxes = np.array([[0, 0, w, h], [w / 3, h / 4, w / 5, h / 6]], np.float32)
    inside = lb.to_input(boxes)
    np.testing.assert_allclose(lb.to_original(inside), boxes, rtol=1e-5, atol=1e-3)
    # the whole image maps onto the content area, centred
    np.testing.assert_allclose(
        inside[0], [lb.pad_x, lb.pad_y, lb.content_width, lb.content_height], atol=1e-3
    )
    if keep_aspect:
        assert max(lb.content_width, lb.content_height) == 224
        assert abs(lb.content_width / lb.content_height - w / h) < 0.05 * (w / h) + 0.02
    else:
        assert (lb.content_width, lb.content_height) == (224, 224)


def test_letterbox_rejects_empty_image():
    with pytest.raises(ValueError, match="positive"):
        Letterbox.fit(0, 10, 224)
