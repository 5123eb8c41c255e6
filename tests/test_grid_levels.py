"""Several grid levels (data/grid.py): level sizes, assignment by face size, encode and
decode of several levels as exact inverses, ignore regions on their level, the flat layout."""

import numpy as np
import pytest

from data.boxes import box_iou
from data.grid import (CLASS, IGNORE, FACE_CELLS, GridSpec, assign_levels, cell_box_corners,
                       decode_grid, decode_levels, encode_grid, encode_levels, flatten_levels,
                       grid_box_corners, level_grid_sizes, levels_of_cells, levels_text,
                       split_levels)

LEVELS = (40, 20, 10)  # 320 px: cells of 8, 16 and 32 px
SPEC = GridSpec(320, 40, 3)  # those levels


def _square(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_level_sizes_halve_and_the_output_shape_names_them():
    assert level_grid_sizes(40, 3) == LEVELS
    assert level_grid_sizes(7) == (7,)
    with pytest.raises(ValueError, match="divisible by 4"):
        level_grid_sizes(14, 3)
    # (finest G, levels) from an S-px input and N cells: the one choice that adds up to N.
    assert levels_of_cells(320, 1600 + 400 + 100) == (40, 3)
    assert levels_of_cells(320, 1600 + 400) == (40, 2)
    assert levels_of_cells(320, 400 + 100) == (20, 2)
    assert levels_of_cells(224, 28 * 28 + 14 * 14 + 7 * 7) == (28, 3)
    assert levels_of_cells(320, 1600) is None  # one level is a (G, G, 5) grid, never flat
    assert levels_of_cells(320, 2101) is None
    # Every input size the config allows up to 1024 px gives distinct counts.
    for size in range(64, 1025, 32):
        counts = {}
        for cell in (8, 16, 32):
            for levels in range(2, 4):
                if cell * 2 ** (levels - 1) <= 32:
                    n = sum(g * g for g in level_grid_sizes(size // cell, levels))
                    assert n not in counts, (size, cell, levels, counts)
                    counts[n] = (size // cell, levels)
        for n, expected in counts.items():
            assert levels_of_cells(size, n) == expected
    assert levels_text(LEVELS) == "40x40 + 20x20 + 10x10"


def test_faces_go_to_the_level_where_they_span_about_four_cells():
    finest = 320 / LEVELS[0]  # 8 px
    edge = FACE_CELLS * finest * np.sqrt(2)  # 45.25 px: between 4 cells of 8 and of 16 px
    sides = [3, 10, 32, edge - 0.5, edge + 0.5, 64, 2 * edge - 0.5, 2 * edge + 0.5, 128, 300]
    boxes = np.array([_square(160, 160, s) for s in sides], np.float32)
    assert assign_levels(boxes, 320, LEVELS).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Size is sqrt(w h): a 16 x 64 face is a 32-px face.
    assert assign_levels(np.array([[0, 0, 16, 64]], np.float32), 320, LEVELS).tolist() == [0]
    # Two levels: everything from the second level's range up stays on it.
    assert assign_levels(boxes, 320, LEVELS[:2]).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("rule", [{}, {"neighbour_cells": True}, {"centre_radius": 2.5}])
def test_encode_and_decode_of_several_levels_are_exact_inverses(rule):
    """Every face comes back from the cells of its level, exactly, whatever the rule."""
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(0, 10))
        sides = np.exp(rng.uniform(np.log(4), np.log(250), n))
        centres = rng.uniform(20, 300, (n, 2))
        boxes = np.array([_square(x, y, s) for (x, y), s in zip(centres, sides)],
                         np.float32).reshape(-1, 4)
        cells, collisions = encode_levels(boxes, np.zeros(n, bool), GridSpec(320, 40, 3, **rule))
        assert cells.shape == (2100, 5)
        decoded, scores = decode_levels(cells, 320, LEVELS)
        assert np.all(scores == 1.0)
        if n == 0:
            assert len(decoded) == 0
            continue
        # every decoded box is one of the faces, to float precision ...
        assert np.all(box_iou(decoded[:, None], boxes[None]).max(axis=1) > 0.9999)
        # ... and every face not lost to a collision is decoded
        found = box_iou(boxes[:, None], decoded[None]).max(axis=1) > 0.9999
        assert found.sum() >= n - collisions
        # each face is on its own level only
        level = assign_levels(boxes, 320, LEVELS)
        for index, grid in enumerate(split_levels(cells, LEVELS)):
            on_level, _ = decode_grid(grid, 320)
            if len(on_level):
                owner = box_iou(on_level[:, None], boxes[None]).argmax(axis=1)
                assert np.all(level[owner] == index)


def test_one_level_is_encode_grid_itself():
    boxes = np.array([_square(50, 60, 30), _square(200, 100, 120)], np.float32)
    ignore = np.array([False, True])
    one = encode_levels(boxes, ignore, GridSpec(320, 40, centre_radius=2.5))
    same = encode_grid(boxes, ignore, 320, 40, centre_radius=2.5)
    assert one.grid.shape == (40, 40, 5) and np.array_equal(one.grid, same.grid)
    for a, b in zip(decode_levels(one.grid, 320, (40,)), decode_grid(same.grid, 320)):
        np.testing.assert_array_equal(a, b)
    assert len(split_levels(one.grid, (40,))) == 1


def test_ignore_regions_are_marked_on_their_level_only():
    small, large = _square(100, 100, 12), _square(220, 220, 150)  # levels 0 and 2
    cells, _ = encode_levels(np.array([small, large], np.float32), np.array([True, True]),
                             SPEC)
    fine, middle, coarse = split_levels(cells, LEVELS)
    assert fine[12, 12, CLASS] == IGNORE and (fine[..., CLASS] == IGNORE).sum() == 1
    assert (middle[..., CLASS] == 0).all()
    assert coarse[6, 6, CLASS] == IGNORE and (coarse[..., CLASS] == IGNORE).sum() == 1
    # A face of the same level in the ignored cell wins it; another level's does not care.
    face = _square(100, 100, 10)
    cells, _ = encode_levels(np.array([small, face, large], np.float32),
                             np.array([True, False, True]), SPEC)
    fine, _, coarse = split_levels(cells, LEVELS)
    assert fine[12, 12, CLASS] == 1.0 and coarse[6, 6, CLASS] == IGNORE


def test_flat_layout_round_trips_and_its_corners_are_each_levels():
    rng = np.random.default_rng(0)
    grids = [rng.uniform(0, 1, (2, g, g, 5)).astype(np.float32) for g in LEVELS]
    cells = flatten_levels(grids)
    assert cells.shape == (2, 2100, 5)
    # finest first, row by row
    np.testing.assert_array_equal(cells[:, :1600], grids[0].reshape(2, 1600, 5))
    np.testing.assert_array_equal(cells[:, 1600 + 20 * 3 + 7], grids[1][:, 3, 7])
    for back, grid in zip(split_levels(cells, LEVELS), grids):
        np.testing.assert_array_equal(back, grid)
    corners = cell_box_corners(cells, LEVELS)
    for k in range(4):
        expected = np.concatenate([grid_box_corners(g)[k].reshape(2, -1) for g in grids], axis=1)
        np.testing.assert_allclose(corners[k], expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2100, 5\) cells, got \(2, 2000, 5\)"):
        split_levels(cells[:, :2000], LEVELS)


def test_decode_levels_sorts_every_levels_boxes_by_score():
    boxes = np.array([_square(50, 50, 10), _square(200, 200, 150), _square(150, 60, 60)],
                     np.float32)
    cells, _ = encode_levels(boxes, np.zeros(3, bool), SPEC)
    faces = cells[:, CLASS] == 1
    cells[faces, CLASS] = [0.6, 0.9, 0.7]  # levels 0, 1, 2 (encoding order is by level)
    decoded, scores = decode_levels(cells, 320, LEVELS, score_threshold=0.5)
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    np.testing.assert_allclose(decoded, boxes[[2, 1, 0]], atol=1e-4)
    assert len(decode_levels(cells, 320, LEVELS, score_threshold=0.8)[0]) == 1
