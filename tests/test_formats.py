"""labelme / YOLO / COCO readers: the same ImageRecords as a WIDER twin, bad input reported.

The builders at the top (`write_image`, `make_labelme`, `make_yolo`, `make_coco`,
`wider_twin`) are reused by test_datasets / test_convert / test_stats.
"""

import json
import os
import struct
import warnings

import cv2
import numpy as np
import pytest

from data.formats import MAX_MESSAGES, AnnotationWarning, LoadReport, box_problem, load_json
from data.formats.coco import read_coco
from data.formats.labelme import read_labelme
from data.formats.yolo import label_path_candidates, read_yolo
from data.image import read_image, read_image_size
from common.errors import AnnotationError, DatasetError
from helpers import (assert_same_faces, labelme_shape, make_coco, make_labelme, make_yolo,
                     wider_twin, write_image)


# --- labelme --------------------------------------------------------------------------------

def test_labelme_reads_like_its_wider_twin_whatever_the_corner_order(tmp_path):
    root = make_labelme(str(tmp_path / "lm"))
    records, report = read_labelme(root)
    assert_same_faces(records, wider_twin(tmp_path))
    assert all(r.attributes is None for r in records)
    assert records[0].path == os.path.join(root, "a.jpg") and records[0].name == "a.jpg"
    assert report.skipped_shapes == 1  # the polygon
    assert (report.images, report.faces, report.ignored, report.problems) == (3, 4, 1, 0)


def test_labelme_label_filter(tmp_path):
    root = make_labelme(str(tmp_path / "lm"), extra_shapes=False)
    with open(os.path.join(root, "c.json")) as f:
        doc = json.load(f)
    doc["shapes"].append(labelme_shape([10, 10, 20, 20], label="hand"))
    with open(os.path.join(root, "c.json"), "w") as f:
        json.dump(doc, f)
    everything, _ = read_labelme(root)
    assert len(everything[2].boxes) == 1  # default: every rectangle is a face
    faces, report = read_labelme(root, labels="face")
    assert len(faces[2].boxes) == 0 and report.filtered == 1
    assert_same_faces(faces, wider_twin(tmp_path))


def test_labelme_bad_files_are_reported_and_the_rest_loads(tmp_path):
    root = make_labelme(str(tmp_path / "lm"), extra_shapes=False)
    (tmp_path / "lm" / "broken.json").write_text('{"shapes": [\n  {"label": "face",,}\n]}')
    write_image(tmp_path / "lm" / "d.jpg", 50, 50)
    (tmp_path / "lm" / "d.json").write_text(json.dumps({
        "imagePath": "d.jpg",
        "shapes": [labelme_shape([5, 5, 0, 10]),  # zero width
                   {"label": "face", "shape_type": "rectangle", "points": [[1, 2]]},
                   labelme_shape([10, 10, 20, 20])]}))
    (tmp_path / "lm" / "gone.json").write_text(json.dumps(
        {"imagePath": "gone.jpg", "shapes": [labelme_shape([1, 1, 5, 5])]}))
    write_image(tmp_path / "lm" / "unlabelled.jpg", 40, 40)
    records, report = read_labelme(root)

    assert [r.name for r in records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert len(records[3].boxes) == 1  # the good rectangle of d.json survives
    assert report.problems == 4 and report.missing_images == 1 and report.unlabelled == 1
    messages = "\n".join(report.messages)
    assert "broken.json:2: not valid JSON" in messages
    assert "d.json: shapes[0].points: zero-size rectangle (w=0, h=10)" in messages
    assert "d.json: shapes[1].points: expected two corners" in messages
    assert "gone.json: imagePath: gone.jpg not found" in messages
    with pytest.warns(AnnotationWarning, match=r"4 problems left out \(1 missing image, 3 bad"):
        report.emit()


def test_labelme_image_path_relative_with_backslashes_and_stale_folder(tmp_path):
    """imagePath is relative to the .json (Windows separators accepted); a stale folder
    falls back to the image of that name beside the .json."""
    write_image(tmp_path / "ds" / "photos" / "p.jpg", 64, 48)
    os.makedirs(tmp_path / "ds" / "json")
    (tmp_path / "ds" / "json" / "p.json").write_text(json.dumps(
        {"imagePath": "..\\photos\\p.jpg", "shapes": [labelme_shape([1, 2, 3, 4], order=1)]}))
    write_image(tmp_path / "ds" / "json" / "q.jpg", 64, 48)
    (tmp_path / "ds" / "json" / "q.json").write_text(json.dumps(
        {"imagePath": "C:\\old\\place\\q.jpg", "shapes": []}))
    records, report = read_labelme(str(tmp_path / "ds"))
    assert report.problems == 0
    paths = sorted(os.path.relpath(r.path, tmp_path) for r in records)
    assert paths == [os.path.join("ds", "json", "q.jpg"), os.path.join("ds", "photos", "p.jpg")]
    p = next(r for r in records if r.path.endswith("p.jpg"))
    assert p.name == "photos/p.jpg"
    np.testing.assert_allclose(p.boxes, [[1, 2, 4, 6]])  # corners of x y w h 1 2 3 4


def _labelme_json(root, name, shapes, raw=None, **fields):
    """Write NAME.json for NAME.jpg; `raw` replaces the string "RAW" in the text (JSON that
    json.dumps cannot write: huge integers, deep nesting)."""
    doc = {"imagePath": f"{name}.jpg", "shapes": shapes, **fields}
    text = json.dumps(doc)
    if raw is not None:
        text = text.replace('"RAW"', raw)
    (root / f"{name}.json").write_text(text)


def test_labelme_hostile_json_is_a_problem_not_a_traceback(tmp_path):
    """Integers of 400 and 5,000 digits (OverflowError / int-string limit in Python), 100,000
    levels of nesting (RecursionError), non-UTF-8 bytes: counted problems naming the file."""
    root = tmp_path / "lm"
    for name in ("big", "huge", "deep", "latin", "ok"):
        write_image(root / f"{name}.jpg", 64, 48)
    good = labelme_shape([10, 10, 20, 20])
    _labelme_json(root, "big", [good, {"label": "face", "shape_type": "rectangle",
                                       "points": [[1, 2], ["RAW", 9]]}], raw="9" * 400)
    _labelme_json(root, "huge", [{"label": "face", "shape_type": "rectangle",
                                  "points": [[1, 2], ["RAW", 9]]}], raw="9" * 5000)
    _labelme_json(root, "deep", [good], imageWidth="RAW", raw="[" * 100_000 + "]" * 100_000)
    (root / "latin.json").write_bytes(b'{"imagePath": "latin.jpg",\n "shapes": [], "x": "caf\xe9"}')
    _labelme_json(root, "ok", [good])
    records, report = read_labelme(str(root))
    assert [r.name for r in records] == ["big.jpg", "huge.jpg", "ok.jpg"]
    assert [len(r.boxes) for r in records] == [1, 0, 1]
    assert report.problems == 4
    # Integers past 20 digits are read as floats: 400 digits overflow to inf.
    assert report.messages[0] == "big.json: shapes[1].points: not finite numbers: [[1, 2], [Infinity, 9]]"
    assert report.messages[1].startswith("deep.json: not usable JSON (nested deeper than ")
    assert report.messages[2] == "huge.json: shapes[0].points: not finite numbers: [[1, 2], [Infinity, 9]]"
    assert report.messages[3] == "latin.json:2: not UTF-8 text (byte 0xe9)"


@pytest.mark.parametrize("points, message", [
    ([[1e12, 5], [1e12 + 10, 9]], "x=1e+12 is beyond 100000 px (no image is that large)"),
    ([[1, 5], [1e300, 9]], "w=1e+300 is beyond 100000 px (no image is that large)"),
    ([[-1e13, 5], [10, 9]], "x=-1e+13 is beyond 100000 px (no image is that large)"),
    ([[1, 2], [int("9" * 25), 9]], "w=1e+25 is beyond 100000 px (no image is that large)"),
    ([[100, 5], [120, 9]], "box x=100 y=5 w=20 h=4 lies wholly outside the 64x48 image"),
    ([[-30, -20], [-10, -5]], "box x=-30 y=-20 w=20 h=15 lies wholly outside the 64x48 image"),
    ([[10, 48], [20, 60]], "box x=10 y=48 w=10 h=12 lies wholly outside the 64x48 image"),
    ([["1", 5], [20, 9]], 'expected two corners [[x, y], [x, y]], got [["1", 5], [20, 9]]'),
    ([[None, 5], [20, 9]], "expected two corners [[x, y], [x, y]], got [[null, 5], [20, 9]]"),
    ([[True, 5], [20, 9]], "expected two corners [[x, y], [x, y]], got [[true, 5], [20, 9]]"),
])
def test_labelme_absurd_or_outside_boxes_are_problems(tmp_path, points, message):
    root = tmp_path / "lm"
    write_image(root / "a.jpg", 64, 48)
    _labelme_json(root, "a", [{"label": "face", "shape_type": "rectangle", "points": points},
                              labelme_shape([2, 3, 10, 10])], imageWidth=64, imageHeight=48)
    records, report = read_labelme(str(root))
    np.testing.assert_array_equal(records[0].boxes, [[2, 3, 12, 13]])  # only the good one
    assert report.problems == 1 and report.messages == [f"a.json: shapes[0].points: {message}"]


def test_labelme_boxes_partly_outside_are_kept_and_size_comes_from_the_header(tmp_path):
    """Without imageWidth / imageHeight (or with nonsense there) the image header gives the
    size; a box only partly outside the image is kept for the generator to clip."""
    root = tmp_path / "lm"
    write_image(root / "a.jpg", 64, 48)
    _labelme_json(root, "a", [labelme_shape([-5, 40, 20, 20]), labelme_shape([70, 5, 5, 5])],
                  imageWidth="64", imageHeight=1e300)
    records, report = read_labelme(str(root))
    np.testing.assert_array_equal(records[0].boxes, [[-5, 40, 15, 60]])
    assert report.messages == ["a.json: shapes[1].points: box x=70 y=5 w=5 h=5 lies wholly outside "
                               "the 64x48 image"]


def test_labelme_image_path_naming_another_image_than_its_own(tmp_path):
    """imagePath is followed, but an image is read once: x.json beside x.jpg naming y.jpg
    (a copied .json) is reported and left out, and so is a .json naming an image that has
    its own .json, or one that an earlier .json (sorted order) already claimed."""
    root = tmp_path / "lm"
    for name in ("w", "x", "y", "z"):
        write_image(root / f"{name}.jpg", 64, 48)
    _labelme_json(root, "x", [labelme_shape([1, 1, 5, 5])], imagePath="y.jpg")
    _labelme_json(root, "y", [labelme_shape([2, 2, 6, 6])])
    os.makedirs(root / "json")
    for name, image, x in (("a", "../w.jpg", 3), ("b", "../w.jpg", 4), ("c", "../y.jpg", 5)):
        _labelme_json(root / "json", name, [labelme_shape([x, x, 7, 7])], imagePath=image)
    write_image(root / "v.jpg", 64, 48)
    write_image(root / "v.png", 64, 48)  # the same stem, another format: v.json's own too
    _labelme_json(root, "v", [labelme_shape([1, 1, 4, 4])], imagePath="v.png")
    records, report = read_labelme(str(root))
    assert [(r.name, r.boxes[0, 0]) for r in records] == [("v.png", 1), ("w.jpg", 3), ("y.jpg", 2)]
    b, c = os.path.join("json", "b.json"), os.path.join("json", "c.json")
    assert report.messages == [
        f"{b}: imagePath: w.jpg is already annotated by {os.path.join('json', 'a.json')}",
        f"{c}: imagePath: y.jpg is annotated by its own y.json",
        "x.json: imagePath: names y.jpg, but the .json's own image x.jpg is beside it; "
        "fix imagePath or rename the .json",
    ]
    assert report.problems == 3 and report.unlabelled == 3  # v.jpg, x.jpg and z.jpg


# --- YOLO ---------------------------------------------------------------------------------

def test_yolo_reads_like_its_wider_twin(tmp_path):
    root = make_yolo(str(tmp_path / "yolo"))
    records, report = read_yolo(root)
    assert_same_faces(records, wider_twin(tmp_path, with_ignore=False))
    assert report.unlabelled == 1  # c.jpg: no label file -> background record
    assert len(next(r for r in records if r.name == "c.jpg").boxes) == 0
    assert report.problems == 0


def test_yolo_class_filter_by_id_and_name(tmp_path):
    root = make_yolo(str(tmp_path / "yolo"))
    with open(os.path.join(root, "labels", "a.txt"), "a") as f:
        f.write("0 0.5 0.5 0.2 0.2\n")  # a person
    all_classes, _ = read_yolo(root)
    assert len(all_classes[0].boxes) == 3
    for classes in (["face"], [1], "1", "face"):
        faces, report = read_yolo(root, classes=classes)
        assert len(faces[0].boxes) == 2 and report.filtered == 1
    with pytest.raises(DatasetError, match=r"class 'hand' is not in classes.txt \(person, face\)"):
        read_yolo(root, classes=["hand"])
    os.remove(os.path.join(root, "classes.txt"))
    with pytest.raises(DatasetError, match="class name 'face' needs a classes.txt"):
        read_yolo(root, classes=["face"])


def test_yolo_bad_values_are_reported_with_file_and_line(tmp_path):
    root = make_yolo(str(tmp_path / "yolo"))
    with open(os.path.join(root, "labels", "a.txt"), "a") as f:
        f.write("1 1.7 0.5 0.1 0.1\n"      # line 3
                "1 0.5 0.5 -0.1 0.2\n"     # line 4
                "1 0.5 0.5\n"              # line 5
                "face 0.5 0.5 0.1 0.1\n")  # line 6
    with open(os.path.join(root, "labels", "ghost.txt"), "w") as f:
        f.write("1 0.5 0.5 0.1 0.1\n")
    records, report = read_yolo(root)
    assert len(records) == 3 and len(records[0].boxes) == 2  # the good lines still load
    lab = os.path.join("labels", "a.txt")
    assert report.messages[:4] == [
        f"{lab}:3: cx=1.7 outside [0, 1]",
        f"{lab}:4: w=-0.1: negative size",
        f"{lab}:5: expected 5 values 'class cx cy w h', got 3",
        f"{lab}:6: expected 'class cx cy w h' (an integer and 4 numbers), got 'face 0.5 0.5 0.1 0.1'",
    ]
    assert report.messages[4].startswith(os.path.join("labels", "ghost.txt") + ": no image")
    assert report.problems == 5 and report.missing_images == 1


def test_yolo_classes_file_not_utf8_is_one_line_error_naming_it(tmp_path):
    """--face-labels face with a Latin-1 classes.txt: AnnotationError naming file and line,
    not UnicodeDecodeError; class ids alone never read it."""
    root = make_yolo(str(tmp_path / "yolo"))
    with open(os.path.join(root, "classes.txt"), "wb") as f:
        f.write(b"person\nface\nt\xeate\n")
    with pytest.raises(AnnotationError) as info:
        read_yolo(root, classes="face")
    assert str(info.value) == (f"{os.path.join(root, 'classes.txt')}:3: not UTF-8 text (byte 0xea); "
                               f"classes.txt holds one class name a line")
    records, report = read_yolo(root, classes="1")
    assert report.faces == 4 and report.problems == 0
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("person\nface\n")
    with pytest.raises(DatasetError, match="class '\u00b2' is not in"):  # '²'.isdigit() is True
        read_yolo(root, classes="\u00b2")


def test_yolo_values_must_be_plain_numbers_and_boxes_sane(tmp_path):
    """'1_0' and '١' (Python's int / float accept both) are malformed; a box the tolerance
    lets past the border, wholly outside once in pixels, is a problem too."""
    root = make_yolo(str(tmp_path / "yolo"))
    with open(os.path.join(root, "labels", "a.txt"), "a") as f:
        f.write("1 0.5 0.5 0.1 1_0\n"               # line 3
                "\u0661 0.5 0.5 0.1 0.1\n"          # line 4
                + "9" * 400 + " 0.5 0.5 0.1 0.1\n"  # line 5
                "1 1.0000005 0.5 0.0000001 0.1\n"   # line 6
                "1 0 0 0.2 0.2\n")                  # line 7: centre on the corner, kept
    records, report = read_yolo(root)
    lab = os.path.join("labels", "a.txt")
    assert report.messages[0] == f"{lab}:3: expected 'class cx cy w h' (an integer and 4 numbers), " \
                                 f"got '1 0.5 0.5 0.1 1_0'"
    assert report.messages[1].startswith(f"{lab}:4: expected 'class cx cy w h'")
    assert report.messages[2].startswith(f"{lab}:5: expected 'class cx cy w h'")
    # Past the border by the tolerance, a box is too thin to be wholly outside and still
    # 0.01 px wide: the size rule (float32 corners would make it size 0) refuses it.
    assert report.messages[3] == f"{lab}:6: w=1.6e-05 px is under 0.01 px (no face is that small)"
    assert report.problems == 4
    np.testing.assert_allclose(records[0].boxes[2], [-16, -12, 16, 12], atol=1e-4)


def test_yolo_layouts_and_label_paths(tmp_path):
    """Labels next to the images and the Ultralytics images/<split> layout both resolve."""
    assert label_path_candidates(os.path.join("r", "images", "train", "x.jpg")) == [
        os.path.join("r", "labels", "train", "x.txt"), os.path.join("r", "images", "train", "x.txt")]
    write_image(tmp_path / "flat" / "x.png", 100, 50)
    (tmp_path / "flat" / "x.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    records, report = read_yolo(str(tmp_path / "flat"))
    np.testing.assert_allclose(records[0].boxes, [[25, 12.5, 75, 37.5]])
    assert report.problems == 0 and report.unlabelled == 0


def _exif_rotated_jpeg(path, width, height, orientation=6):
    """A JPEG stored `width` x `height` whose EXIF orientation tells decoders to rotate it."""
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 100, np.uint8))
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    app1 = b"Exif\x00\x00" + tiff
    data = data.tobytes()
    with open(path, "wb") as f:
        f.write(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    return str(path)


def test_image_size_from_header_follows_exif_orientation(tmp_path):
    """Phone photos: YOLO's normalised values refer to the upright image OpenCV decodes."""
    os.makedirs(tmp_path / "images")
    path = _exif_rotated_jpeg(tmp_path / "images" / "r.jpg", 100, 40)
    assert read_image_size(path) == (40, 100)
    assert read_image(path).shape[:2] == (100, 40)
    png = write_image(tmp_path / "p.png", 77, 33)
    assert read_image_size(png) == (77, 33)
    os.makedirs(tmp_path / "labels")
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.5 0.5 0.2\n")
    records, _ = read_yolo(str(tmp_path))
    rotated = next(r for r in records if r.name == "r.jpg")
    np.testing.assert_allclose(rotated.boxes, [[10, 40, 30, 60]], atol=1e-4)


def test_yolo_corrupt_image_is_reported(tmp_path):
    root = make_yolo(str(tmp_path / "yolo"))
    with open(os.path.join(root, "images", "a.jpg"), "wb") as f:
        f.write(b"not an image")
    records, report = read_yolo(root)
    assert [r.name for r in records] == ["b.jpg", "c.jpg"]
    assert report.messages == [f"{os.path.join('images', 'a.jpg')}: not a readable image "
                               f"(corrupt or unsupported format)"]


# --- COCO ---------------------------------------------------------------------------------

def test_coco_reads_like_its_wider_twin_with_crowd_as_ignore(tmp_path):
    path = make_coco(str(tmp_path / "coco"))
    records, report = read_coco(path)
    assert_same_faces(records, wider_twin(tmp_path))
    assert records[1].path == os.path.join(str(tmp_path / "coco"), "images", "b.jpg")
    assert report.problems == 0 and report.ignored == 1


def test_coco_category_filter(tmp_path):
    path = make_coco(str(tmp_path / "coco"))
    with open(path) as f:
        doc = json.load(f)
    doc["annotations"].append({"id": 99, "image_id": 3, "category_id": 2, "bbox": [1, 1, 9, 9]})
    with open(path, "w") as f:
        json.dump(doc, f)
    records, report = read_coco(path)  # default: 'face' exists, so only faces
    assert len(records[2].boxes) == 0 and report.filtered == 1
    records, _ = read_coco(path, categories=["face", "person"])
    assert len(records[2].boxes) == 1
    with pytest.raises(DatasetError, match=r"categories: hand not found \(the file has: face, person\)"):
        read_coco(path, categories="hand")


def test_coco_bad_entries_are_reported_and_malformed_file_raises(tmp_path):
    path = make_coco(str(tmp_path / "coco"))
    with open(path) as f:
        doc = json.load(f)
    doc["images"].append({"id": 4, "file_name": "missing.jpg"})
    doc["annotations"] += [
        {"id": 50, "image_id": 1, "category_id": 1, "bbox": [10, 10, -5, 8]},
        {"id": 51, "image_id": 77, "category_id": 1, "bbox": [10, 10, 5, 8]},
        {"id": 52, "image_id": 2, "category_id": 1, "bbox": [10, 10, 5]},
    ]
    with open(path, "w") as f:
        json.dump(doc, f)
    records, report = read_coco(path)
    assert_same_faces(records, wider_twin(tmp_path))
    assert report.messages == [
        "instances.json: images[3].file_name: missing.jpg not found",
        "instances.json: annotations[4].bbox: w=-5: negative size",
        "instances.json: annotations[5].image_id: 77 is not in images",
        "instances.json: annotations[6].bbox: expected [x, y, w, h] numbers, got [10, 10, 5]",
    ]
    assert report.missing_images == 1

    with open(path, "w") as f:
        f.write('{"images": [],\n "annotations": [}\n')
    with pytest.raises(AnnotationError, match=r"instances.json:2: not valid JSON"):
        read_coco(path)


def _coco_with(tmp_path, annotations, raw=None, images=None):
    """make_coco's file with `annotations` appended (and `images` replacing its images);
    `raw` replaces the string "RAW" in the text."""
    path = make_coco(str(tmp_path / "coco"))
    with open(path) as f:
        doc = json.load(f)
    doc["annotations"] += annotations
    if images is not None:
        doc["images"] = images
    text = json.dumps(doc)
    if raw is not None:
        text = text.replace('"RAW"', raw)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("raw, kind", [("9" * 400, "huge"), ("9" * 5000, "huge"),
                                       ("[" * 100_000 + "]" * 100_000, "deep")],
                         ids=["400-digit-int", "5000-digit-int", "100000-deep"])
def test_coco_hostile_json_is_one_line_error_or_problem(tmp_path, raw, kind):
    """A 400- / 5,000-digit integer in a bbox is a counted problem (no OverflowError, no
    int-string-limit ValueError); 100,000 levels of nesting is an AnnotationError."""
    path = _coco_with(tmp_path, [{"id": 60, "image_id": 1, "category_id": 1,
                                  "bbox": [1, "RAW", 5, 5]}], raw=raw)
    if kind == "deep":
        with pytest.raises(AnnotationError) as info:
            read_coco(path)
        assert str(info.value).startswith(f"{path}: not usable JSON (nested deeper than ")
        return
    records, report = read_coco(path)
    assert_same_faces(records, wider_twin(tmp_path))
    assert report.messages == ["instances.json: annotations[4].bbox: not finite numbers: "
                               "[1, Infinity, 5, 5]"]


def test_coco_unknown_missing_or_string_category_is_a_problem(tmp_path):
    """Faces of category 99 (not listed), no category_id or "1" (a string, the id is 1) were
    dropped without a word; now they are counted problems. A listed non-face category
    (person) is filtered, as before."""
    path = _coco_with(tmp_path, [
        {"id": 60, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},
        {"id": 61, "image_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 62, "image_id": 1, "category_id": "1", "bbox": [1, 1, 5, 5]},
        {"id": 63, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]},
    ])
    records, report = read_coco(path)
    assert_same_faces(records, wider_twin(tmp_path))
    assert report.messages == [
        "instances.json: annotations[4].category_id: 99 is not a category id of the file (ids: 1, 2)",
        "instances.json: annotations[5].category_id: missing a category id of the file (ids: 1, 2)",
        'instances.json: annotations[6].category_id: "1" is not a category id of the file (ids: 1, 2)',
    ]
    assert report.filtered == 1


def test_coco_crowd_flag_is_read_strictly(tmp_path):
    """iscrowd "0" (a string) was read as crowd: 0 / 1 / false / true only, the rest is a
    problem and the annotation is left out."""
    path = _coco_with(tmp_path, [
        {"id": 60, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": "0"},
        {"id": 61, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 2},
        {"id": 62, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5], "ignore": None},
        {"id": 63, "image_id": 3, "category_id": 1, "bbox": [2, 2, 5, 5], "iscrowd": True},
        {"id": 64, "image_id": 3, "category_id": 1, "bbox": [3, 3, 5, 5], "iscrowd": 0, "ignore": 1},
        {"id": 65, "image_id": 3, "category_id": 1, "bbox": [4, 4, 5, 5], "iscrowd": False},
    ])
    records, report = read_coco(path)
    np.testing.assert_array_equal(records[2].boxes, [[2, 2, 7, 7], [3, 3, 8, 8], [4, 4, 9, 9]])
    np.testing.assert_array_equal(records[2].ignore, [True, True, False])
    assert report.messages == [
        'instances.json: annotations[4].iscrowd: "0" is not 0 or 1',
        "instances.json: annotations[5].iscrowd: 2 is not 0 or 1",
        "instances.json: annotations[6].ignore: null is not 0 or 1",
    ]


def test_coco_absurd_and_outside_boxes_are_problems(tmp_path):
    """The image size is the entry's width / height, else the image header (c.jpg here)."""
    images = [{"id": 1, "file_name": "a.jpg", "width": 160, "height": 120},
              {"id": 2, "file_name": "b.jpg", "width": 200, "height": 100},
              {"id": 3, "file_name": "c.jpg", "width": "120", "height": 1e300}]
    path = _coco_with(tmp_path, [
        {"id": 60, "image_id": 3, "category_id": 1, "bbox": [1e12, 1, 5, 5]},
        {"id": 61, "image_id": 3, "category_id": 1, "bbox": [1, 1, 1e300, 5]},
        {"id": 62, "image_id": 3, "category_id": 1, "bbox": [120, 1, 5, 5]},
        {"id": 63, "image_id": 3, "category_id": 1, "bbox": [-20, -30, 10, 29]},
        {"id": 64, "image_id": 3, "category_id": 1, "bbox": [115, -3, 10, 10]},  # partly: kept
        {"id": 65, "image_id": 3, "category_id": 1, "bbox": [1, "2", 5, 5]},
    ], images=images)
    records, report = read_coco(path)
    np.testing.assert_array_equal(records[2].boxes, [[115, -3, 125, 7]])
    assert report.messages == [
        "instances.json: annotations[4].bbox: x=1e+12 is beyond 100000 px (no image is that large)",
        "instances.json: annotations[5].bbox: w=1e+300 is beyond 100000 px (no image is that large)",
        "instances.json: annotations[6].bbox: box x=120 y=1 w=5 h=5 lies wholly outside the "
        "120x120 image",
        "instances.json: annotations[7].bbox: box x=-20 y=-30 w=10 h=29 lies wholly outside the "
        "120x120 image",
        'instances.json: annotations[9].bbox: expected [x, y, w, h] numbers, got [1, "2", 5, 5]',
    ]


def test_coco_detection_survives_hostile_json(tmp_path):
    from data.formats.coco import is_coco_file

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert not is_coco_file(str(path))
    path.write_bytes(b'{"images": [], "annotations": [], "x": "\xff"}')
    assert not is_coco_file(str(path))


def test_load_json_and_box_problem(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": [1, ' + "9" * 21 + ', ' + "9" * 20 + ', -' + "9" * 30 + ']}')
    assert load_json(str(path)) == {"a": [1, float("9" * 21), int("9" * 20), -float("9" * 30)]}
    path.write_bytes(b'{"a":\n\n "\xc3"}')
    with pytest.raises(AnnotationError, match=r"^shown.json:3: not UTF-8 text \(byte 0xc3\)$"):
        load_json(str(path), "shown.json")
    assert box_problem(1, 2, 3, 4, (5, 5)) is None
    assert box_problem(-2, -2, 3, 3, (5, 5)) is None  # partly outside: the generator clips it
    assert box_problem(5, 0, 3, 3, (5, 5)) == "box x=5 y=0 w=3 h=3 lies wholly outside the 5x5 image"
    assert box_problem(0, 0, float("nan"), 3) == "w=nan is not a finite number"
    assert box_problem(0, 100_001, 3, 3) == "y=100001 is beyond 100000 px (no image is that large)"
    assert box_problem(99_000, 99_000, 99_000, 99_000) is None  # without a size: bounds only


# --- the report -----------------------------------------------------------------------------

def test_report_keeps_first_messages_and_counts_the_rest():
    report = LoadReport("ds", "yolo")
    for k in range(MAX_MESSAGES + 5):
        report.problem(f"labels/x.txt:{k + 1}: bad")
    summary = report.summary()
    assert summary.splitlines()[0] == "ds (yolo): 0 images, 0 faces; 15 problems left out (15 bad annotation)"
    assert len(report.messages) == MAX_MESSAGES and summary.endswith("... and 5 more")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LoadReport("clean", "coco").emit()  # nothing to say: no warning
