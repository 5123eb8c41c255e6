"""Landmark files beside a WIDER-layout set (SCUT's retinaface_labels.txt, Caltech's
WebFaces_GroundThruth.txt): points attached only to the box they pin down, the rest NaN,
what did not match counted and warned about."""

import os
import warnings

import numpy as np
import pytest

from data.datasets import load_records
from data.formats import AnnotationWarning
from data.landmark_files import CALTECH_FILE, RETINAFACE_FILE
from data.landmarks import LEFT_EYE, LEFT_MOUTH, NOSE_TIP, RIGHT_EYE, RIGHT_MOUTH
from data.records import ImageRecord
from data.wider import load_wider_split, wider_split_paths, write_wider_annotations
from helpers import write_image

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "real_faces")
POINTS5 = [[22, 25], [32, 25], [27, 30], [23, 35], [31, 35]]


def make_wider(root, faces, size=(120, 100)):
    """A WIDER-layout train split: {name: [(x1, y1, x2, y2, ignored), ...]}, images of `size`."""
    images_dir, annotation_path = wider_split_paths(str(root), "train")
    records = []
    for name, boxes in faces.items():
        write_image(os.path.join(images_dir, name), *size)
        records.append(ImageRecord(
            path=name, name=name, boxes=np.array([b[:4] for b in boxes], np.float32).reshape(-1, 4),
            ignore=np.array([b[4] for b in boxes], bool)))
    os.makedirs(os.path.dirname(annotation_path), exist_ok=True)
    write_wider_annotations(records, annotation_path)
    return str(root)


def retinaface_line(x1, y1, x2, y2, points=None, score=0.9):
    values = [x1, y1, x2 - x1, y2 - y1]
    if points is None:
        return " ".join(map(str, values + [-1.0] * 15 + [-1.0]))
    return " ".join(map(str, values + [v for p in points for v in (*p, 0.0)] + [score]))


def load(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wider = load_wider_split(root, "train")
    return wider, [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]


# --- the RetinaFace file ---------------------------------------------------------------------

def test_retinaface_points_go_to_the_box_of_identical_corners(tmp_path):
    """The SCUT layout: a face's points attach to its box; the ignore region (points -1)
    and a box the file does not list keep NaN; an image the file does not list gets NaN
    rows too (the set has points, that face has none)."""
    root = make_wider(tmp_path, {
        "0--a/x.jpg": [(20, 20, 36, 40, False), (60, 10, 80, 30, True), (90, 50, 110, 70, False)],
        "0--a/y.jpg": [(5, 5, 25, 25, False)],
    })
    (tmp_path / RETINAFACE_FILE).write_text("\n".join([
        "# 0--a/x.jpg 120 100",
        retinaface_line(20, 20, 36, 40, POINTS5),
        retinaface_line(60, 10, 80, 30),  # the ignore region
    ]) + "\n")
    wider, warned = load(root)
    x, y = wider.records
    np.testing.assert_array_equal(x.landmarks[0], POINTS5)
    assert np.isnan(x.landmarks[1:]).all() and np.isnan(y.landmarks).all()
    assert y.landmarks.shape == (1, 5, 2) and x.mouth_centres is None
    (match,) = wider.landmark_matches
    assert (match.entries, match.matched, match.unmatched, match.problems) == (1, 1, 0, 0)
    assert not warned


def test_retinaface_faces_without_a_unique_identical_box_are_unmatched_and_warned(tmp_path):
    """A box off by a pixel, or two identical boxes, are not pinned down: no points, and
    the warning names the file and line."""
    root = make_wider(tmp_path, {"0--a/x.jpg": [(20, 20, 36, 40, False), (50, 20, 66, 40, False),
                                                (50, 20, 66, 40, False)]})
    (tmp_path / RETINAFACE_FILE).write_text("\n".join([
        "# 0--a/x.jpg",
        retinaface_line(21, 20, 36, 40, POINTS5),      # line 2: one pixel off
        retinaface_line(50, 20, 66, 40, POINTS5),      # line 3: two such boxes
        "1 2 3",                                        # line 4: malformed
        "# 0--a/other.jpg",
        retinaface_line(1, 1, 9, 9, POINTS5),          # another split's image
    ]) + "\n")
    wider, warned = load(root)
    assert np.isnan(wider.records[0].landmarks).all()
    (match,) = wider.landmark_matches
    assert (match.entries, match.matched, match.unmatched, match.problems, match.other_images) == (
        3, 0, 2, 1, 1)
    (text,) = warned
    assert "points attached to 0 of 3 faces (2 unmatched, 1 bad entries" in text
    assert f"{RETINAFACE_FILE}:2: no box of 0--a/x.jpg with these corners" in text
    assert f"{RETINAFACE_FILE}:3: 2 boxes of 0--a/x.jpg" in text
    assert f"{RETINAFACE_FILE}:4: expected 4 or 20 numbers" in text


def test_points_of_a_box_dropped_outside_the_image_drop_with_it(tmp_path):
    root = make_wider(tmp_path, {"0--a/x.jpg": [(130, 20, 150, 40, False), (20, 20, 36, 40, False)]})
    (tmp_path / RETINAFACE_FILE).write_text("\n".join([
        "# 0--a/x.jpg",
        retinaface_line(130, 20, 150, 40, [[p[0] + 110, p[1]] for p in POINTS5]),
        retinaface_line(20, 20, 36, 40, POINTS5),
    ]) + "\n")
    wider, _ = load(root)
    (record,) = wider.records
    np.testing.assert_array_equal(record.boxes, [[20, 20, 36, 40]])
    np.testing.assert_array_equal(record.landmarks, [POINTS5])


# --- the Caltech file ------------------------------------------------------------------------

def caltech_line(name, left_eye, right_eye, nose, mouth):
    return name + " " + " ".join(f"{v:e}" for p in (left_eye, right_eye, nose, mouth) for v in p)


def test_caltech_points_go_to_the_one_face_box_holding_all_four(tmp_path):
    """Caltech's left eye is the viewer's left (smaller x): the subject's right eye. The
    mouth centre goes to mouth_centres, the corners stay NaN. An ignored box holding the
    points is no candidate."""
    root = make_wider(tmp_path, {"0--WebFaces/pic00001.jpg": [
        (10, 10, 50, 60, False), (5, 5, 55, 65, True), (70, 10, 110, 60, False)]})
    (tmp_path / CALTECH_FILE).write_text(caltech_line(
        "pic00001.jpg", (20, 25), (40, 26), (30, 35), (30, 45)) + "\n")
    wider, warned = load(root)
    (record,) = wider.records
    np.testing.assert_array_equal(record.landmarks[0, [RIGHT_EYE, LEFT_EYE, NOSE_TIP]],
                                  [[20, 25], [40, 26], [30, 35]])
    assert np.isnan(record.landmarks[0, [RIGHT_MOUTH, LEFT_MOUTH]]).all()
    np.testing.assert_array_equal(record.mouth_centres, [[30, 45], [np.nan, np.nan], [np.nan, np.nan]])
    assert np.isnan(record.landmarks[1:]).all()
    (match,) = wider.landmark_matches
    assert (match.entries, match.matched, match.unmatched) == (1, 1, 0) and not warned


def test_caltech_ambiguous_or_missing_boxes_leave_the_face_without_points(tmp_path):
    """Two nested face boxes holding the points, no box holding them, two faces in one box:
    all unmatched; a malformed line is a bad entry. Each is named in the warning."""
    root = make_wider(tmp_path, {
        "0--WebFaces/pic00001.jpg": [(10, 10, 50, 60, False), (12, 12, 48, 58, False)],
        "0--WebFaces/pic00002.jpg": [(10, 10, 50, 60, False)],
        "0--WebFaces/pic00003.jpg": [(10, 10, 100, 90, False)],
    })
    (tmp_path / CALTECH_FILE).write_text("\n".join([
        caltech_line("pic00001.jpg", (20, 25), (40, 26), (30, 35), (30, 45)),   # 2 boxes
        caltech_line("pic00002.jpg", (20, 25), (40, 26), (30, 35), (30, 75)),   # mouth outside
        caltech_line("pic00003.jpg", (20, 25), (40, 26), (30, 35), (30, 45)),   # same box ...
        caltech_line("pic00003.jpg", (60, 25), (80, 26), (70, 35), (70, 45)),   # ... twice
        "pic00004.jpg 1 2 3",
    ]) + "\n")
    wider, warned = load(root)
    assert all(np.isnan(r.landmarks).all() and np.isnan(r.mouth_centres).all() for r in wider.records)
    (match,) = wider.landmark_matches
    assert (match.entries, match.matched, match.unmatched, match.problems) == (4, 0, 4, 1)
    (text,) = warned
    assert f"{CALTECH_FILE}:1: 2 face boxes of 0--WebFaces/pic00001.jpg" in text
    assert f"{CALTECH_FILE}:2: no face box" in text
    assert f"{CALTECH_FILE}:3: 2 faces hold their points in the same box" in text
    assert f"{CALTECH_FILE}:5: expected 'picNNNNN.jpg' and 8 numbers" in text


def test_a_wider_root_with_landmarks_keeps_them_through_load_records(tmp_path):
    """The datasets entry point (a train-only WIDER set: the seeded hold-out) keeps points."""
    faces = {f"0--a/{k}.jpg": [(20, 20, 36, 40, False)] for k in range(12)}
    root = make_wider(tmp_path, faces)
    (tmp_path / RETINAFACE_FILE).write_text("".join(
        f"# {name}\n{retinaface_line(20, 20, 36, 40, POINTS5)}\n" for name in faces))
    records = load_records(root, "train") + load_records(root, "val")
    assert len(records) == 12
    assert all(np.array_equal(r.landmarks, [POINTS5]) for r in records)


# --- the shared sets -------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "scut_head_faces")),
                    reason="shared SCUT set absent")
def test_every_scut_face_gets_its_five_points():
    wider, warned = load(os.path.join(SHARED, "scut_head_faces"))
    faces = np.concatenate([np.isfinite(r.landmarks).all(axis=(1, 2)) for r in wider.records])
    ignored = np.concatenate([r.ignore for r in wider.records])
    assert (faces & ~ignored).sum() == 33576 == (~ignored).sum()
    assert not (faces & ignored).any() and not warned


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "caltech_webfaces")),
                    reason="shared Caltech set absent")
def test_caltech_faces_get_their_points_but_one():
    """5,281 of the 5,282 Caltech faces are pinned to their box (one in a crowd of 108 lies
    in no single box)."""
    wider, warned = load(os.path.join(SHARED, "caltech_webfaces"))
    (match,) = wider.landmark_matches
    assert (match.entries, match.matched, match.unmatched) == (5282, 5281, 1)
    eyes = np.concatenate([r.landmarks[:, [RIGHT_EYE, LEFT_EYE]] for r in wider.records])
    present = np.isfinite(eyes).all(axis=(1, 2))
    assert present.sum() == 5281
    assert (eyes[present, 0, 0] < eyes[present, 1, 0]).all()  # right eye on the viewer's left
    assert len(warned) == 1 and "1 unmatched" in warned[0]
