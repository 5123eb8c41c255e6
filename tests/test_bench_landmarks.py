"""benchmarks/bench_landmarks.py: matching and NME on hand-made faces and detections (no
model, no YuNet), and YuNet-n's landmarks on one shared photo (skipped without it)."""

import os
import sys

import numpy as np
import pytest

from conftest import REPO, SHARED

sys.path.insert(0, REPO)

from benchmarks.bench_landmarks import compare, match_and_score  # noqa: E402
from data.records import ImageRecord  # noqa: E402
from model.postprocess import Detections  # noqa: E402

NAN = np.nan
# A face whose eyes are 40 px apart (inter-ocular 40), box x1 y1 x2 y2 around its points.
FACE_BOX = [100.0, 100.0, 200.0, 220.0]
FACE_POINTS = [[130.0, 140.0], [170.0, 140.0], [150.0, 165.0], [135.0, 190.0], [165.0, 190.0]]
OCULAR = 40.0
OTHER_BOX = [300.0, 50.0, 360.0, 120.0]
OTHER_POINTS = [[315.0, 75.0], [345.0, 75.0], [330.0, 90.0], [318.0, 105.0], [342.0, 105.0]]


def record(boxes, points, mouth_centres=None, ignore=None):
    """An ImageRecord with (N, 4) boxes, (N, 5, 2) landmarks (NaN allowed), (N, 2) centres."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(
        path="unused.jpg", name="0--Test/x.jpg", boxes=boxes,
        ignore=np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool),
        landmarks=np.asarray(points, np.float32).reshape(-1, 5, 2),
        mouth_centres=None if mouth_centres is None
        else np.asarray(mouth_centres, np.float32).reshape(-1, 2))


def detections(boxes, points, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.linspace(0.9, 0.5, len(boxes)).astype(np.float32) if scores is None else scores
    return Detections(boxes, np.asarray(scores, np.float32),
                      np.asarray(points, np.float32).reshape(-1, 5, 2))


def test_a_perfect_detector_has_nme_zero():
    truth = [record([FACE_BOX, OTHER_BOX], [FACE_POINTS, OTHER_POINTS])]
    scores = match_and_score(truth, [detections([FACE_BOX, OTHER_BOX], [FACE_POINTS, OTHER_POINTS])])
    assert (scores["faces"], scores["matched"], scores["missed"]) == (2, 2, 0)
    assert scores["nme"] == pytest.approx(0.0, abs=1e-7)


def test_points_off_by_d_pixels_give_d_over_the_inter_ocular_distance():
    d = 6.0
    shifted = np.asarray(FACE_POINTS) + [d * 0.6, d * 0.8]  # every point d px away
    box = np.asarray(FACE_BOX) + 3.0  # still the face's box (IoU ~0.9)
    scores = match_and_score([record([FACE_BOX], [FACE_POINTS])], [detections([box], [shifted])])
    assert scores["matched"] == 1
    assert scores["nme"] == pytest.approx(d / OCULAR, rel=1e-5)


def test_a_missed_face_is_counted_and_left_out_of_the_mean():
    truth = [record([FACE_BOX, OTHER_BOX], [FACE_POINTS, OTHER_POINTS]),
             record([FACE_BOX], [FACE_POINTS])]
    shifted = np.asarray(FACE_POINTS) + [4.0, 0.0]
    far_box = [500.0, 500.0, 560.0, 570.0]  # IoU 0 with every face
    found = [detections([FACE_BOX, far_box], [shifted, OTHER_POINTS]),
             Detections.empty(landmarks=True)]  # an image without detections
    scores = match_and_score(truth, found)
    assert (scores["faces"], scores["matched"], scores["missed"]) == (3, 1, 2)
    assert np.isnan(scores["face_nme"][[1, 2]]).all()
    assert scores["nme"] == pytest.approx(4.0 / OCULAR, rel=1e-5)


def test_the_match_is_the_highest_iou_at_least_one_half():
    loose = np.asarray(FACE_BOX) + [30.0, 30.0, 30.0, 30.0]  # IoU ~0.4: no match alone
    wrong = np.asarray(FACE_POINTS) + 20.0
    truth = [record([FACE_BOX], [FACE_POINTS])]
    assert match_and_score(truth, [detections([loose], [wrong])])["matched"] == 0
    # Higher score but lower IoU: the exact box is the match, whatever the scores.
    close = np.asarray(FACE_BOX) + [10.0, 0.0, 10.0, 0.0]
    scores = match_and_score(truth, [detections([close, FACE_BOX], [wrong, FACE_POINTS],
                                                scores=[0.99, 0.6])])
    assert scores["nme"] == pytest.approx(0.0, abs=1e-7)


def test_caltech_mouth_centre_is_scored_against_the_mean_of_the_corners():
    # Caltech: eyes, nose and the mouth centre; the corners absent.
    points = np.asarray(FACE_POINTS)
    caltech = points.copy()
    caltech[3:] = NAN
    centre = points[3:].mean(axis=0)
    truth = [record([FACE_BOX], [caltech], mouth_centres=[centre])]
    # Corners moved apart symmetrically keep their mean: still NME 0.
    spread = points.copy()
    spread[3, 0] -= 7.0
    spread[4, 0] += 7.0
    assert match_and_score(truth, [detections([FACE_BOX], [spread])])["nme"] == pytest.approx(
        0.0, abs=1e-7)
    # Both corners 8 px low: the mouth point is off by 8, the other three exact -> 8 / 4 / 40.
    low = points.copy()
    low[3:, 1] += 8.0
    assert match_and_score(truth, [detections([FACE_BOX], [low])])["nme"] == pytest.approx(
        8.0 / 4 / OCULAR, rel=1e-5)


def test_faces_without_both_eyes_and_ignore_regions_are_not_scored():
    one_eye = np.asarray(FACE_POINTS, np.float64)
    one_eye[1] = NAN
    no_points = np.full((5, 2), NAN)
    truth = [record([FACE_BOX, OTHER_BOX, [10, 10, 40, 50]], [one_eye, OTHER_POINTS, no_points],
                    ignore=[False, True, False])]
    scores = match_and_score(truth, [Detections.empty(landmarks=True)])
    assert scores["faces"] == 0 and np.isnan(scores["nme"])


def test_compare_scores_the_faces_every_detector_matched():
    truth = [record([FACE_BOX, OTHER_BOX], [FACE_POINTS, OTHER_POINTS])]
    shifted = np.asarray(FACE_POINTS) + [0.0, 2.0]
    both = match_and_score(truth, [detections([FACE_BOX, OTHER_BOX],
                                              [shifted, np.asarray(OTHER_POINTS) + [0.0, 9.0]])])
    first_only = match_and_score(truth, [detections([FACE_BOX], [FACE_POINTS])])
    scores = compare({"both": both, "first only": first_only})
    assert scores["both"]["common_faces"] == scores["first only"]["common_faces"] == 1
    assert scores["both"]["nme_common"] == pytest.approx(2.0 / OCULAR, rel=1e-5)
    assert scores["first only"]["nme_common"] == pytest.approx(0.0, abs=1e-7)
    assert scores["both"]["nme"] == pytest.approx((2.0 / OCULAR + 9.0 / 30.0) / 2, rel=1e-5)


def test_detections_without_landmarks_are_refused():
    box_only = Detections(np.asarray([FACE_BOX], np.float32), np.asarray([0.9], np.float32))
    with pytest.raises(ValueError, match="landmarks"):
        match_and_score([record([FACE_BOX], [FACE_POINTS])], [box_only])


YUNET = os.path.join(SHARED, "peers", "yunet_n_640_640.onnx")
CALTECH_PHOTO = os.path.join(SHARED, "real_faces", "caltech_webfaces", "WIDER_train", "images",
                             "0--WebFaces", "pic00001.jpg")


@pytest.mark.skipif(not (os.path.isfile(YUNET) and os.path.isfile(CALTECH_PHOTO)),
                    reason="needs ../shared/peers' YuNet-n and a Caltech photo")
def test_yunet_detections_carry_five_points_in_image_pixels():
    from benchmarks.peers import YuNet
    from data.image import read_image

    image = read_image(CALTECH_PHOTO)
    found = YuNet(YUNET).detect(image)
    assert len(found.boxes) >= 1
    assert found.landmarks.shape == (len(found.boxes), 5, 2)
    assert found.landmarks.dtype == np.float32
    best = found.landmarks[0]  # the sure face: its points lie in its box, in this image
    x1, y1, x2, y2 = found.boxes[0]
    assert ((best[:, 0] >= x1) & (best[:, 0] <= x2) & (best[:, 1] >= y1) & (best[:, 1] <= y2)).all()
    # LANDMARK_NAMES order: the subject's right eye (smaller x), left eye, nose, right and
    # left mouth corner; Caltech's viewer's-left eye of this face is at x 237.9, y 201.0.
    assert best[0, 0] < best[1, 0] and best[3, 0] < best[4, 0]
    assert np.hypot(*(best[0] - [237.86, 200.99])) < 5.0
