"""The face model shipped in models/: it loads in a fresh clone and finds real faces.

detect.py falls back to it when the user has no checkpoint; here it runs on two real
WIDER FACE photos of ../shared (reported on only, never trained on): a close-up portrait
and a demonstration with six faces, at the threshold validated with the model.
"""

import json
import os

import numpy as np
import pytest

import detect
from data.boxes import box_iou, xywh_to_xyxy
from data.wider import load_wider_split

PORTRAIT = "9--Press_Conference/9_Press_Conference_Press_Conference_9_332.jpg"
CROWD = "2--Demonstration/2_Demonstration_Demonstrators_2_470.jpg"


def found_faces(subset, name, tmp_path, capsys):
    """(true boxes x1, y1, x2, y2, detected boxes as detect.py prints them, x y w h) of one
    photo, through detect.py with no --weights."""
    record = next(r for r in load_wider_split(subset, "val").records if r.name == name)
    code = detect.main(["--image", record.path, "--json", "--no-save",
                        "--checkpoint-dir", str(tmp_path / "no_checkpoints")])
    assert code == 0
    captured = capsys.readouterr()
    assert "using the shipped model" in captured.err
    faces = json.loads(captured.out)[0]["faces"]
    detected = np.array([[f["x"], f["y"], f["w"], f["h"]] for f in faces], np.float32)
    return record.boxes[~record.ignore], detected.reshape(-1, 4)


def test_the_shipped_model_is_small_and_where_detect_looks():
    """models/face_detector.tflite is in the repository, under the 10 MB cap."""
    assert os.path.isfile(detect.SHIPPED_MODEL)
    assert os.path.getsize(detect.SHIPPED_MODEL) < 10 * 1024 * 1024


@pytest.mark.parametrize("name, at_least", [(PORTRAIT, 1), (CROWD, 2)])
def test_the_shipped_model_finds_real_faces(shared_subset, name, at_least, tmp_path, capsys):
    """At the default threshold, true faces are found (IoU >= 0.5) with few false ones."""
    truth, detected = found_faces(shared_subset, name, tmp_path, capsys)
    assert len(detected), f"{name}: no face found"
    iou = box_iou(truth[:, None], xywh_to_xyxy(detected)[None])
    hits = int((iou.max(axis=1) >= 0.5).sum())
    assert hits >= at_least, f"{name}: {hits} of {len(truth)} faces found"
    false = int((iou.max(axis=0) < 0.3).sum())
    assert false <= max(1, len(truth) // 2), f"{name}: {false} detections on no face"
