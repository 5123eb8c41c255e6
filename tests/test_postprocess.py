"""Post-processing: grid decode + NMS + mapping back to original-image pixels."""

import numpy as np
import pytest

from data.boxes import InputMapping
from data.grid import CLASS, encode_grid
from model.postprocess import DetectSpec, Detections, detect_batch, detect_from_grid, nms

S, G = 224, 7
CELL = S // G
IDENTITY = InputMapping.fit(S, S, S)


def face_grid(faces, scores, size=S, grid_size=G):
    """A (G, G, 5) prediction with each face (x1, y1, x2, y2 input px) in its centre cell
    at a score."""
    grid = np.zeros((grid_size, grid_size, 5), np.float32)
    for box, score in zip(faces, scores):
        cell_grid = encode_grid(np.array([box]), [False], size, grid_size).grid
        row, col = np.argwhere(cell_grid[..., CLASS] == 1.0)[0]
        grid[row, col] = cell_grid[row, col]
        grid[row, col, CLASS] = score
    return grid


def test_nms_suppresses_overlap_keeps_separate_and_orders_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 11]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.8], np.float32)
    # Box 1 (best) suppresses 0 and 3 (IoU 0.68 and 0.75); 2 is far away.
    assert nms(boxes, scores, 0.5, 10).tolist() == [1, 2]
    # At an IoU threshold above their overlap nothing is suppressed; ties keep input order.
    assert nms(boxes, scores, 0.95, 10).tolist() == [1, 0, 3, 2]
    # Box 0 and 3 overlap by IoU 10/11: a threshold below that keeps only the first.
    assert nms(boxes, scores, 0.9, 10).tolist() == [1, 0, 2]
    assert nms(boxes[:0], scores[:0], 0.5, 10).tolist() == []


def test_nms_caps_at_max_detections():
    boxes = np.array([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(30)], np.float32)
    scores = np.linspace(0.1, 0.9, 30).astype(np.float32)
    keep = nms(boxes, scores, 0.5, 5)
    assert keep.tolist() == [29, 28, 27, 26, 25]
    assert len(nms(boxes, scores, 0.5, 0)) == 30  # 0: no cap


def test_nms_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 boxes but 2 scores"):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5, 10)


def test_two_overlapping_predictions_become_one_detection():
    # Two neighbouring cells predict nearly the same 60x60 face (centres 4 px apart).
    x, y = 3 * CELL + CELL - 32, 3 * CELL - 30 + 16
    a = [x, y, x + 60, y + 60]  # centre just left of a cell edge
    b = [x + 4, y, x + 64, y + 60]  # centre just right of it: the next cell
    grid = face_grid([a, b], [0.9, 0.8])
    assert (grid[..., CLASS] > 0).sum() == 2
    det = detect_from_grid(grid, IDENTITY, DetectSpec(0.5, 0.4, 10))
    assert isinstance(det, Detections)
    np.testing.assert_allclose(det.scores, [0.9])
    np.testing.assert_allclose(det.boxes[0], a, atol=1e-3)


def test_separate_faces_are_both_kept_and_threshold_drops_low_scores():
    faces = [[10, 10, 50, 50], [150, 120, 200, 180], [100, 20, 120, 40]]
    grid = face_grid(faces, [0.95, 0.6, 0.3])
    det = detect_from_grid(grid, IDENTITY, DetectSpec(0.5, 0.4, 10))
    np.testing.assert_allclose(det.scores, [0.95, 0.6])
    np.testing.assert_allclose(det.boxes, faces[:2], atol=1e-3)
    low = detect_from_grid(grid, IDENTITY, DetectSpec(0.2, 0.4, 10))
    assert len(low.scores) == 3
    none = detect_from_grid(grid, IDENTITY, DetectSpec(0.99, 0.4, 10))
    assert none.boxes.shape == (0, 4) and none.scores.shape == (0,)


def test_max_detections_caps_the_highest_scores():
    rng = np.random.default_rng(0)
    grid = np.zeros((G, G, 5), np.float32)
    grid[..., 0:2] = 0.05  # small boxes, no overlap between cells
    grid[..., 2:4] = 0.5
    grid[..., CLASS] = rng.uniform(0.5, 1.0, (G, G))
    det = detect_from_grid(grid, IDENTITY, DetectSpec(0.5, 0.4, 7))
    assert len(det.scores) == 7
    np.testing.assert_allclose(det.scores, np.sort(grid[..., CLASS].ravel())[::-1][:7])


@pytest.mark.parametrize(
    "width,height,pad",
    [(640, 360, True), (300, 500, True), (1023, 767, True), (640, 360, False)],
)
def test_letterboxed_face_maps_back_to_original_pixels(width, height, pad):
    """Encode known faces through InputMapping.to_input + encode_grid; decode gives them back."""
    faces = np.array([
        [0.1 * width, 0.2 * height, 0.25 * width, 0.4 * height],
        [0.6 * width, 0.55 * height, 0.8 * width, 0.85 * height],
    ], np.float32)
    letterbox = InputMapping.fit(width, height, S, pad)
    assert (letterbox.width, letterbox.height) == (width, height)
    target = encode_grid(letterbox.to_input(faces), [False, False], S, G).grid
    det = detect_from_grid(target, letterbox, DetectSpec(0.5, 0.4, 10))
    order = np.argsort(det.boxes[:, 0])
    np.testing.assert_allclose(det.boxes[order], faces, atol=0.5)


def test_boxes_are_clipped_to_the_original_image_and_padding_boxes_dropped():
    width, height = 400, 200  # letterboxed: 224 x 112 content, 56 px of padding above/below
    letterbox = InputMapping.fit(width, height, S)
    grid = np.zeros((G, G, 5), np.float32)
    # A face overflowing the image's top-left corner (centre inside the content)...
    grid[2, 0] = [40 / S, 40 / S, 0.1, 0.2, 0.9]
    # ...and one predicted entirely inside the top padding band.
    grid[0, 4] = [20 / S, 20 / S, 0.5, 0.5, 0.8]
    det = detect_from_grid(grid, letterbox, DetectSpec(0.5, 0.4, 10))
    assert len(det.scores) == 1
    x1, y1, x2, y2 = det.boxes[0]
    assert x1 == 0 and y1 == 0 and x2 <= width and y2 <= height
    assert x2 > x1 and y2 > y1


@pytest.mark.parametrize("width,height", [(1023, 77), (77, 1023), (333, 2)])
def test_boxes_are_clipped_to_the_size_the_letterbox_holds(width, height):
    """A face overflowing the bottom-right corner ends exactly on the image's own border:
    the size the InputMapping was fitted to (stored), whatever the rounded content size."""
    letterbox = InputMapping.fit(width, height, S)
    grid = np.zeros((G, G, 5), np.float32)
    # A 112-px face centred 1 px inside the content's bottom-right corner.
    cx = letterbox.pad_x + letterbox.content_width - 1
    cy = letterbox.pad_y + letterbox.content_height - 1
    row, col = int(cy // CELL), int(cx // CELL)
    grid[row, col] = [0.5, 0.5, cy / CELL - row, cx / CELL - col, 0.9]
    det = detect_from_grid(grid, letterbox, DetectSpec(0.5, 0.4, 10))
    assert len(det.scores) == 1
    assert det.boxes[0, 2] == width and det.boxes[0, 3] == height


def test_detect_batch_matches_per_image_calls_and_checks_shapes():
    grids = np.stack([
        face_grid([[10, 10, 50, 50]], [0.9]),
        face_grid([[100, 100, 150, 150]], [0.7]),
    ])
    letterboxes = [InputMapping.fit(640, 480, S), InputMapping.fit(300, 600, S)]
    batch = detect_batch(grids, letterboxes, DetectSpec(0.5, 0.4, 5))
    for det, grid, lb in zip(batch, grids, letterboxes):
        single = detect_from_grid(grid, lb, DetectSpec(0.5, 0.4, 5))
        np.testing.assert_array_equal(det.boxes, single.boxes)
        np.testing.assert_array_equal(det.scores, single.scores)
    with pytest.raises(ValueError, match="and 1 mappings"):
        detect_batch(grids, letterboxes[:1])


def test_detect_spec_from_config_takes_its_nms_and_cap_and_the_threshold_given():
    """The post-processing's part of the configuration, with an explicit threshold (the
    evaluation's low one) where one is given."""
    from config import Config

    config = Config(score_threshold=0.6, nms_iou=0.3, max_detections=50)
    assert DetectSpec.from_config(config) == DetectSpec(0.6, 0.3, 50)
    assert DetectSpec.from_config(config, 0.02) == DetectSpec(0.02, 0.3, 50)
    assert DetectSpec() == DetectSpec(Config.score_threshold, Config.nms_iou,
                                      Config.max_detections)


def test_the_spec_decides_which_cells_become_detections():
    """Threshold, NMS IoU and cap all come from the one spec argument."""
    grid = np.zeros((4, 4, 5), np.float32)
    for row, score in ((0, 0.9), (1, 0.6), (2, 0.3)):
        grid[row, 0] = (0.25, 0.25, 0.5, 0.5, score)  # three separate faces
    assert len(detect_from_grid(grid, IDENTITY, DetectSpec(0.5, 0.4, 10)).scores) == 2
    assert len(detect_from_grid(grid, IDENTITY, DetectSpec(0.2, 0.4, 10)).scores) == 3
    assert len(detect_from_grid(grid, IDENTITY, DetectSpec(0.2, 0.4, 1)).scores) == 1
