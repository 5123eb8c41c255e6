"""Landmarks in the grid (data/grid.py): the channel layout, the encoding relative to the
cell and normalised by the face size, exact inverse on one and several levels with every
assignment rule, absent points as NaN, the mouth centre's two target channels."""

import json

import numpy as np
import pytest

from data.boxes import box_iou
from data.grid import (CLASS, H, LANDMARK_OUTPUT_CHANNELS, LANDMARK_TARGET_CHANNELS,
                       NUM_CHANNELS, GridSpec, W, decode_grid, decode_levels, encode_grid,
                       encode_levels, output_has_landmarks, point_channels)
from data.landmarks import MOUTH_CENTRE, NUM_LANDMARKS, POINT_NAMES, RIGHT_MOUTH, LEFT_MOUTH

RULES = [{}, {"neighbour_cells": True}, {"centre_radius": 2.5}]


def _faces_with_points(rng, n, size, min_side=6, max_side=None):
    """(boxes (n, 4), points (n, 6, 2)): random faces, their points inside the box."""
    max_side = max_side or size / 3
    wh = rng.uniform(min_side, max_side, (n, 2))
    centre = rng.uniform(0, size - 1e-3, (n, 2))
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)
    unit = rng.uniform(0.1, 0.9, (n, len(POINT_NAMES), 2))
    points = boxes[:, None, :2] + unit * (boxes[:, None, 2:] - boxes[:, None, :2])
    return boxes, points.astype(np.float32)


def _match(decoded, boxes):
    """Index of the input box each decoded box is (to float precision)."""
    iou = box_iou(decoded[:, None], boxes[None])
    assert np.all(iou.max(axis=1) > 0.9999)
    return iou.argmax(axis=1)


def test_the_layout_is_five_box_channels_then_x_y_of_each_point_then_the_mouth_centre():
    assert NUM_CHANNELS == 5 and LANDMARK_OUTPUT_CHANNELS == 15
    assert LANDMARK_TARGET_CHANNELS == 17
    assert [point_channels(k) for k in range(NUM_LANDMARKS)] == [
        (5, 6), (7, 8), (9, 10), (11, 12), (13, 14)]
    assert point_channels(MOUTH_CENTRE) == (15, 16)  # targets only
    assert output_has_landmarks(15) and not output_has_landmarks(5)
    with pytest.raises(ValueError, match="17 channels per cell"):
        output_has_landmarks(17)


def test_a_point_is_its_offset_from_the_cell_centre_over_the_face_size():
    """Known values: a 64 x 32 face centred at (50, 35) on 32-px cells is in cell (1, 1),
    centre (48, 48); its right eye at (40, 30) is ((40 - 48) / 64, (30 - 48) / 32)."""
    box = np.array([[18, 19, 82, 51]], np.float32)
    points = np.full((1, 6, 2), np.nan, np.float32)
    points[0, 0] = (40, 30)
    grid, _ = encode_grid(box, [False], 224, 7, points=points)
    assert grid.shape == (7, 7, LANDMARK_TARGET_CHANNELS)
    x, y = point_channels(0)
    assert grid[1, 1, x] == pytest.approx(-8 / 64) and grid[1, 1, y] == pytest.approx(-18 / 32)
    # Absent points, and every point of a cell that is not positive, are NaN.
    assert np.isnan(grid[1, 1, 7:]).all()
    assert np.isnan(grid[0, 0, NUM_CHANNELS:]).all()
    assert (grid[0, 0, :NUM_CHANNELS] == 0).all()
    # The box channels are those of a grid without points.
    plain, _ = encode_grid(box, [False], 224, 7)
    np.testing.assert_array_equal(grid[..., :NUM_CHANNELS], plain)


@pytest.mark.parametrize("rule", RULES)
def test_encode_and_decode_of_points_are_exact_inverses_on_one_grid(rule):
    """Every positive cell of a face (centre cell, neighbours, centre sampling) decodes the
    face's own five points, in input pixels."""
    rng = np.random.default_rng(1)
    spec = GridSpec(224, 14, landmarks=True, **rule)
    for _ in range(30):
        boxes, points = _faces_with_points(rng, int(rng.integers(1, 8)), 224)
        targets = encode_levels(boxes, np.zeros(len(boxes), bool), spec, points).grid
        assert targets.shape == spec.target_shape == (14, 14, 17)
        decoded, scores, landmarks = decode_grid(targets, 224, with_landmarks=True)
        assert landmarks.shape == (len(decoded), 5, 2) and landmarks.dtype == np.float32
        face = _match(decoded, boxes)
        np.testing.assert_allclose(landmarks, points[face, :NUM_LANDMARKS], atol=2e-3)
        # Without landmarks asked, the same boxes and scores as ever.
        again = decode_grid(targets, 224)
        assert len(again) == 2 and np.array_equal(again[0], decoded)


@pytest.mark.parametrize("rule", RULES)
def test_encode_and_decode_of_points_are_exact_inverses_on_several_levels(rule):
    rng = np.random.default_rng(2)
    spec = GridSpec(320, 40, 3, landmarks=True, **rule)
    for _ in range(20):
        boxes, points = _faces_with_points(rng, int(rng.integers(1, 10)), 320, 6, 200)
        cells = encode_levels(boxes, np.zeros(len(boxes), bool), spec, points).grid
        assert cells.shape == spec.target_shape == (2100, 17)
        decoded, scores, landmarks = decode_levels(cells, 320, spec.grid_sizes,
                                                   with_landmarks=True)
        assert np.all(np.diff(scores) <= 0)
        face = _match(decoded, boxes)
        np.testing.assert_allclose(landmarks, points[face, :NUM_LANDMARKS], atol=2e-3)


def test_the_mouth_centre_is_encoded_in_the_two_target_channels_as_the_corners_are():
    """The encoding is linear in the point, so the mean of the encoded corners is the
    encoded mean of the corners: the loss compares that with the mouth-centre channels."""
    box = np.array([[100, 100, 164, 180]], np.float32)
    points = np.full((1, 6, 2), np.nan, np.float32)
    points[0, RIGHT_MOUTH], points[0, LEFT_MOUTH] = (120, 160), (150, 164)
    points[0, MOUTH_CENTRE] = (135, 162)
    grid, _ = encode_grid(box, [False], 224, 7, points=points)
    cell = grid[4, 4]
    corners = [cell[list(point_channels(k))] for k in (RIGHT_MOUTH, LEFT_MOUTH)]
    np.testing.assert_allclose(np.mean(corners, axis=0),
                               cell[list(point_channels(MOUTH_CENTRE))], atol=1e-6)
    assert cell[H] == pytest.approx(80 / 224) and cell[W] == pytest.approx(64 / 224)


def test_absent_points_decode_as_nan_and_a_spec_with_landmarks_needs_no_points():
    spec = GridSpec(224, 7, landmarks=True)
    box = np.array([[20, 20, 80, 80]], np.float32)
    cells = encode_levels(box, [False], spec).grid  # no points given: all absent
    assert cells.shape == (7, 7, 17) and cells[..., CLASS].sum() == 1
    _, _, landmarks = decode_grid(cells, 224, with_landmarks=True)
    assert landmarks.shape == (1, 5, 2) and np.isnan(landmarks).all()
    with pytest.raises(ValueError, match="points given for a grid without landmarks"):
        encode_levels(box, [False], GridSpec(224, 7), np.zeros((1, 6, 2), np.float32))
    with pytest.raises(ValueError, match=r"points must have shape \(1, 6, 2\)"):
        encode_grid(box, [False], 224, 7, points=np.zeros((1, 5, 2), np.float32))
    with pytest.raises(ValueError, match="has no landmarks"):
        decode_grid(np.zeros((7, 7, 5), np.float32), 224, with_landmarks=True)


def test_predictions_decode_their_points_with_their_own_box():
    """A 15-channel prediction: the point is the cell centre plus the offset times the
    PREDICTED face size."""
    grid = np.zeros((7, 7, LANDMARK_OUTPUT_CHANNELS), np.float32)
    grid[2, 3, :NUM_CHANNELS] = (0.25, 0.5, 0.5, 0.5, 0.9)  # 56 px high, 112 wide at 224
    x, y = point_channels(2)
    grid[2, 3, x], grid[2, 3, y] = 0.1, -0.2
    boxes, scores, landmarks = decode_grid(grid, 224, with_landmarks=True)
    assert len(boxes) == 1
    centre = np.array([3.5 * 32, 2.5 * 32])
    np.testing.assert_allclose(landmarks[0, 2], centre + (0.1 * 112, -0.2 * 56), atol=1e-4)
    np.testing.assert_allclose(landmarks[0, 0], centre, atol=1e-4)  # offsets 0: the centre


def test_the_spec_states_its_channels_and_the_contract_carries_the_flag():
    from config import Config
    from model.contract import ModelContract

    plain, marked = GridSpec(320, 40, 3), GridSpec(320, 40, 3, landmarks=True)
    assert (plain.channels, plain.target_channels, plain.cells_shape) == (5, 5, (2100, 5))
    assert (marked.channels, marked.target_channels) == (15, 17)
    assert marked.cells_shape == (2100, 15) and marked.target_shape == (2100, 17)
    assert GridSpec(224, 7, landmarks=True).cells_shape == (7, 7, 15)
    assert Config(landmarks=True).grid_spec().landmarks
    assert not Config().grid_spec().landmarks
    contract = ModelContract(marked, 0.4)
    assert ModelContract.from_json(contract.to_json(), "x") == contract
    values = json.loads(contract.to_json())
    assert values["landmarks"] is True
    older = {k: v for k, v in values.items() if k != "landmarks"}
    assert ModelContract.from_json(json.dumps(older), "x").grid.landmarks is False
    # A model without landmarks writes the JSON it wrote before they existed.
    assert "landmarks" not in json.loads(ModelContract(plain, 0.4).to_json())
    assert ModelContract.from_json(ModelContract(plain, 0.4).to_json(), "x").grid == plain


@pytest.mark.parametrize("grid_sizes", [(12,), (16, 8, 4)])
def test_cells_of_the_decoded_boxes_give_their_landmarks_alone(grid_sizes):
    """decode_levels' with_cells: each box's flat cell, from which landmarks_of_cells gives
    exactly the points with_landmarks decodes (detection decodes them after NMS only)."""
    from data.grid import cells_shape, decode_levels, landmarks_of_cells

    rng = np.random.default_rng(len(grid_sizes))
    cells = rng.random(cells_shape(grid_sizes, LANDMARK_OUTPUT_CHANNELS), dtype=np.float32)
    boxes, scores, points = decode_levels(cells, 128, grid_sizes, 0.7, with_landmarks=True)
    same_boxes, same_scores, index = decode_levels(cells, 128, grid_sizes, 0.7, with_cells=True)
    np.testing.assert_array_equal(same_boxes, boxes)
    np.testing.assert_array_equal(same_scores, scores)
    assert index.dtype == np.int64 and len(set(index.tolist())) == len(index) > 5
    flat = cells.reshape(-1, LANDMARK_OUTPUT_CHANNELS)
    np.testing.assert_array_equal(flat[index, CLASS], scores)  # each box's own cell
    np.testing.assert_array_equal(landmarks_of_cells(cells, 128, grid_sizes, index), points)
    # A subset (the boxes NMS keeps) gives those boxes' points, in that order.
    kept = index[[3, 0, 2]]
    np.testing.assert_array_equal(landmarks_of_cells(cells, 128, grid_sizes, kept),
                                  points[[3, 0, 2]])
