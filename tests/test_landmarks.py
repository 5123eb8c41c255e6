"""Five landmarks per face: the record's validation, the point order, align_face and nme."""

import math

import numpy as np
import pytest

from data.landmarks import (
    ARCFACE_TEMPLATE,
    FLIP_ORDER,
    LANDMARK_NAMES,
    LEFT_EYE,
    LEFT_MOUTH,
    MOUTH_CENTRE,
    POINT_NAMES,
    RIGHT_EYE,
    RIGHT_MOUTH,
    align_face,
    empty_landmarks,
    face_points,
    flip_points,
    nme,
    split_points,
)
from data.records import ImageRecord

NAN = np.nan


def _record(n=2, **kw):
    boxes = np.array([[10, 10, 50, 60], [60, 10, 90, 40]][:n], np.float32)
    return ImageRecord(path="a.jpg", name="a.jpg", boxes=boxes, ignore=np.zeros(n, bool), **kw)


# --- ImageRecord.landmarks / mouth_centres ---------------------------------------------------

def test_a_record_without_points_holds_none():
    """None means 'this source has no points', not zero faces with points."""
    record = _record()
    assert record.landmarks is None and record.mouth_centres is None


def test_record_landmarks_become_float32_of_the_boxes_shape():
    points = np.arange(20, dtype=np.float64).reshape(2, 5, 2)
    record = _record(landmarks=points, mouth_centres=[[1, 2], [NAN, NAN]])
    assert record.landmarks.dtype == np.float32 and record.landmarks.shape == (2, 5, 2)
    assert record.mouth_centres.dtype == np.float32 and record.mouth_centres.shape == (2, 2)
    np.testing.assert_array_equal(record.landmarks, points)


@pytest.mark.parametrize("shape", [(3, 5, 2), (2, 4, 2), (2, 5, 3), (10, 2), (2, 5)])
def test_record_landmarks_of_another_shape_are_refused(shape):
    """One row of five points per box: a mismatch is a reader's bug, caught at once."""
    with pytest.raises(ValueError, match=r"a\.jpg: landmarks must have shape \(2, 5, 2\)"):
        _record(landmarks=np.zeros(shape, np.float32))


def test_record_mouth_centres_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"mouth_centres must have shape \(2, 2\)"):
        _record(mouth_centres=np.zeros((2, 5, 2)))


def test_a_point_half_nan_or_infinite_is_refused():
    """An absent point is NaN in both coordinates; anything else is corrupt."""
    points = empty_landmarks(2)
    points[0, 1, 0] = 5.0
    with pytest.raises(ValueError, match="one coordinate NaN"):
        _record(landmarks=points)
    points = np.zeros((2, 5, 2), np.float32)
    points[1, 2, 1] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        _record(landmarks=points)


def test_select_keeps_every_per_face_array_aligned():
    points = np.arange(20, dtype=np.float32).reshape(2, 5, 2)
    record = _record(landmarks=points, mouth_centres=[[1, 2], [3, 4]],
                     attributes=np.array([[0] * 6, [1] * 6]))
    record.select(np.array([False, True]))
    np.testing.assert_array_equal(record.boxes, [[60, 10, 90, 40]])
    np.testing.assert_array_equal(record.landmarks, points[1:])
    np.testing.assert_array_equal(record.mouth_centres, [[3, 4]])
    np.testing.assert_array_equal(record.attributes, [[1] * 6])


# --- the order and its flip ------------------------------------------------------------------

def test_the_order_is_retinafaces_and_the_template_agrees():
    """RetinaFace / YuNet order, the subject's right first: in the upright template (a
    frontal face) the right eye and right mouth corner are on the viewer's left."""
    assert LANDMARK_NAMES == ("right eye", "left eye", "nose tip", "right mouth corner",
                              "left mouth corner")
    assert ARCFACE_TEMPLATE[RIGHT_EYE, 0] < ARCFACE_TEMPLATE[LEFT_EYE, 0]
    assert ARCFACE_TEMPLATE[RIGHT_MOUTH, 0] < ARCFACE_TEMPLATE[LEFT_MOUTH, 0]
    assert POINT_NAMES[MOUTH_CENTRE] == "mouth centre"


def test_flip_mirrors_x_and_swaps_right_and_left():
    """After a flip the subject's right eye is the mirror of the old left eye (so the
    mirrored template is the template again, up to the flip of x)."""
    points = ARCFACE_TEMPLATE[None].copy()
    flipped = flip_points(points, 112)
    np.testing.assert_allclose(flipped[0, RIGHT_EYE], [112 - 73.5318, 51.5014], atol=1e-4)
    np.testing.assert_allclose(flipped[0, LEFT_MOUTH], [112 - 41.5493, 92.3655], atol=1e-4)
    np.testing.assert_allclose(flipped[0, 2], [112 - 56.0252, 71.7366], atol=1e-4)
    assert flipped[0, RIGHT_EYE, 0] < flipped[0, LEFT_EYE, 0]  # still a frontal face
    np.testing.assert_allclose(flip_points(flipped, 112), points, atol=1e-4)  # an involution
    assert FLIP_ORDER == (1, 0, 2, 4, 3)


def test_flip_of_six_points_keeps_the_mouth_centre_in_place_and_nan_stays_nan():
    points = np.full((1, 6, 2), NAN, np.float32)
    points[0, MOUTH_CENTRE] = [30, 40]
    points[0, RIGHT_EYE] = [10, 5]
    flipped = flip_points(points, 100)
    np.testing.assert_array_equal(flipped[0, MOUTH_CENTRE], [70, 40])
    np.testing.assert_array_equal(flipped[0, LEFT_EYE], [90, 5])
    assert np.isnan(flipped[0, RIGHT_EYE]).all()


def test_flip_points_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"\(N, 5, 2\) or \(N, 6, 2\)"):
        flip_points(np.zeros((2, 4, 2)), 10)


def test_face_points_and_split_points_round_trip():
    landmarks = np.arange(20, dtype=np.float32).reshape(2, 5, 2)
    record = _record(landmarks=landmarks, mouth_centres=[[NAN, NAN], [7, 8]])
    points = face_points(record)
    assert points.shape == (2, 6, 2)
    back, centres = split_points(points)
    np.testing.assert_array_equal(back, landmarks)
    np.testing.assert_array_equal(centres, [[NAN, NAN], [7, 8]])
    assert np.isnan(face_points(_record())).all()  # a record without points: all NaN


# --- align_face ------------------------------------------------------------------------------

def _blob_image(points, width=300, height=260, sigma=1.6):
    """A grey image with a bright gaussian blob centred on each point (x, y in the pixel
    coordinates OpenCV warps: pixel (i, j) is at x = j, y = i)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width), np.float64)
    for x, y in points:
        image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return np.repeat((np.clip(image, 0, 1) * 250)[..., None], 3, axis=2).astype(np.uint8)


def _centroids(crop, centres, radius=6):
    """The intensity centroid of the blob near each expected centre."""
    grey = crop[..., 0].astype(np.float64)
    found = []
    for x, y in centres:
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        window = grey[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1]
        ys, xs = np.mgrid[y0:y0 + window.shape[0], x0:x0 + window.shape[1]]
        found.append([(xs * window).sum() / window.sum(), (ys * window).sum() / window.sum()])
    return np.array(found)


@pytest.mark.parametrize("size", [112, 160])
def test_align_face_puts_the_points_back_on_the_template(size):
    """Points drawn at a known similarity of the template (rotated 20 degrees, scaled 1.7,
    moved) come back onto the template (scaled to `size`) within 0.5 px in the crop."""
    angle, scale, shift = math.radians(20), 1.7, np.array([90.0, 40.0])
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)],
                                 [math.sin(angle), math.cos(angle)]])
    points = ARCFACE_TEMPLATE.astype(np.float64) @ rotation.T + shift
    crop = align_face(_blob_image(points), points, size=size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    template = ARCFACE_TEMPLATE * (size / 112)
    np.testing.assert_allclose(_centroids(crop, template), template, atol=0.5)


def test_align_face_with_mirrored_order_does_not_fit():
    """The order matters: points given left-for-right cannot be mapped onto the template by
    a similarity (no mirror), so the eyes land far from where a recogniser expects them."""
    points = ARCFACE_TEMPLATE.astype(np.float64) * 1.5 + [60, 50]
    image = _blob_image(points)
    swapped = points[list(FLIP_ORDER)]
    crop = align_face(image, swapped)
    grey = crop[..., 0].astype(np.float64)
    right_eye = ARCFACE_TEMPLATE[RIGHT_EYE].round().astype(int)
    # In the right order the right eye's blob is at the template's right eye; here it is not.
    good = align_face(image, points)[..., 0].astype(np.float64)
    assert good[right_eye[1], right_eye[0]] > 150
    assert grey[right_eye[1], right_eye[0]] < good[right_eye[1], right_eye[0]] / 2


@pytest.mark.parametrize("landmarks, message", [
    (np.zeros((4, 2)), r"shape \(5, 2\)"),
    (np.zeros((5, 3)), r"shape \(5, 2\)"),
    (np.zeros((1, 5, 2)), r"shape \(5, 2\)"),
])
def test_align_face_refuses_wrong_shapes(landmarks, message):
    with pytest.raises(ValueError, match=message):
        align_face(np.zeros((50, 50, 3), np.uint8), landmarks)


def test_align_face_refuses_absent_points_naming_them():
    points = ARCFACE_TEMPLATE.copy()
    points[LEFT_MOUTH] = NAN
    with pytest.raises(ValueError, match="left mouth corner"):
        align_face(np.zeros((120, 120, 3), np.uint8), points)


def test_align_face_refuses_degenerate_points_and_bad_inputs():
    with pytest.raises(ValueError, match="one place"):
        align_face(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), 7.0))
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\)"):
        align_face(np.zeros((50,), np.uint8), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="size must be a positive"):
        align_face(np.zeros((50, 50, 3), np.uint8), ARCFACE_TEMPLATE, size=0)


# --- nme -------------------------------------------------------------------------------------

def _face(eye_distance=10.0):
    """Truth of one upright face with eyes `eye_distance` apart."""
    d = eye_distance
    return np.array([[[0, 0], [d, 0], [d / 2, d / 2], [0, d], [d, d]]], np.float32)


def test_nme_known_value():
    """Every point 1 px off with eyes 10 px apart: NME 0.1."""
    truth = _face()
    pred = truth + np.array([1.0, 0.0], np.float32)
    assert nme(pred, truth) == pytest.approx(0.1)
    assert nme(truth, truth) == 0.0


def test_nme_averages_present_points_then_faces():
    """Face 1: only the eyes present, one 2 px off (mean 1 px / 10 = 0.1). Face 2: eyes 20
    apart, all present, one point 8 px off (8 / 5 / 20 = 0.08). Mean 0.09."""
    truth = np.concatenate([_face(10), _face(20)])
    truth[0, 2:] = NAN
    pred = np.nan_to_num(truth).copy()
    pred[0, 0] += [0, 2]
    pred[1, 4] += [8, 0]
    pred[0, 3] = [500, 500]  # absent in the truth: not counted
    assert nme(pred, truth) == pytest.approx(0.09)


def test_nme_compares_a_mouth_centre_with_the_mean_of_the_predicted_corners():
    """Caltech: the mouth corners are absent, the centre present. Predicted corners 3 px
    either side of the true centre (their mean is exact) score 0; shifting both 4 px down
    scores 4 px over the 4 points (eyes, nose, centre) / 10 = 0.1."""
    truth = _face()
    centre = truth[:, [3, 4]].mean(axis=1)
    truth[0, [3, 4]] = NAN
    pred = _face().copy()
    pred[0, 3] = centre[0] + [-3, 0]
    pred[0, 4] = centre[0] + [3, 0]
    assert nme(pred, truth, centre) == pytest.approx(0.0)
    pred[0, [3, 4]] += [0, 4]
    assert nme(pred, truth, centre) == pytest.approx(0.1)
    assert nme(pred, truth) == pytest.approx(0.0)  # without the centre: no mouth to score


def test_nme_of_faces_without_two_eyes_is_nan():
    truth = _face()
    truth[0, LEFT_EYE] = NAN
    assert math.isnan(nme(_face(), truth))
    assert math.isnan(nme(np.zeros((0, 5, 2)), np.zeros((0, 5, 2))))


def test_nme_refuses_bad_shapes_and_nan_predictions():
    with pytest.raises(ValueError, match=r"pred must have shape \(1, 5, 2\)"):
        nme(np.zeros((2, 5, 2)), _face())
    with pytest.raises(ValueError, match=r"truth must have shape \(N, 5, 2\)"):
        nme(np.zeros((1, 4, 2)), np.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match=r"truth_mouth_centres must have shape \(1, 2\)"):
        nme(_face(), _face(), np.zeros((2, 2)))
    pred = _face()
    pred[0, 2] = NAN
    with pytest.raises(ValueError, match="NaN or infinite"):
        nme(pred, _face())
