"""The RetinaFace / SCRFD label reader: boxes and five points, ignore regions, bad lines
reported with file and line, found by `--dataset-format auto`."""

import os

import numpy as np
import pytest

from data.datasets import FORMATS, detect_format, load_records, parse_sources, read_source
from data.formats import AnnotationWarning
from data.formats.retinaface import is_retinaface_file, read_retinaface
from common.errors import AnnotationError, DatasetError
from helpers import FACES, assert_same_faces, wider_twin, write_image

SHARED_SCUT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "real_faces",
                           "scut_head_faces")

# Five points of a face, RetinaFace order, each `lx ly v`.
POINTS = "20.5 30.0 0.0 35.0 30.5 0.0 28.0 40.0 1.0 22.0 50.0 0.0 34.0 50.25 0.0"
NO_POINTS = " ".join(["-1.0"] * 15)


def make_retinaface(root, faces=FACES, images="images", name="label.txt", sizes=True):
    """A RetinaFace folder: `label.txt` + `images/`: every face of `faces` with five points,
    except the second face of each image written as a box only (4 values)."""
    lines = []
    for image, (w, h, boxes, _) in faces.items():
        write_image(os.path.join(root, images, image), w, h)
        lines.append(f"# {image} {w} {h}" if sizes else f"# {image}")
        for k, (x, y, bw, bh) in enumerate(boxes):
            lines.append(f"{x} {y} {bw} {bh}" if k == 1 else f"{x} {y} {bw} {bh} {POINTS} 0.9")
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _write(root, text, images=(("a.jpg", 100, 80),)):
    for image, w, h in images:
        write_image(os.path.join(root, "images", image), w, h)
    path = os.path.join(root, "label.txt")
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("sizes", [True, False])
def test_reads_the_boxes_of_its_wider_twin_and_the_points(tmp_path, sizes):
    """Boxes are the file's x y w h turned into corners (as the WIDER reader does); points
    are pixels in the file's order; a box-only line has NaN points. With or without the
    header's W H (then the image's header gives the size)."""
    path = make_retinaface(str(tmp_path / "rf"), sizes=sizes)
    records, report = read_retinaface(path)
    assert_same_faces(records, wider_twin(tmp_path, with_ignore=False))
    assert (report.images, report.faces, report.ignored, report.problems) == (3, 4, 0, 0)
    a = records[0]
    assert a.name == "a.jpg" and a.path == str(tmp_path / "rf" / "images" / "a.jpg")
    assert a.landmarks.dtype == np.float32 and a.landmarks.shape == (2, 5, 2)
    np.testing.assert_array_equal(
        a.landmarks[0], [[20.5, 30.0], [35.0, 30.5], [28.0, 40.0], [22.0, 50.0], [34.0, 50.25]])
    assert np.isnan(a.landmarks[1]).all()
    assert a.line == 1 and a.mouth_centres is None
    assert records[2].landmarks.shape == (0, 5, 2)  # an image without faces: background


def test_ignore_regions_are_unscored_lines_without_points(tmp_path):
    """All points -1 and score -1 (the SCUT set's ignore regions): ignore. Without points but
    scored, or a box-only line: a face without points. Some points -1: those points
    absent, the others kept."""
    partial = "20 30 0.0 -1 -1 -1.0 28 40 0.0 -1 -1 -1 34 50 0.0"
    path = _write(str(tmp_path), "# a.jpg 100 80\n"
                  f"10 10 20 20 {NO_POINTS} -1.0\n"
                  f"40 10 20 20 {NO_POINTS} 0.5\n"
                  "10 40 20 20\n"
                  f"40 40 20 20 {partial} -1\n")
    (record,), report = read_retinaface(path)
    np.testing.assert_array_equal(record.ignore, [True, False, False, False])
    assert report.ignored == 1 and report.faces == 4
    assert np.isnan(record.landmarks[:3]).all()
    np.testing.assert_array_equal(record.landmarks[3, [0, 2, 4]], [[20, 30], [28, 40], [34, 50]])
    assert np.isnan(record.landmarks[3, [1, 3]]).all()


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_loads(tmp_path):
    path = _write(str(tmp_path), "\n".join([
        "1 1 5 5",                                   # 1: before any header
        "# a.jpg 100 80",                            # 2
        f"10 10 20 20 {POINTS}",                     # 3: 19 values (the score lost)
        "10 10 2_0 20",                              # 4: '2_0' is no plain number
        "10 10 nan 20",                              # 5: not finite
        "10 10 0 20",                                # 6: zero width
        "200 10 20 20",                              # 7: wholly right of the 100 px image
        f"10 10 20 20 {POINTS.replace('20.5', '1e9')} 0.9",  # 8: point beyond any image
        "30 30 20 20",                               # 9: fine
        "# b.jpg 0 80",                              # 10: bad size
        "1 1 5 5",                                   # 11: left out with its header
        "# a.jpg",                                   # 12: listed twice
        "# missing.jpg",                             # 13: no such image
        "# ../outside.jpg",                          # 14: escapes the folder
        "# /etc/passwd.jpg",                         # 15: absolute
        "# not an image line",                       # 16: header naming no image
    ]) + "\n", images=(("a.jpg", 100, 80), ("b.jpg", 100, 80)))
    with pytest.warns(AnnotationWarning) as caught:
        records, report = read_retinaface(path)
        report.emit()
    assert [r.name for r in records] == ["a.jpg"]
    np.testing.assert_array_equal(records[0].boxes, [[30, 30, 50, 50]])
    text = str(caught[0].message)
    for expected in ("label.txt:1: 1 face line(s) before the first '# relpath' header",
                     "label.txt:3: expected 4 or 20 numbers", "got 19 values",
                     "label.txt:4: expected 4 or 20 numbers", "label.txt:5:",
                     "label.txt:6: w=0 px", "label.txt:7: box x=200",
                     "label.txt:8: point 1 lx=1e+09 is beyond",
                     "label.txt:10: expected '# relpath W H'"):
        assert expected in text, expected
    assert report.problems == 13 and report.missing_images == 1
    later = [m for m in report.messages]
    assert len(later) == 10  # MAX_MESSAGES kept, the rest counted


def test_duplicates_missing_and_outside_images_are_reported(tmp_path):
    path = _write(str(tmp_path), "# a.jpg\n1 1 5 5\n# a.jpg\n# missing.jpg\n# ../x.jpg\n"
                  "# /abs/y.jpg\n")
    (tmp_path / "x.jpg").write_bytes(b"not read")
    records, report = read_retinaface(path)
    assert len(records) == 1
    text = "\n".join(report.messages)
    assert "label.txt:3: a.jpg is listed twice (first at line 1)" in text
    assert "label.txt:4: missing.jpg not found" in text
    assert "label.txt:5: ../x.jpg lies outside the image folder" in text
    assert "label.txt:6: /abs/y.jpg lies outside the image folder" in text
    assert report.missing_images == 1


def test_a_file_without_headers_or_not_utf8_is_an_annotation_error(tmp_path):
    path = tmp_path / "label.txt"
    path.write_text("1 2 3 4\n")
    with pytest.raises(AnnotationError, match=r"label\.txt:1: not a RetinaFace label file"):
        read_retinaface(str(path))
    path.write_bytes(b"# a.jpg\n\xff\xfe 1 2 3 4\n")
    with pytest.raises(AnnotationError, match=r"label\.txt:2: not UTF-8 text"):
        read_retinaface(str(path))
    with pytest.raises(DatasetError, match="label file not found"):
        read_retinaface(str(tmp_path / "none.txt"))


def test_images_beside_a_wider_layout_are_found(tmp_path):
    """The SCUT set's layout: the label file at the root, images under WIDER_train/images."""
    faces = {"0--x/a.jpg": FACES["a.jpg"]}
    path = make_retinaface(str(tmp_path), faces, images="WIDER_train/images",
                           name="retinaface_labels.txt")
    (record,), report = read_retinaface(path)
    assert record.path == str(tmp_path / "WIDER_train" / "images" / "0--x" / "a.jpg")
    assert record.name == "0--x/a.jpg" and report.problems == 0


# --- datasets: format detection, splits, sources ---------------------------------------------

def test_auto_detects_a_retinaface_folder_and_file(tmp_path):
    path = make_retinaface(str(tmp_path / "rf"))
    assert "retinaface" in FORMATS
    assert detect_format(str(tmp_path / "rf")) == "retinaface"
    assert detect_format(path) == "retinaface"
    assert is_retinaface_file(path) and not is_retinaface_file(str(tmp_path / "rf" / "images"))


def test_a_yolo_folder_is_not_taken_for_retinaface(tmp_path):
    from helpers import make_yolo
    assert detect_format(make_yolo(str(tmp_path / "yolo"))) == "yolo"


def test_load_records_reads_a_retinaface_source_with_splits(tmp_path):
    """RetinaFace's own layout: train/label.txt + val/label.txt, each beside its images/."""
    make_retinaface(str(tmp_path / "rf" / "train"))
    make_retinaface(str(tmp_path / "rf" / "val"), faces={"c.jpg": FACES["c.jpg"]})
    train = load_records(str(tmp_path / "rf"), "train")
    val = load_records(str(tmp_path / "rf"), "val")
    assert [r.name for r in train] == ["a.jpg", "b.jpg", "c.jpg"] and [r.name for r in val] == ["c.jpg"]
    assert train[0].landmarks.shape == (2, 5, 2)
    loaded = read_source(str(tmp_path / "rf" / "train" / "label.txt"), "train", "retinaface",
                         holdout=False)
    assert loaded.format == "retinaface" and len(loaded.records) == 3


def test_a_source_spec_names_the_format(tmp_path):
    path = make_retinaface(str(tmp_path / "rf"))
    (source,) = parse_sources(f"retinaface={path}:2")
    assert (source.fmt, source.path, source.weight) == ("retinaface", path, 2.0)


def test_a_folder_with_two_label_files_asks_for_one(tmp_path):
    make_retinaface(str(tmp_path / "rf"))
    make_retinaface(str(tmp_path / "rf"), name="other.txt")
    with pytest.raises(DatasetError, match="expected one RetinaFace label .txt.*label.txt, other.txt"):
        load_records(str(tmp_path / "rf"), "train", "retinaface", holdout=False)


@pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED_SCUT, "retinaface_labels.txt")),
                    reason="shared SCUT set absent")
def test_the_shared_scut_file_reads_whole():
    """The SCUT file: 2,905 photos, 33,576 faces with five points, 27,736 ignore regions
    (the shared README's counts), no problem."""
    records, report = read_retinaface(os.path.join(SHARED_SCUT, "retinaface_labels.txt"))
    assert (report.images, report.faces - report.ignored, report.ignored, report.problems) == (
        2905, 33576, 27736, 0)
    with_points = sum(int(np.isfinite(r.landmarks).all(axis=(1, 2)).sum()) for r in records)
    assert with_points == 33576
    # The subject's right eye has the smaller x in (almost) every face: the order is RetinaFace's.
    points = np.concatenate([r.landmarks[~r.ignore] for r in records])
    assert (points[:, 0, 0] < points[:, 1, 0]).mean() > 0.95
