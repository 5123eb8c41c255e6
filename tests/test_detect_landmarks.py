"""detect.py with a model that predicts landmarks: the points in the text and JSON output,
drawn in images and video, and --crops DIR [--align] (issue 21)."""

import json
import math
import os

import cv2
import keras
import numpy as np
import pytest

import detect
from common.errors import ConfigError

# Offsets of the five points from the cell centre over the face size (data/grid.py).
OFFSETS = [-0.25, -0.1, 0.25, -0.1, 0.0, 0.1, -0.15, 0.3, 0.15, 0.3]


def logit(p):
    return math.log(p / (1 - p))


def _fixed_model(landmarks: bool):
    """A 64-px, 2x2-grid model predicting in every cell a face a quarter of the input wide
    at the cell centre, score 0.9; with `landmarks` 15 channels, the points at OFFSETS."""
    inputs = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.AveragePooling2D(32)(x)
    head = keras.layers.Conv2D(5, 1, activation="sigmoid", kernel_initializer="zeros")
    boxes = head(x)
    head.bias.assign(np.array([logit(0.25), logit(0.25), 0.0, 0.0, logit(0.9)], np.float32))
    if not landmarks:
        return keras.Model(inputs, boxes)
    points = keras.layers.Conv2D(10, 1, kernel_initializer="zeros")
    out = keras.layers.Concatenate(name="grid")([boxes, points(x)])
    points.bias.assign(np.array(OFFSETS, np.float32))
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, landmarks in (("points", True), ("plain", False)):
        paths[name] = str(folder / name / "model-0.50.keras")
        os.makedirs(os.path.dirname(paths[name]))
        _fixed_model(landmarks).save(paths[name])
    return paths


@pytest.fixture
def photo(tmp_path):
    path = str(tmp_path / "photos" / "sub" / "good.jpg")
    os.makedirs(os.path.dirname(path))
    cv2.imwrite(path, np.full((128, 128, 3), 90, np.uint8))
    return path


def _expected_points(x, y, side=32):
    cx, cy = x + side / 2, y + side / 2
    return [[round(cx + OFFSETS[2 * k] * side, 1), round(cy + OFFSETS[2 * k + 1] * side, 1)]
            for k in range(5)]


def test_the_five_points_are_printed_after_each_box_and_in_the_json(checkpoints, photo, capsys):
    assert detect.main(["--image", photo, "--weights", checkpoints["points"], "--no-save"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    first = lines[0].split()
    assert first[:5] == ["16", "16", "32", "32", "0.900"] and len(first) == 15
    assert [float(v) for v in first[5:]] == pytest.approx(
        sum(_expected_points(16, 16), []), abs=0.051)
    assert np.loadtxt(lines).shape == (4, 15)  # still numpy.loadtxt-readable
    assert detect.main(["--image", photo, "--weights", checkpoints["points"], "--json",
                        "--no-save"]) == 0
    faces = json.loads(capsys.readouterr().out)[0]["faces"]
    np.testing.assert_allclose(faces[0]["landmarks"], _expected_points(16, 16), atol=0.051)
    # A model without landmarks prints what it always did.
    assert detect.main(["--image", photo, "--weights", checkpoints["plain"], "--json",
                        "--no-save"]) == 0
    assert "landmarks" not in json.loads(capsys.readouterr().out)[0]["faces"][0]


def test_the_points_are_drawn_on_the_annotated_image(checkpoints, photo, tmp_path):
    from data.draw import LANDMARK_COLORS

    out = str(tmp_path / "annotated.png")
    assert detect.main(["--image", photo, "--weights", checkpoints["points"], "--output",
                        out]) == 0
    drawn = cv2.imread(out)
    x, y = (int(round(v)) for v in _expected_points(16, 16)[0])  # the right eye: red
    assert tuple(drawn[y, x]) == LANDMARK_COLORS[0]


def test_crops_write_one_image_per_face_and_align_makes_the_recogniser_crop(
        checkpoints, photo, tmp_path):
    crops = str(tmp_path / "crops")
    assert detect.main(["--image", photo, "--weights", checkpoints["points"], "--no-save",
                        "--crops", crops]) == 0
    names = sorted(os.listdir(crops))
    assert names == [f"good_face{k}.jpg" for k in range(1, 5)]
    assert cv2.imread(os.path.join(crops, names[0])).shape == (32, 32, 3)
    aligned = str(tmp_path / "aligned")
    assert detect.main(["--image", photo, "--weights", checkpoints["points"], "--no-save",
                        "--crops", aligned, "--align"]) == 0
    assert cv2.imread(os.path.join(aligned, "good_face1.jpg")).shape == (112, 112, 3)


def test_align_needs_a_model_with_landmarks_and_crops(checkpoints, photo, tmp_path):
    with pytest.raises(ConfigError, match=r"--align: .*plain.* predicts no landmarks"):
        detect.main(["--image", photo, "--weights", checkpoints["plain"], "--no-save",
                     "--crops", str(tmp_path / "c"), "--align"])
    assert not os.path.exists(str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="--align works with --crops DIR only"):
        detect.main(["--image", photo, "--weights", checkpoints["points"], "--align"])
    with pytest.raises(ConfigError, match="--crops works with --image only"):
        detect.main(["--video", "0", "--weights", checkpoints["points"], "--crops", "c"])


def test_video_frames_get_their_points_drawn(checkpoints, tmp_path):
    from data.draw import LANDMARK_COLORS
    from model.detector import FaceDetector

    source = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 128))
    for _ in range(3):
        writer.write(np.full((128, 128, 3), 90, np.uint8))
    writer.release()
    detector = FaceDetector.load(checkpoints["points"])
    assert detector.landmarks
    out = str(tmp_path / "annotated.avi")
    summary = detect.annotate_video(detector, source, out, progress=False)
    assert summary.frames == 3
    capture = cv2.VideoCapture(out)
    ok, frame = capture.read()
    capture.release()
    x, y = (int(round(v)) for v in _expected_points(80, 80)[2])  # the nose: green
    b, g, r = frame[y, x].astype(int)
    assert ok and g > 150 and b < 100 and r < 100 and LANDMARK_COLORS[2] == (0, 255, 0)
