"""The grid encoding (data/grid.py): cells by centre, collisions, ignore, exact inverse."""

import numpy as np
import pytest

from data.boxes import iou_matrix, xywh_to_xyxy
from data.grid import CLASS, IGNORE, decode_grid, encode_grid, grid_box_corners


def _random_boxes(rng, n, size):
    wh = rng.uniform(2, size / 3, (n, 2))
    centre = rng.uniform(0, size - 1e-3, (n, 2))
    return np.concatenate([centre - wh / 2, wh], axis=1).astype(np.float32)


def test_round_trip_over_random_boxes():
    """decode_grid(encode_grid(boxes)) returns every non-colliding box exactly."""
    rng = np.random.default_rng(0)
    for size, g in [(224, 7), (224, 14), (224, 28), (96, 3)]:
        for _ in range(100):
            boxes = _random_boxes(rng, int(rng.integers(0, 12)), size)
            grid, collisions = encode_grid(boxes, np.zeros(len(boxes), bool), size, g)
            decoded, scores = decode_grid(grid, size)
            assert len(decoded) == len(boxes) - collisions
            assert np.all(scores == 1.0)
            if len(decoded):
                # each decoded box equals one input box to float precision
                match = iou_matrix(xywh_to_xyxy(decoded), xywh_to_xyxy(boxes)).max(axis=1)
                assert np.all(match > 0.9999)
                dist = np.abs(decoded[:, None, :] - boxes[None, :, :]).max(axis=2).min(axis=1)
                assert np.all(dist < 1e-3)


def test_cell_is_chosen_by_centre_not_corner():
    """A face whose corner is in cell (0, 0) but centre in (1, 2) is encoded in (1, 2)."""
    box = np.array([[20, 10, 60, 50]], np.float32)  # centre (50, 35) -> col 1, row 1 at 32 px
    grid, _ = encode_grid(box, [False], 224, 7)
    assert grid[1, 1, CLASS] == 1.0
    assert grid[0, 0, CLASS] == 0.0
    h, w, yc, xc, _ = grid[1, 1]
    assert (h, w) == pytest.approx((50 / 224, 60 / 224))
    assert (yc, xc) == pytest.approx((35 / 32 - 1, 50 / 32 - 1))
    assert 0 <= yc < 1 and 0 <= xc < 1


def test_collision_keeps_largest_face_and_counts():
    """Two centres in one cell: the larger face is kept and one collision is counted."""
    boxes = np.array([[40, 40, 10, 10], [30, 30, 30, 30]], np.float32)  # both centres in (1, 1)
    grid, collisions = encode_grid(boxes, [False, False], 224, 7)
    assert collisions == 1
    decoded, _ = decode_grid(grid, 224)
    np.testing.assert_allclose(decoded, boxes[1:], atol=1e-4)


def test_ignored_faces_mark_cells_minus_one_unless_a_face_owns_them():
    boxes = np.array([[0, 0, 20, 20], [100, 100, 4, 4], [96, 96, 30, 30]], np.float32)
    grid, collisions = encode_grid(boxes, [True, True, False], 224, 7)
    assert grid[0, 0, CLASS] == IGNORE  # only an ignored face there
    assert grid[3, 3, CLASS] == 1.0  # a real face's centre shares the ignored face's cell
    assert collisions == 0
    assert np.all(grid[0, 0, :4] == 0)
    # ignore cells never decode into boxes
    decoded, _ = decode_grid(grid, 224, score_threshold=0.0)
    assert len(decoded) == 1


def test_empty_and_degenerate_boxes():
    grid, collisions = encode_grid(np.zeros((0, 4)), np.zeros(0, bool), 224, 7)
    assert grid.shape == (7, 7, 5) and not grid.any() and collisions == 0
    bad = np.array([[10, 10, 0, 5], [10, 10, 5, -1], [300, 300, 10, 10]], np.float32)
    grid, _ = encode_grid(bad, np.zeros(3, bool), 224, 7)
    assert not grid.any()


def test_decode_threshold_and_order_on_predictions():
    grid = np.zeros((7, 7, 5), np.float32)
    grid[2, 3] = (0.2, 0.1, 0.5, 0.5, 0.9)
    grid[5, 1] = (0.1, 0.1, 0.5, 0.5, 0.4)
    boxes, scores = decode_grid(grid, 224, score_threshold=0.3)
    np.testing.assert_allclose(scores, [0.9, 0.4])
    # cell (2, 3): centre (3.5 * 32, 2.5 * 32) = (112, 80); w = 22.4, h = 44.8
    np.testing.assert_allclose(boxes[0], [112 - 11.2, 80 - 22.4, 22.4, 44.8], atol=1e-4)
    boxes, scores = decode_grid(grid, 224, score_threshold=0.5)
    assert len(boxes) == 1


def test_decode_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(G, G, 5\)"):
        decode_grid(np.zeros((7, 7, 4)), 224)


def test_grid_box_corners_works_on_tensors():
    """The loss uses grid_box_corners on tensors: same numbers as on NumPy."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    grid = rng.uniform(0, 1, (2, 7, 7, 5)).astype(np.float32)
    on_numpy = grid_box_corners(grid)
    on_tensor = grid_box_corners(tf.constant(grid))
    for a, b in zip(on_numpy, on_tensor):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6)
