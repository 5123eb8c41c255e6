"""Augmentation keeps every box on its face: crop, flip, clipping, letterbox, reduced decode.

The test images are a uniform grey background with solid, saturated rectangles drawn
exactly at the face boxes, so a box is "on its face" when the pixels inside it are
saturated and the pixels just around it are grey. Photometric jitter keeps grey pixels
grey, so the check holds through jitter too.
"""

import cv2
import numpy as np
import pytest

from config import Config
from data.augment import (
    AugmentPlan,
    AugmentSpec,
    augment_image,
    choose_reduction,
    faces_in_image,
    load_training_sample,
    photometric_jitter,
    plan_augmentation,
)
from data.boxes import InputMapping, box_sizes
from data.draw import IGNORE_COLOR, draw_boxes
from data.image import PAD_VALUE, read_image
from data.records import ImageRecord
from common.errors import ConfigError, ImageError


def specs(config):
    """The grid and augmentation specs a sample loader takes, from one test Config."""
    return config.grid_spec(), AugmentSpec.from_config(config)


GREY = 90  # not PAD_VALUE, so padding and background differ
FACE_COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255)]


def make_face_image(path, width, height, boxes, quality=95):
    """Write a grey JPEG (or PNG by extension) with solid coloured rectangles at `boxes`
    (x1, y1, x2, y2)."""
    image = np.full((height, width, 3), GREY, np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, int)):
        image[max(y1, 0) : y2, max(x1, 0) : x2] = FACE_COLORS[i % len(FACE_COLORS)]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if str(path).endswith(".jpg") else []
    assert cv2.imwrite(str(path), image, params)
    return str(path)


def spread(pixels):
    """Per-pixel colour saturation proxy: max channel minus min channel."""
    p = pixels.astype(np.int16)
    return p.max(axis=-1) - p.min(axis=-1)


def assert_boxes_on_faces(image, boxes, ignore, min_side=8.0):
    """Inside each learned box (x1, y1, x2, y2): saturated face colour; a ring just
    outside: grey."""
    s = image.shape[0]
    for (x, y, right, bottom), ign in zip(boxes, ignore):
        w, h = right - x, bottom - y
        if ign or min(w, h) < min_side:
            continue
        mx, my = max(2.0, 0.2 * w), max(2.0, 0.2 * h)
        inner = image[int(np.ceil(y + my)) : int(y + h - my), int(np.ceil(x + mx)) : int(x + w - mx)]
        assert inner.size, (x, y, w, h)
        assert np.median(spread(inner)) > 60, f"box {x:.1f},{y:.1f},{w:.1f},{h:.1f} not on a face"
        # A 2-px ring 3 px outside the box must be background (or padding): the box is tight.
        x1, y1 = int(np.floor(x)) - 4, int(np.floor(y)) - 4
        x2, y2 = int(np.ceil(x + w)) + 4, int(np.ceil(y + h)) + 4
        ring = []
        if y1 >= 0:
            ring.append(image[y1 : y1 + 2, max(x1, 0) : min(x2, s)])
        if y2 <= s:
            ring.append(image[y2 - 2 : y2, max(x1, 0) : min(x2, s)])
        if x1 >= 0:
            ring.append(image[max(y1, 0) : min(y2, s), x1 : x1 + 2])
        if x2 <= s:
            ring.append(image[max(y1, 0) : min(y2, s), x2 - 2 : x2])
        ring = [r.reshape(-1, 3) for r in ring if r.size]
        if ring:
            assert np.median(spread(np.concatenate(ring))) < 25, f"box {x:.1f},{y:.1f} loose"


@pytest.fixture
def scene(tmp_path):
    """An 800x600 JPEG with five faces far apart (gaps >= 60 px)."""
    boxes = np.array(
        [[60, 60, 180, 210], [300, 80, 360, 150], [520, 60, 720, 280], [80, 380, 170, 470],
         [400, 400, 440, 450]],
        np.float32,
    )
    path = make_face_image(tmp_path / "scene.jpg", 800, 600, boxes)
    return ImageRecord(path, "scene.jpg", boxes, np.zeros(len(boxes), bool))


def test_training_boxes_stay_on_faces(scene):
    """Through random crop, flip, jitter, letterbox and reduced decode, every learned box
    stays inside the input and on its drawn face."""
    config = Config(input_size=128, grid_size=8)
    seen_crops = 0
    for seed in range(40):
        image, boxes, ignore = load_training_sample(scene, *specs(config), np.random.default_rng(seed), True)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and ignore.dtype == bool and len(boxes) == len(ignore)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128 + 1e-3).all()
        assert_boxes_on_faces(image, boxes, ignore)
        seen_crops += len(boxes) < len(scene.boxes)
    assert seen_crops > 5  # crops happened (some faces fell outside them)


def test_training_is_seeded(scene):
    """The same generator seed gives the same sample; different seeds give different ones."""
    config = Config(input_size=64, grid_size=4)
    a = load_training_sample(scene, *specs(config), np.random.default_rng(7), True)
    b = load_training_sample(scene, *specs(config), np.random.default_rng(7), True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    others = [load_training_sample(scene, *specs(config), np.random.default_rng(s), True)[0] for s in range(8)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_flip_mirrors_image_and_boxes(tmp_path):
    """A flip plan mirrors the boxes (x1, x2 -> S - x2, S - x1) and they stay on the faces."""
    boxes = np.array([[20, 40, 80, 120]], np.float32)
    path = make_face_image(tmp_path / "left.jpg", 400, 400, boxes)
    image = read_image(path)
    config = Config(input_size=64, grid_size=4)
    plain = augment_image(image, boxes, np.zeros(1, bool), AugmentPlan.whole(400, 400), *specs(config))
    flipped_plan = AugmentPlan(0, 0, 400, 400, flip=True)
    flipped = augment_image(image, boxes, np.zeros(1, bool), flipped_plan, *specs(config))
    x1, y1, x2, y2 = plain[1][0]
    np.testing.assert_allclose(flipped[1][0], [64 - x2, y1, 64 - x1, y2], atol=1e-4)
    np.testing.assert_array_equal(flipped[0], plain[0][:, ::-1])
    assert_boxes_on_faces(flipped[0], flipped[1], flipped[2], min_side=6)


def test_boxes_outside_the_image_are_clipped_or_dropped(tmp_path):
    """WIDER boxes reaching outside the image are clipped to it; those wholly outside
    (zero size after clipping) are dropped."""
    boxes = np.array([[-30, 50, 70, 110], [350, 300, 450, 500], [500, 10, 520, 30]], np.float32)
    path = make_face_image(tmp_path / "edge.jpg", 400, 400, boxes[:2])
    record = ImageRecord(path, "edge.jpg", boxes, np.zeros(3, bool))
    config = Config(input_size=64, grid_size=4)
    _, out_boxes, ignore = load_training_sample(record, *specs(config), None, training=False)
    scale = 64 / 400
    expected = np.array([[0, 50, 70, 110], [350, 300, 400, 400]], np.float32) * scale
    np.testing.assert_allclose(out_boxes, expected, atol=1e-3)
    assert not ignore.any()


def test_small_faces_are_ignored_on_their_smaller_side(tmp_path):
    """A face whose smaller side is under min_face_size input px is ignored, not dropped."""
    # 1000 px -> 160 px input: scale 0.16. 15 px -> 2.4 px (< 4), 40 px -> 6.4 px.
    boxes = np.array([[100, 100, 115, 140], [300, 100, 340, 115], [500, 100, 540, 140]], np.float32)
    path = make_face_image(tmp_path / "small.jpg", 1000, 1000, boxes)
    record = ImageRecord(path, "small.jpg", boxes, np.zeros(3, bool))
    config = Config(input_size=160, grid_size=5, min_face_size=4.0)
    _, out_boxes, ignore = load_training_sample(record, *specs(config), None, training=False)
    assert len(out_boxes) == 3
    assert ignore.tolist() == [True, True, False]


def test_face_cut_by_crop_is_clipped_and_ignored_below_half():
    """A crop keeps faces whose centre is inside it, clipped to it; a cut face keeping less
    than half its area is ignored, one keeping more stays a face."""
    boxes = np.array(
        [[40, 20, 60, 40],  # wholly inside -> face, unchanged
         [180, 60, 220, 80],  # centre x 200 outside the crop -> dropped
         [20, 92, 40, 112],  # centre y 102 outside -> dropped although 40% is visible
         [50, 85, 70, 105],  # rows 85..100 visible: 75% -> face, clipped
         [88, 88, 108, 108]],  # corner cut: 12 x 12 of 20 x 20 = 36% visible -> ignored
        np.float32,
    )
    image = np.full((200, 300, 3), GREY, np.uint8)
    config = Config(input_size=64, grid_size=4, min_face_size=0)
    crop = AugmentPlan(0, 0, 100, 100)
    _, out, ignore = augment_image(image, boxes, np.zeros(5, bool), crop, *specs(config))
    expected = np.array([[40, 20, 60, 40], [50, 85, 70, 100], [88, 88, 100, 100]]) * (64 / 100)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert ignore.tolist() == [False, False, True]
    assert config.min_visible_fraction == 0.5
    # A lower threshold keeps the 36% corner as a face.
    lenient = config.replace(min_visible_fraction=0.3)
    _, _, ignore = augment_image(image, boxes, np.zeros(5, bool), crop, *specs(lenient))
    assert ignore.tolist() == [False, False, False]


def test_validation_is_deterministic_letterbox_of_whole_image(scene):
    """Validation: no crop/flip/jitter; boxes are the letterbox mapping of the clipped boxes
    and the padding is the fixed grey."""
    config = Config(input_size=128, grid_size=8)
    a = load_training_sample(scene, *specs(config), np.random.default_rng(0), training=False)
    b = load_training_sample(scene, *specs(config), np.random.default_rng(99), training=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    expected = InputMapping.fit(800, 600, 128).to_input(scene.boxes)
    np.testing.assert_allclose(a[1], expected, atol=0.5)
    # 800x600 -> 128x96 content between two 16-row bands of padding.
    assert (a[0][:16] == PAD_VALUE).all() and (a[0][-16:] == PAD_VALUE).all()
    assert np.abs(a[0][16:112].astype(int) - GREY).min() < 3
    assert_boxes_on_faces(a[0], a[1], a[2])


def test_augment_off_is_the_validation_path(scene):
    """training=True with config.augment False gives exactly the validation sample."""
    config = Config(input_size=64, grid_size=4, augment=False)
    a = load_training_sample(scene, *specs(config), np.random.default_rng(3), True)
    b = load_training_sample(scene, *specs(config), None, False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_reduced_decode_keeps_boxes_exact(tmp_path):
    """A large JPEG is decoded at 1/8 and boxes land where a full decode puts them."""
    boxes = np.array([[200, 240, 600, 720], [1200, 600, 1520, 920]], np.float32)
    path = make_face_image(tmp_path / "big.jpg", 2000, 1500, boxes)
    record = ImageRecord(path, "big.jpg", boxes, np.zeros(2, bool))
    config = Config(input_size=224, grid_size=7)
    assert choose_reduction(2000, 1500, 224, True) == 8
    image, out_boxes, ignore = load_training_sample(record, *specs(config), None, training=False)
    full = InputMapping.fit(2000, 1500, 224).to_input(boxes)
    np.testing.assert_allclose(out_boxes, full, atol=0.6)
    assert_boxes_on_faces(image, out_boxes, ignore)
    # No jitter in validation: the face pixels keep their exact colours.
    x1, y1, x2, y2 = out_boxes[0].astype(int)
    inner = image[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3]
    np.testing.assert_allclose(inner.mean((0, 1)), FACE_COLORS[0], atol=6)


def test_png_is_decoded_in_full(tmp_path):
    """A non-JPEG image goes through the full-decode path with the same box mapping."""
    boxes = np.array([[100, 100, 300, 250]], np.float32)
    path = make_face_image(tmp_path / "face.png", 800, 400, boxes)
    record = ImageRecord(path, "face.png", boxes, np.zeros(1, bool))
    config = Config(input_size=64, grid_size=4)
    image, out, _ = load_training_sample(record, *specs(config), None, training=False)
    np.testing.assert_allclose(out, InputMapping.fit(800, 400, 64).to_input(boxes), atol=1e-4)
    assert image.shape == (64, 64, 3)


def test_misnamed_png_falls_back_to_a_full_decode(tmp_path):
    """A PNG saved as .jpg with odd sizes: the reduced decode does not give the JPEG sizes,
    so the sample is planned again on a full decode, with boxes still on the faces."""
    boxes = np.array([[101, 151, 341, 351], [500, 300, 700, 500]], np.float32)
    png = make_face_image(tmp_path / "real.png", 901, 601, boxes)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(open(png, "rb").read())
    record = ImageRecord(str(fake), "fake.jpg", boxes, np.zeros(2, bool))
    config = Config(input_size=128, grid_size=8)
    image, out, ignore = load_training_sample(record, *specs(config), None, training=False)
    np.testing.assert_allclose(out, InputMapping.fit(901, 601, 128).to_input(boxes), atol=1e-3)
    assert_boxes_on_faces(image, out, ignore)


def test_stretch_mode_fills_the_input(scene):
    """With letterbox off the crop is stretched to the whole input: no padding."""
    config = Config(input_size=128, grid_size=8, letterbox=False)
    image, boxes, ignore = load_training_sample(scene, *specs(config), None, training=False)
    np.testing.assert_allclose(boxes, scene.boxes * [128 / 800, 128 / 600, 128 / 800, 128 / 600], atol=0.3)
    assert_boxes_on_faces(image, boxes, ignore)


def test_choose_reduction_never_loses_input_pixels():
    """The reduction keeps the crop at least as large as its part of the input."""
    assert choose_reduction(224, 224, 224, True) == 1
    assert choose_reduction(447, 300, 224, True) == 1
    assert choose_reduction(448, 300, 224, True) == 2
    assert choose_reduction(1000, 1000, 224, True) == 4
    assert choose_reduction(1800, 200, 224, True) == 8  # letterbox: long side decides
    assert choose_reduction(1800, 200, 224, False) == 1  # stretch: short side decides


def test_plan_keeps_crop_inside_image_and_around_faces(scene):
    """Training crops are squares inside the image; most contain at least one face centre."""
    boxes, ignore = faces_in_image(scene, 800, 600)
    with_face = 0
    for seed in range(200):
        plan = plan_augmentation(800, 600, boxes, ignore, np.random.default_rng(seed), True,
                                 AugmentSpec())
        assert plan.x >= 0 and plan.y >= 0
        assert plan.x + plan.width <= 800 + 1e-6 and plan.y + plan.height <= 600 + 1e-6
        assert plan.width >= 0.3 * 600 - 1e-6
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        with_face += bool(
            ((cx >= plan.x) & (cx < plan.x + plan.width) & (cy >= plan.y) & (cy < plan.y + plan.height)).any()
        )
    assert with_face > 170
    whole = plan_augmentation(800, 600, boxes, ignore, None, False, AugmentSpec())
    assert whole == AugmentPlan.whole(800, 600)


def test_crop_prob_sets_how_often_training_crops(scene):
    """crop_prob 0 keeps every whole image (flip still varies), 1 crops every time."""
    boxes, ignore = faces_in_image(scene, 800, 600)

    def plans(crop_prob):
        return [plan_augmentation(800, 600, boxes, ignore, np.random.default_rng(seed), True,
                                  AugmentSpec(crop_prob=crop_prob)) for seed in range(200)]

    whole = plans(0.0)
    assert all((p.x, p.y, p.width, p.height) == (0, 0, 800, 600) for p in whole)
    assert 60 < sum(p.flip for p in whole) < 140
    assert all(p.width < 800 for p in plans(1.0))  # a square crop of at most 600 px
    default = sum(p.width < 800 for p in plans(Config.crop_prob))
    assert 130 < default < 170  # about 3 in 4
    with pytest.raises(ConfigError, match="crop_prob=1.5"):
        Config(crop_prob=1.5)


def test_flip_and_jitter_strengths_come_from_the_config(scene):
    """flip_prob and jitter_prob 0 / 1 give never / always; the jitter draws stay inside
    the config's ranges; an inverted range is refused naming its low end."""
    boxes, ignore = faces_in_image(scene, 800, 600)

    def plans(**changes):
        config = Config(crop_prob=0.0, **changes)
        return [plan_augmentation(800, 600, boxes, ignore, np.random.default_rng(seed), True,
                                  AugmentSpec.from_config(config)) for seed in range(100)]

    still = plans(flip_prob=0.0, jitter_prob=0.0)
    assert all(p == AugmentPlan.whole(800, 600) for p in still)
    always = plans(flip_prob=1.0, jitter_prob=1.0, brightness_delta=10.0, contrast_min=0.9,
                   contrast_max=1.1, saturation_min=1.2, saturation_max=1.4, hue_delta=2)
    assert all(p.flip for p in always)
    assert all(-10 <= p.brightness <= 10 and 0.9 <= p.contrast <= 1.1 for p in always)
    assert all(1.2 <= p.saturation <= 1.4 and -2 <= p.hue <= 2 for p in always)
    assert {p.hue for p in always} == {-2, -1, 0, 1, 2}
    with pytest.raises(ConfigError, match=r"^contrast_min=1\.5: must be <= contrast_max=1\.25"):
        Config(contrast_min=1.5)
    with pytest.raises(ConfigError, match=r"^saturation_min=2\.0: must be <= saturation_max"):
        Config(saturation_min=2.0)


def test_photometric_jitter_changes_colours_keeps_grey():
    """Jitter changes colours, keeps grey pixels grey, and an identity plan is a no-op."""
    image = np.full((8, 8, 3), GREY, np.uint8)
    image[:4] = (0, 0, 200)
    identity = AugmentPlan.whole(8, 8)
    assert photometric_jitter(image, identity) is image
    plan = AugmentPlan(0, 0, 8, 8, brightness=20, contrast=1.2, saturation=0.7, hue=8)
    out = photometric_jitter(image, plan)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out[:4], image[:4])
    assert (spread(out[4:]) == 0).all()  # grey stays grey
    assert (out[4:] > GREY).all()  # brighter


def test_unreadable_images_raise_image_error_naming_the_file(tmp_path):
    """Missing and corrupt files raise ImageError whose message names the file."""
    config = Config(input_size=64, grid_size=4)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    for path in (str(bad), str(tmp_path / "missing.jpg")):
        with pytest.raises(ImageError, match=path.replace(".", r"\.")):
            load_training_sample(ImageRecord(path, "x.jpg"), *specs(config), np.random.default_rng(0), True)


def test_draw_boxes_colours_faces_and_ignored(tmp_path):
    """draw_boxes returns a copy with face boxes in the given colour and ignored in grey."""
    image = np.zeros((50, 50, 3), np.uint8)
    boxes = np.array([[5, 5, 15, 15], [30, 30, 40, 40]], np.float32)
    out = draw_boxes(image, boxes, scores=np.array([0.9, 0.3]), ignore=np.array([False, True]))
    assert not image.any()  # input untouched
    assert tuple(out[5, 10]) == (0, 255, 0)  # top edge of the face box
    assert tuple(out[40, 35]) == IGNORE_COLOR  # bottom edge of the ignored box
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        draw_boxes(image, boxes, scores=np.array([0.5]))


def test_zoom_out_crops_shrink_the_image_inside_padding_with_boxes_on_faces(scene):
    """crop_max_scale above 1: the window reaches past the image, which shrinks to the
    window's scale inside grey padding; every box stays on its face."""
    config = Config(input_size=160, grid_size=5, crop_prob=1.0, crop_min_scale=1.6,
                    crop_max_scale=2.0, min_face_size=4.0)
    boxes, ignore = faces_in_image(scene, 800, 600)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        plan = plan_augmentation(800, 600, boxes, ignore, rng, True, AugmentSpec.from_config(config))
        assert 960 - 1e-6 <= plan.width == plan.height <= 1200 + 1e-6
        assert plan.x <= 0 and plan.y <= 0  # the whole image lies inside the window
        image, out, ign = load_training_sample(scene, *specs(config), np.random.default_rng(seed), True)
        assert len(out) == 5
        scale = 160 / max(plan.width, plan.height)
        # The image shrank to the window's scale: a face keeps that fraction of its size.
        widths, face_widths = box_sizes(out)[:, 0], box_sizes(boxes)[:, 0]
        np.testing.assert_allclose(np.sort(widths), np.sort(face_widths) * scale, rtol=0.02)
        assert (image == PAD_VALUE).all(axis=-1).mean() > 0.4  # most of the input is padding
        assert_boxes_on_faces(image, out, ign, min_side=8.0)
    with pytest.raises(ConfigError, match="crop_min_scale"):
        Config(crop_min_scale=1.5, crop_max_scale=1.0)


# --- mosaic: n x n samples in one input, box bookkeeping exact ----------------------------
def mosaic_tile(value, boxes, ignore, s=96):
    image = np.full((s, s, 3), value, np.uint8)
    return image, np.float32(boxes).reshape(-1, 4), np.array(ignore, bool)


def test_mosaic_2x2_places_each_tile_and_maps_its_faces():
    from data.augment import mosaic

    s = 96
    tiles = [mosaic_tile(10, [(0, 0, 48, 48)], [False]),
             mosaic_tile(20, [(48, 48, 96, 96), (10, 10, 30, 40)], [False, True]),
             mosaic_tile(30, [], []),
             mosaic_tile(40, [(20, 20, 60, 60)], [False])]
    image, boxes, ignore = mosaic(tiles, s, min_face_size=4.0)
    assert image.shape == (s, s, 3)
    assert image[0, 0, 0] == 10 and image[0, 95, 0] == 20
    assert image[95, 0, 0] == 30 and image[95, 95, 0] == 40
    np.testing.assert_allclose(boxes, [(0, 0, 24, 24),       # tile (0, 0): halved
                                       (72, 24, 96, 48),     # tile (0, 1): + (48, 0)
                                       (53, 5, 63, 20),
                                       (58, 58, 78, 78)])    # tile (1, 1): + (48, 48)
    assert ignore.tolist() == [False, False, True, False]  # the ignore region stays one


def test_mosaic_3x3_tiles_fill_the_input_and_small_faces_become_ignore():
    from data.augment import mosaic

    s = 320  # 320 / 3 is not whole: tiles of 107, 106, 107 px
    tiles = [mosaic_tile(k, [(0, 0, 12, 12), (100, 100, 160, 160)], [False, False], s=s)
             for k in range(9)]
    image, boxes, ignore = mosaic(tiles, s, min_face_size=4.0)
    assert [image[r, c, 0] for r in (0, 160, 319) for c in (0, 160, 319)] == list(range(9))
    assert len(boxes) == 18
    sizes = boxes[:, 2:] - boxes[:, :2]
    # A 12-px face shrinks to ~4 px: under the minimum it is ignored, not background.
    assert np.all(ignore[0::2] == (sizes[0::2].min(axis=1) < 4.0))
    assert not ignore[1::2].any()
    np.testing.assert_allclose(sizes[1::2], 60 * 106.67 / 320, atol=0.2)
    assert boxes.min() >= 0 and boxes.max() <= s


def test_mosaic_refuses_a_tile_count_that_is_not_a_square():
    from data.augment import mosaic

    with pytest.raises(ValueError, match="n \\* n tiles"):
        mosaic([mosaic_tile(0, [], [])] * 3, 96, 4.0)


def test_dataset_mosaics_are_seeded_and_off_by_default(tmp_path):
    """mosaic_prob 1: every training sample is a 2x2 mosaic, the same for the same seed;
    the default (0) draws nothing more from the sample's generator."""
    from data.data_generator import FaceGridDataset
    from data.records import ImageRecord

    rng = np.random.default_rng(0)
    records = []
    for k in range(4):
        path = str(tmp_path / f"im{k}.jpg")
        cv2.imwrite(path, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        records.append(ImageRecord(path, f"e/im{k}.jpg", np.float32([[40, 30, 100, 100]]),
                                   np.zeros(1, bool)))
    config = Config(input_size=96, grid_size=12, batch_size=2, seed=3, crop_prob=0.0)
    plain = FaceGridDataset(records, config, training=True, workers=1)
    mosaics = FaceGridDataset(records, config.replace(mosaic_prob=1.0), training=True, workers=1)
    again = FaceGridDataset(records, config.replace(mosaic_prob=1.0), training=True, workers=1)
    _, _, faces = mosaics.load_batch(0)
    assert all(len(boxes) == 4 for boxes, _ in faces)  # one face from each of 4 tiles
    np.testing.assert_array_equal(mosaics[0][0], again[0][0])
    _, _, plain_faces = plain.load_batch(0)
    assert all(len(boxes) == 1 for boxes, _ in plain_faces)


def test_augment_spec_is_configs_augmentation_fields_under_the_same_names():
    """Derived field by field, defaults and all: a flag of train.py reaches the sample."""
    import dataclasses

    config = Config(crop_prob=0.1, flip_prob=0.0, min_face_size=7.0, mosaic_tiles=3)
    spec = AugmentSpec.from_config(config)
    assert (spec.crop_prob, spec.flip_prob, spec.min_face_size, spec.mosaic_tiles) == (
        0.1, 0.0, 7.0, 3)
    assert AugmentSpec() == AugmentSpec.from_config(Config())
    config_fields = {f.name for f in dataclasses.fields(Config)}
    assert {f.name for f in dataclasses.fields(AugmentSpec)} <= config_fields


def test_a_plan_with_no_flip_and_no_jitter_chance_is_the_crop_alone():
    """The spec alone decides the plan: flip_prob 0 and jitter_prob 0 never flip or jitter."""
    boxes = np.array([[100, 100, 200, 200]], np.float32)
    spec = AugmentSpec(flip_prob=0.0, jitter_prob=0.0, crop_prob=1.0)
    for seed in range(20):
        plan = plan_augmentation(800, 600, boxes, np.zeros(1, bool),
                                 np.random.default_rng(seed), True, spec)
        assert not plan.flip and (plan.brightness, plan.contrast, plan.hue) == (0.0, 1.0, 0)
        assert plan.width == plan.height <= 600
