"""The grid encoding (data/grid.py): cells by centre, collisions, ignore, exact inverse."""

import re

import numpy as np
import pytest

from data.boxes import box_iou
from data.grid import CLASS, IGNORE, decode_grid, encode_grid, grid_box_corners


def _random_boxes(rng, n, size):
    wh = rng.uniform(2, size / 3, (n, 2))
    centre = rng.uniform(0, size - 1e-3, (n, 2))
    return np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)


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
                match = box_iou(decoded[:, None], boxes[None]).max(axis=1)
                assert np.all(match > 0.9999)
                dist = np.abs(decoded[:, None, :] - boxes[None, :, :]).max(axis=2).min(axis=1)
                assert np.all(dist < 1e-3)


def test_cell_is_chosen_by_centre_not_corner():
    """A face whose corner is in cell (0, 0) but centre in (1, 2) is encoded in (1, 2)."""
    box = np.array([[20, 10, 80, 60]], np.float32)  # centre (50, 35) -> col 1, row 1 at 32 px
    grid, _ = encode_grid(box, [False], 224, 7)
    assert grid[1, 1, CLASS] == 1.0
    assert grid[0, 0, CLASS] == 0.0
    h, w, yc, xc, _ = grid[1, 1]
    assert (h, w) == pytest.approx((50 / 224, 60 / 224))
    assert (yc, xc) == pytest.approx((35 / 32 - 1, 50 / 32 - 1))
    assert 0 <= yc < 1 and 0 <= xc < 1


def test_collision_keeps_largest_face_and_counts():
    """Two centres in one cell: the larger face is kept and one collision is counted."""
    boxes = np.array([[40, 40, 50, 50], [30, 30, 60, 60]], np.float32)  # both centres in (1, 1)
    grid, collisions = encode_grid(boxes, [False, False], 224, 7)
    assert collisions == 1
    decoded, _ = decode_grid(grid, 224)
    np.testing.assert_allclose(decoded, boxes[1:], atol=1e-4)


def test_ignored_faces_mark_cells_minus_one_unless_a_face_owns_them():
    boxes = np.array([[0, 0, 20, 20], [100, 100, 104, 104], [96, 96, 126, 126]], np.float32)
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
    bad = np.array([[10, 10, 10, 15], [10, 10, 15, 9], [300, 300, 310, 310]], np.float32)
    grid, _ = encode_grid(bad, np.zeros(3, bool), 224, 7)
    assert not grid.any()


def test_decode_threshold_and_order_on_predictions():
    grid = np.zeros((7, 7, 5), np.float32)
    grid[2, 3] = (0.2, 0.1, 0.5, 0.5, 0.9)
    grid[5, 1] = (0.1, 0.1, 0.5, 0.5, 0.4)
    boxes, scores = decode_grid(grid, 224, score_threshold=0.3)
    np.testing.assert_allclose(scores, [0.9, 0.4])
    # cell (2, 3): centre (3.5 * 32, 2.5 * 32) = (112, 80); w = 22.4, h = 44.8
    np.testing.assert_allclose(boxes[0], [112 - 11.2, 80 - 22.4, 112 + 11.2, 80 + 22.4], atol=1e-4)
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


def test_neighbour_cells_predict_the_same_face_with_offsets_beyond_their_cell():
    """With neighbours, a face 3 cells wide is also assigned to the 3 cells on the sides
    nearer its centre; every assigned cell decodes to the very same box."""
    # 16-px cells; centre (88, 84): cell row 5 (fraction 0.25), col 5 (fraction 0.5).
    box = np.array([[64, 60, 112, 108]], np.float32)
    grid, collisions = encode_grid(box, [False], 224, 14, neighbours=True)
    assert collisions == 0
    cells = sorted(zip(*np.nonzero(grid[..., CLASS] == 1.0)))
    assert cells == [(4, 5), (4, 6), (5, 5), (5, 6)]
    assert grid[4, 5, 2] == pytest.approx(1.25) and grid[5, 6, 3] == pytest.approx(-0.5)
    decoded, _ = decode_grid(grid, 224)
    np.testing.assert_allclose(decoded, np.repeat(box, 4, axis=0), atol=1e-4)
    # Without the flag: the centre cell only, as before.
    plain, _ = encode_grid(box, [False], 224, 14)
    assert list(zip(*np.nonzero(plain[..., CLASS] == 1.0))) == [(5, 5)]


def test_neighbour_cells_skip_tiny_faces_and_never_take_a_face_centre_cell():
    """A face smaller than a cell keeps one cell (the neighbours' centres are outside it);
    a neighbour cell holding another face's centre keeps that face; a contested neighbour
    cell goes to the larger face."""
    tiny = np.array([[100, 100, 106, 106]], np.float32)
    grid, _ = encode_grid(tiny, [False], 224, 14, neighbours=True)
    assert int((grid[..., CLASS] == 1.0).sum()) == 1

    big = [64, 60, 112, 108]  # centre cell (5, 5); neighbours (4, 5), (5, 6), (4, 6)
    small = [98, 50, 110, 62]  # centre (104, 56): cell (3, 6)... and one in (4, 6):
    inside = [98, 66, 110, 78]  # centre (104, 72) -> cell (4, 6), a neighbour of `big`
    boxes = np.array([big, small, inside], np.float32)
    grid, collisions = encode_grid(boxes, [False] * 3, 224, 14, neighbours=True)
    assert collisions == 0
    # (4, 6) holds `inside`'s own centre: its box, not the big face's.
    assert grid[4, 6, 1] * 224 == pytest.approx(12)
    assert grid[5, 5, 1] * 224 == pytest.approx(48) and grid[4, 5, 1] * 224 == pytest.approx(48)
    # Two faces wanting one neighbour cell, (6, 6): the larger wins.
    p = [72, 72, 112, 112]  # centre (92, 92): cell (5, 5), fractions 0.75 -> (6, 5), (5, 6), (6, 6)
    q = [101, 101, 131, 131]  # centre (116, 116): cell (7, 7), fractions 0.25 -> (6, 7), (7, 6), (6, 6)
    for order in ([p, q], [q, p]):
        grid, _ = encode_grid(np.array(order, np.float32), [False, False], 224, 14,
                              neighbours=True)
        assert grid[6, 6, 1] * 224 == pytest.approx(40)
        assert grid[6, 7, 1] * 224 == pytest.approx(30) and grid[6, 5, 1] * 224 == pytest.approx(40)


def test_neighbour_round_trip_over_random_boxes_decodes_only_input_boxes():
    """Every cell the neighbour assignment marks decodes to one of the input boxes."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        boxes = _random_boxes(rng, int(rng.integers(1, 12)), 224)
        grid, collisions = encode_grid(boxes, np.zeros(len(boxes), bool), 224, 28, neighbours=True)
        decoded, _ = decode_grid(grid, 224)
        plain, plain_collisions = encode_grid(boxes, np.zeros(len(boxes), bool), 224, 28)
        assert collisions == plain_collisions
        assert len(decoded) >= len(boxes) - collisions
        dist = np.abs(decoded[:, None, :] - boxes[None, :, :]).max(axis=2).min(axis=1)
        assert np.all(dist < 1e-3)
        offsets = grid[grid[..., CLASS] == 1.0][:, 2:4]
        assert np.all((offsets >= -0.5) & (offsets < 1.5))


# --- centre sampling (centre_radius > 0) --------------------------------------------------
def test_centre_sampling_marks_the_cells_of_a_large_face_within_the_radius():
    """A 100-px face centred on a cell centre at 16-px cells: radius 2.5 takes the 5 x 5
    cells around its centre (all inside the face), radius 1 the 3 x 3."""
    from data.grid import offset_range

    box = np.float32([[38, 38, 138, 138]])  # centre (88, 88): cell (5, 5)'s centre
    for radius, side in ((2.5, 5), (1.0, 3)):
        grid, _ = encode_grid(box, [False], 224, 14, centre_radius=radius)
        rows, cols = np.nonzero(grid[..., CLASS] == 1)
        half = side // 2
        assert sorted(set(rows)) == list(range(5 - half, 5 + half + 1))
        assert sorted(set(cols)) == list(range(5 - half, 5 + half + 1))
        assert len(rows) == side * side
        low, high = offset_range(centre_radius=radius)
        assert grid[rows, cols, 2].min() >= low and grid[rows, cols, 2].max() <= high
        decoded, _ = decode_grid(grid, 224)  # every positive cell decodes the same box
        np.testing.assert_allclose(decoded, np.repeat(box, side * side, 0), atol=1e-4)


def test_centre_sampling_keeps_one_cell_for_a_face_under_a_cell():
    box = np.float32([[41, 41, 47, 47]])  # 6 px, inside cell (2, 2) at 16-px cells
    grid, _ = encode_grid(box, [False], 224, 14, centre_radius=2.5)
    assert (grid[..., CLASS] == 1).sum() == 1 and grid[2, 2, CLASS] == 1


def test_centre_sampling_gives_a_contested_cell_to_the_smaller_face():
    big = [0, 0, 160, 160]  # centre (80, 80): cell (5, 5)
    small = [100, 100, 140, 140]  # centre (120, 120): cell (7, 7)
    grid, collisions = encode_grid(np.float32([big, small]), [False, False], 224, 14,
                                   centre_radius=2.5)
    assert collisions == 0
    # Cell (6, 6) (centre 104 px) lies in both faces and near both centres.
    assert grid[6, 6, 0] == pytest.approx(40 / 224)  # h of the small face
    assert grid[5, 5, 0] == pytest.approx(160 / 224)  # the big face keeps its centre cell
    assert grid[7, 7, 0] == pytest.approx(40 / 224)


def test_offset_ranges_of_the_three_assignments():
    from data.grid import offset_range

    assert offset_range() == (0.0, 1.0)
    assert offset_range(neighbours=True) == (-0.5, 1.5)
    assert offset_range(centre_radius=2.5) == (-2.0, 3.0)


# --------------------------------------------------------------------------- GridSpec
def test_grid_spec_states_the_levels_strides_offsets_and_shape_of_its_grid():
    """One record answers every geometric question the codec, network and runtimes ask."""
    from data.grid import GridSpec

    spec = GridSpec(320, 40, grid_levels=3, centre_radius=2.5)
    assert spec.cell_size == 8 and spec.grid_sizes == (40, 20, 10)
    assert spec.strides == (8, 16, 32) and spec.cells_shape == (2100, 5)
    assert spec.offsets == (-2.0, 3.0) and GridSpec(224, 7).offsets == (0.0, 1.0)
    assert GridSpec(224, 7, neighbour_cells=True).offsets == (-0.5, 1.5)
    assert spec.at_input_size(640).grid_sizes == (80, 40, 20)
    assert spec.describe() == "40x40 + 20x20 + 10x10"
    assert GridSpec(224, 7).cells_shape == (7, 7, 5)


@pytest.mark.parametrize("fields, message", [
    ({"input_size": 100}, "input_size=100: must be a positive multiple of 32"),
    ({"grid_size": 5}, "grid_size=5: must divide input_size=224"),
    ({"grid_size": 56}, "grid_size=56: cell size 4 px at input_size=224"),
    ({"grid_size": 28, "grid_levels": 4}, "grid_levels=4: from 8-px cells the coarsest level"),
    ({"centre_radius": 0.2}, "centre_radius=0.2: must be 0 (off) or in [0.5, 8]"),
    ({"letterbox": 1}, "letterbox=1: must be true or false"),
    ({"grid_size": 7.0}, "grid_size=7.0: must be an integer"),
    ({"channel_order": "BGR"}, "channel_order='BGR', input_dtype='uint8'"),
])
def test_grid_spec_refuses_a_grid_the_backbone_cannot_give_naming_the_field(fields, message):
    from common.errors import ConfigError
    from data.grid import GridSpec

    values = {"input_size": 224, "grid_size": 7, **fields}
    with pytest.raises(ConfigError, match=re.escape(message)):
        GridSpec(**values)


def test_config_checks_its_grid_through_the_spec_and_derives_it_field_by_field():
    """Config's grid fields and GridSpec's are the same names and rules: one place."""
    import dataclasses

    from common.errors import ConfigError
    from config import Config
    from data.grid import GridSpec

    config = Config(input_size=320, grid_size=40, grid_levels=3, letterbox=False,
                    centre_radius=2.5, neighbour_cells=True)
    spec = config.grid_spec()
    assert spec == GridSpec(320, 40, 3, False, True, 2.5)
    config_fields = {f.name for f in dataclasses.fields(Config)}
    assert set(GridSpec.config_fields()) <= config_fields
    with pytest.raises(ConfigError, match="grid_size=5: must divide input_size=224"):
        Config(grid_size=5)
