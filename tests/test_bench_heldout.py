"""benchmarks/bench_heldout.py: its degradations keep the photo's geometry and change its
pixels, its --degrade list is checked, and its AP table holds one figure per detector and
degradation (hand-made photo and detectors: no model, no peers)."""

import sys

import cv2
import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, REPO)

from benchmarks.bench_heldout import (DEGRADATIONS, SIZE_EDGES, degrade, face_size_bins,  # noqa: E402
                                      heldout_aps, operating_points, parse_degradations)
from common.errors import ConfigError  # noqa: E402
from data.records import ImageRecord  # noqa: E402
from model.postprocess import Detections  # noqa: E402


def _noise(h=60, w=80):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_each_degradation_keeps_shape_and_dtype_and_only_clean_keeps_the_pixels(name):
    image = _noise()
    out = degrade(image, name)
    assert out.shape == image.shape and out.dtype == np.uint8
    if name == "clean":
        assert out is image
    else:
        # Each smooths or quantises: noise loses most of its pixel-to-pixel variation.
        assert np.abs(out.astype(int) - image).mean() > 10
        assert np.abs(np.diff(out.astype(int), axis=1)).mean() < np.abs(np.diff(image.astype(int), axis=1)).mean()


def test_degrade_list_is_parsed_and_an_unknown_name_is_named():
    assert parse_degradations("clean, blur,jpeg") == ["clean", "blur", "jpeg"]
    with pytest.raises(ConfigError, match=r"--degrade 'clean,sharpen'.*clean, blur"):
        parse_degradations("clean,sharpen")
    with pytest.raises(ConfigError, match="--degrade"):
        parse_degradations(" , ")
    with pytest.raises(ConfigError, match="--degrade 'x'"):
        degrade(_noise(), "x")


def test_heldout_aps_scores_every_detector_under_every_degradation(tmp_path):
    path = str(tmp_path / "photo.png")
    cv2.imwrite(path, _noise())  # 80 x 60: the long side 80 scales to 640 (x8)
    faces = np.float32([[10, 10, 40, 50], [50, 5, 51.5, 30], [60, 40, 70, 50]])
    records = [ImageRecord(path=path, name="0--Test/photo.png", boxes=faces,
                           ignore=np.array([False, False, True]))]
    seen = []

    def exact(image):
        seen.append(image.shape)
        return Detections(faces[:2].copy(), np.float32([0.9, 0.8]))

    def first_only(image):
        return Detections(faces[:1].copy(), np.float32([0.9]))

    aps, found, per_bin, clean = heldout_aps([("exact", exact), ("first", first_only)], records,
                                      ["clean", "lowres"])
    assert aps == {"clean": {"exact": 1.0, "first": 0.5}, "lowres": {"exact": 1.0, "first": 0.5}}
    assert seen == [(60, 80, 3), (60, 80, 3)]  # one call per photo and degradation
    # Shorter sides 30 and 1.5 px -> 240 and 12 at a long side of 640; the ignore region
    # is no face.
    bins = face_size_bins(records[0], 80)
    assert bins.tolist() == [SIZE_EDGES.index(64), SIZE_EDGES.index(12)]
    assert per_bin.sum() == 2 and per_bin[bins].tolist() == [1, 1]
    assert found["exact"][bins].tolist() == [1, 1] and found["first"][bins].tolist() == [1, 0]
    # The clean photos' detections come back for the operating point, one per photo.
    assert [len(d.boxes) for d in clean["exact"]] == [2] and len(clean["first"]) == 1


def test_operating_points_cut_at_the_best_f1_of_each_detector():
    """Two faces; 'ranked' scores both above a false box, 'inverted' the false box first:
    the best-F1 cut keeps both faces and stops above the false one, or keeps all three."""
    faces = np.float32([[0, 0, 10, 10], [20, 20, 30, 30]])
    false = [50, 50, 60, 60]
    truths = [(faces, np.zeros(2, bool))]
    boxes = np.float32([faces[0], faces[1], false])
    detections = {"ranked": [Detections(boxes, np.float32([0.9, 0.8, 0.3]))],
                  "inverted": [Detections(boxes, np.float32([0.5, 0.4, 0.7]))]}
    points = operating_points(detections, truths, ["ranked", "inverted"])
    assert points["ranked"] == {"threshold": pytest.approx(0.8), "f1": 1.0,
                                "precision": 1.0, "recall": 1.0}
    assert points["inverted"]["threshold"] == pytest.approx(0.4)
    assert points["inverted"]["f1"] == pytest.approx(0.8)  # P 2/3, R 1
