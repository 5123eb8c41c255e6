"""Landmarks ride with their boxes through every geometric step of the augmentation: crop,
reduced decode, flip (which also swaps right and left), letterbox / stretch / zoom-out
resize, mosaic; exact coordinates on hand-made images. Without points nothing changes."""

import cv2
import numpy as np
import pytest

from config import Config
from data.augment import AugmentPlan, AugmentSpec, augment_image, faces_in_image, load_training_sample, mosaic
from data.boxes import InputMapping
from data.data_generator import FaceGridDataset
from data.landmarks import LEFT_EYE, LEFT_MOUTH, MOUTH_CENTRE, RIGHT_EYE, RIGHT_MOUTH, face_points
from data.records import ImageRecord


def specs(config):
    """The grid and augmentation specs a sample loader takes, from one test Config."""
    return config.grid_spec(), AugmentSpec.from_config(config)


NAN = np.nan
# A 128 x 64 image with one face: box x1, y1, x2, y2 and its six points (five landmarks in
# RetinaFace order, then the mouth centre), image pixels.
BOX = [10, 10, 50, 46]
POINTS = np.array([[20, 20], [40, 20], [30, 28], [24, 36], [36, 36], [30, 36]], np.float32)
COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0)]
CONFIG = Config(input_size=64, grid_size=4, min_face_size=0)


def image_with_points(width=128, height=64, points=POINTS, half=3):
    """Grey image with a coloured square of side 2 * half px centred on each point (in the
    boxes' continuous pixels: the square covers [x - half, x + half))."""
    image = np.full((height, width, 3), 90, np.uint8)
    for (x, y), colour in zip(points.astype(int), COLOURS):
        image[y - half:y + half, x - half:x + half] = colour
    return image


def colour_at(image, point):
    x, y = np.floor(point).astype(int)
    return tuple(int(v) for v in image[y, x])


def assert_colours_follow(image, points, order=range(6), tolerance=40):
    """The pixel under each output point has the colour drawn at the input point it came
    from: the points moved with the picture."""
    for k, source in enumerate(order):
        got = np.array(colour_at(image, points[k]))
        assert np.abs(got - COLOURS[source]).max() < tolerance, (k, got)


def test_whole_image_letterbox_maps_points_like_boxes():
    """128x64 -> 64: scale 0.5, 16 rows of padding above."""
    image = image_with_points()
    out, boxes, ignore, points = augment_image(image, np.float32([BOX]), np.zeros(1, bool),
                                               AugmentPlan.whole(128, 64), *specs(CONFIG), points=POINTS[None])
    np.testing.assert_allclose(boxes, [[5, 21, 25, 39]])
    np.testing.assert_allclose(points[0], POINTS * 0.5 + [0, 16])
    assert points.dtype == np.float32 and points.shape == (1, 6, 2)
    assert_colours_follow(out, points[0])


def test_flip_mirrors_the_points_and_swaps_right_and_left():
    """x -> 128 - x, then the letterbox; the subject's right eye of the flipped face is the
    old left eye mirrored (the green square now sits under the RIGHT_EYE point)."""
    image = image_with_points()
    plan = AugmentPlan(0, 0, 128, 64, flip=True)
    out, boxes, _, points = augment_image(image, np.float32([BOX]), np.zeros(1, bool), plan,
                                          *specs(CONFIG), points=POINTS[None])
    np.testing.assert_allclose(boxes, [[39, 21, 59, 39]])
    expected = {RIGHT_EYE: (44, 26), LEFT_EYE: (54, 26), 2: (49, 30),
                RIGHT_MOUTH: (46, 34), LEFT_MOUTH: (52, 34), MOUTH_CENTRE: (49, 34)}
    for k, xy in expected.items():
        np.testing.assert_allclose(points[0, k], xy, err_msg=str(k))
    assert points[0, RIGHT_EYE, 0] < points[0, LEFT_EYE, 0]  # still the viewer's left
    assert_colours_follow(out, points[0], order=[1, 0, 2, 4, 3, 5])


def test_crop_moves_points_keeps_those_outside_and_drops_them_with_their_face():
    """Crop x 8..72, y 4..32 (64 x 28 -> letterbox scale 1, 18 rows of padding). The mouth
    points (y 36) lie below the crop: kept as they are. A second face whose centre is
    outside the crop is dropped, its points with it."""
    image = image_with_points()
    boxes = np.float32([BOX, [80, 40, 120, 60]])
    points = np.stack([POINTS, POINTS + [70, 20]])
    out, kept, _, moved = augment_image(image, boxes, np.zeros(2, bool),
                                        AugmentPlan(8, 4, 64, 28), *specs(CONFIG), points=points)
    np.testing.assert_allclose(kept, [[2, 24, 42, 46]])  # clipped to the crop
    assert moved.shape == (1, 6, 2)
    np.testing.assert_allclose(moved[0], POINTS - [8, 4] + [0, 18])
    assert moved[0, RIGHT_MOUTH, 1] == 50 > 18 + 28  # outside the picture, not clipped
    assert_colours_follow(out, moved[0][:3], order=range(3))


def test_stretch_resize_scales_each_axis():
    config = CONFIG.replace(letterbox=False)
    _, boxes, _, points = augment_image(image_with_points(), np.float32([BOX]), np.zeros(1, bool),
                                        AugmentPlan.whole(128, 64), *specs(config), points=POINTS[None])
    np.testing.assert_allclose(boxes, [[5, 10, 25, 46]])
    np.testing.assert_allclose(points[0], POINTS * [0.5, 1.0])


def test_zoom_out_shrinks_points_into_the_padding_like_boxes():
    """A 256-px window from (-64, -32): the image at scale 0.25, 16 px from the left, 8 down."""
    _, boxes, _, points = augment_image(image_with_points(), np.float32([BOX]), np.zeros(1, bool),
                                        AugmentPlan(-64, -32, 256, 256), *specs(CONFIG), points=POINTS[None])
    np.testing.assert_allclose(boxes, [[18.5, 10.5, 28.5, 19.5]])
    np.testing.assert_allclose(points[0], POINTS * 0.25 + [16, 8])


def test_absent_points_stay_nan_through_a_flip():
    points = POINTS[None].copy()
    points[0, [RIGHT_MOUTH, LEFT_MOUTH]] = NAN
    _, _, _, out = augment_image(image_with_points(), np.float32([BOX]), np.zeros(1, bool),
                                 AugmentPlan(0, 0, 128, 64, flip=True), *specs(CONFIG), points=points)
    assert np.isnan(out[0, [RIGHT_MOUTH, LEFT_MOUTH]]).all()
    assert np.isfinite(out[0, [RIGHT_EYE, LEFT_EYE, 2, MOUTH_CENTRE]]).all()


def test_points_must_match_the_boxes():
    with pytest.raises(ValueError, match=r"points must be \(N, K, 2\) for the 1 boxes"):
        augment_image(image_with_points(), np.float32([BOX]), np.zeros(1, bool),
                      AugmentPlan.whole(128, 64), *specs(CONFIG), points=np.zeros((2, 6, 2)))


def _record(path, width, height):
    record = ImageRecord(path, "face.jpg", np.float32([BOX]) * (width / 128), np.zeros(1, bool),
                         landmarks=POINTS[None, :5] * (width / 128),
                         mouth_centres=POINTS[None, 5] * (width / 128))
    assert cv2.imwrite(path, cv2.resize(image_with_points(), (width, height),
                                        interpolation=cv2.INTER_NEAREST))
    return record


def test_load_training_sample_carries_the_records_points_through_a_reduced_decode(tmp_path):
    """A 512 x 256 JPEG into a 64 input is decoded at 1/8: the points come out as the
    letterbox of the file's points, exactly like the boxes."""
    record = _record(str(tmp_path / "face.jpg"), 512, 256)
    image, boxes, ignore, points = load_training_sample(record, *specs(CONFIG), None, False, with_points=True)
    letterbox = InputMapping.fit(512, 256, 64)
    np.testing.assert_allclose(boxes, letterbox.to_input(record.boxes), atol=1e-4)
    np.testing.assert_allclose(points, letterbox.points_to_input(face_points(record)), atol=1e-4)
    assert_colours_follow(image, points[0])
    # Without the request: the same three things as always.
    plain = load_training_sample(record, *specs(CONFIG), None, False)
    assert len(plain) == 3
    np.testing.assert_array_equal(plain[1], boxes)


def test_a_training_flip_chosen_by_the_config_swaps_the_points(tmp_path):
    record = _record(str(tmp_path / "face.jpg"), 128, 64)
    config = CONFIG.replace(flip_prob=1.0, crop_prob=0.0, jitter_prob=0.0)
    _, _, _, points = load_training_sample(record, *specs(config), np.random.default_rng(0), True,
                                           with_points=True)
    np.testing.assert_allclose(points[0, RIGHT_EYE], [44, 26])
    np.testing.assert_allclose(points[0, LEFT_EYE], [54, 26])


def test_faces_dropped_outside_the_image_drop_their_points():
    """faces_in_image drops boxes wholly outside the image; their points go too. A record
    without points gives NaN rows."""
    record = ImageRecord("x.jpg", "x.jpg", np.float32([BOX, [200, 10, 220, 30]]), np.zeros(2, bool),
                         landmarks=np.stack([POINTS[:5], POINTS[:5] + 190]))
    boxes, ignore, points = faces_in_image(record, 128, 64, with_points=True)
    assert len(boxes) == 1 and points.shape == (1, 6, 2)
    np.testing.assert_array_equal(points[0, :5], POINTS[:5])
    assert np.isnan(points[0, MOUTH_CENTRE]).all()
    bare = ImageRecord("x.jpg", "x.jpg", np.float32([BOX]), np.zeros(1, bool))
    assert np.isnan(faces_in_image(bare, 128, 64, with_points=True)[2]).all()


def test_mosaic_maps_each_tiles_points_by_its_scale_and_offset():
    """2 x 2 of 96: each tile halved, tile (0, 1) moved right by 48, tile (1, 1) by (48, 48)."""
    s = 96

    def tile(boxes, points):
        return (np.full((s, s, 3), 90, np.uint8), np.float32(boxes).reshape(-1, 4),
                np.zeros(len(boxes), bool), np.float32(points).reshape(-1, 6, 2))

    p = np.tile(np.float32([[48, 48]]), (6, 1))
    p[5] = NAN
    tiles = [tile([(0, 0, 48, 48)], [p]), tile([(40, 40, 60, 60)], [p]), tile([], []),
             tile([(40, 40, 60, 60)], [p])]
    _, boxes, _, points = mosaic(tiles, s, min_face_size=0)
    assert points.shape == (3, 6, 2)
    np.testing.assert_allclose(points[:, 0], [[24, 24], [72, 24], [72, 72]])
    assert np.isnan(points[:, 5]).all()
    with pytest.raises(ValueError, match="all carry points or none"):
        mosaic(tiles[:3] + [tiles[3][:3]], s, min_face_size=0)


def test_the_generator_is_unchanged_by_records_with_points(tmp_path):
    """Records with landmarks give the same batches as the same records without: the
    generator neither breaks on them nor encodes them (the grid has no landmark channels)."""
    records = [_record(str(tmp_path / "face.jpg"), 128, 64)] * 4
    bare = [ImageRecord(r.path, r.name, r.boxes, r.ignore) for r in records]
    config = Config(input_size=64, grid_size=4, batch_size=2, seed=3)
    with_points = FaceGridDataset(records, config, training=True)
    without = FaceGridDataset(bare, config, training=True)
    for k in range(len(with_points)):
        for a, b in zip(with_points[k], without[k]):
            np.testing.assert_array_equal(a, b)
