"""WIDER FACE layout, annotation reader / writer, and missing-image checks."""

import os
import warnings

import numpy as np
import pytest

from data.boxes import box_sizes, xywh_to_xyxy
from data.formats import AnnotationWarning
from data.records import ImageRecord
from data.wider import (
    ATTRIBUTE_MAX,
    ATTRIBUTE_NAMES,
    DUMMY_LINE,
    check_images,
    find_missing_images,
    load_wider_split,
    read_wider_annotations,
    read_wider_test_filelist,
    wider_split_paths,
    write_wider_annotations,
)
from common.errors import AnnotationError, ConfigError, DatasetError

SAMPLE = (
    "0--Parade/0_Parade_marchingband_1_465.jpg\n"
    "2\n"
    "345 211 4 4 2 0 0 0 2 0 \n"
    "331 126 3 3 0 0 0 1 0 0 \n"
    "1--Handshaking/1_Handshaking_1.jpg\n"
    "0\n"
    "0 0 0 0 0 0 0 0 0 0 \n"
    "2--Demonstration/2_Demonstration_2.jpg\n"
    "3\n"
    "10 20 30 40 1 1 1 0 1 1 \n"
    "5 6 0 7 0 0 0 0 0 0 \n"
    "8 9 10 -1 0 0 0 0 0 0 \n"
)


def write(tmp_path, text, name="gt.txt", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return str(path)


# --- layout -------------------------------------------------------------------------------

def test_split_paths_follow_official_layout():
    images, annotations = wider_split_paths("root", "train")
    assert images == os.path.join("root", "WIDER_train", "images")
    assert annotations == os.path.join("root", "wider_face_split", "wider_face_train_bbx_gt.txt")
    images, annotations = wider_split_paths("root", "test")
    assert images == os.path.join("root", "WIDER_test", "images")
    assert annotations.endswith(os.path.join("wider_face_split", "wider_face_test_filelist.txt"))


def test_split_paths_reject_unknown_split():
    with pytest.raises(ConfigError, match="split='validation'"):
        wider_split_paths("root", "validation")


# --- reader -------------------------------------------------------------------------------

def test_reader_parses_boxes_attributes_and_quirks(tmp_path):
    """Boxes/attributes per image, the 0-face dummy line consumed, w<=0 or h<=0 dropped."""
    path = write(tmp_path, SAMPLE)
    with pytest.warns(AnnotationWarning, match=r"gt.txt: 2 face lines with w or h under 0.01 px left out "
                                               r"\(lines 11, 12\)$"):
        result = read_wider_annotations(path, "imgs")
    assert [r.name for r in result.records] == [
        "0--Parade/0_Parade_marchingband_1_465.jpg",
        "1--Handshaking/1_Handshaking_1.jpg",
        "2--Demonstration/2_Demonstration_2.jpg",
    ]
    first, empty, third = result.records
    assert first.path == os.path.join("imgs", "0--Parade/0_Parade_marchingband_1_465.jpg")
    assert first.boxes.dtype == np.float32 and first.boxes.shape == (2, 4)
    # the file's x y w h as corners x1, y1, x2, y2
    np.testing.assert_array_equal(first.boxes, [[345, 211, 349, 215], [331, 126, 334, 129]])
    np.testing.assert_array_equal(first.ignore, [False, True])
    assert first.attributes.dtype == np.int32
    np.testing.assert_array_equal(first.attributes, [[2, 0, 0, 0, 2, 0], [0, 0, 0, 1, 0, 0]])
    assert empty.boxes.shape == (0, 4) and empty.attributes.shape == (0, 6)
    np.testing.assert_array_equal(third.boxes, [[10, 20, 40, 60]])
    np.testing.assert_array_equal(third.attributes, [[1, 1, 1, 0, 1, 1]])
    assert [r.line for r in result.records] == [1, 5, 8]
    assert result.dropped_boxes == 2 and result.dropped_lines == [11, 12]
    assert (result.num_images, result.num_boxes, result.num_ignored, result.num_faces) == (3, 3, 1, 2)
    assert result.num_listed == 5


def test_reader_handles_crlf_trailing_blank_lines_and_zero_without_dummy(tmp_path):
    """CRLF, trailing spaces and blank lines read the same; a bare `0` needs no dummy line."""
    text = SAMPLE + "3--Riot/3_Riot_3.jpg\n0\n\n\n  \n"
    crlf = read_wider_annotations(write(tmp_path, text, newline="\r\n"), "imgs")
    lf = read_wider_annotations(write(tmp_path, text, name="lf.txt"), "imgs")
    assert [r.name for r in crlf.records] == [r.name for r in lf.records]
    assert crlf.records[-1].name == "3--Riot/3_Riot_3.jpg" and len(crlf.records[-1].boxes) == 0
    for a, b in zip(crlf.records, lf.records):
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_reader_count_one_with_dummy_line_is_dropped_box(tmp_path):
    """The val file's `1` + all-zero line form: an image with no face and one dropped box."""
    result = read_wider_annotations(write(tmp_path, f"a/b.jpg\n1\n{DUMMY_LINE} \n"), "imgs")
    assert len(result.records) == 1 and len(result.records[0].boxes) == 0
    assert result.dropped_boxes == 1


@pytest.mark.parametrize(
    "text, line, expected, got",
    [
        ("a/b.jpg\nx\n", 2, "face count of a/b.jpg", "'x'"),
        ("a/b.jpg\n-1\n", 2, "face count of a/b.jpg", "'-1'"),
        ("a/b.jpg\n", 2, "face count of a/b.jpg", "end of file"),
        ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "2 face lines for a/b.jpg", "end of file"),
        ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "10 numbers", "'1 2 3 4 0 0 0 0 0'"),
        ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 x 0 0 0 0 0 0\n", 4, "face 2 of 2 of a/b.jpg",
         "'1 2 3 x 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n1 2 3 nan 0 0 0 0 0 0\n", 3, "10 numbers", "'1 2 3 nan 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", 4, "an image path",
         "'1 2 3 4 0 0 0 0 0 0'"),
        ("12\n", 1, "an image path", "'12'"),
        # An empty file is an error, not 0 images read with success.
        ("", 1, "an image path like '0--Parade/0_Parade_Parade_0_194.jpg' (the file lists no images)",
         "end of file"),
        ("\n  \n\n", 1, "(the file lists no images)", "end of file"),
        # Face counts: plain ASCII digits only (int() would read '1_0' as 10, '١' as 1).
        ("a/b.jpg\n1_0\n", 2, "face count of a/b.jpg", "'1_0'"),
        ("a/b.jpg\n+1\n1 2 3 4 0 0 0 0 0 0\n", 2, "face count of a/b.jpg", "'+1'"),
        ("a/b.jpg\n\u0661\n1 2 3 4 0 0 0 0 0 0\n", 2, "face count of a/b.jpg", "'\u0661'"),
        pytest.param("a/b.jpg\n" + "9" * 5000 + "\n", 2, "face count of a/b.jpg", "'" + "9" * 80 + "...'",
                     id="count-of-5000-digits"),
        # Numbers: plain ASCII decimals, finite, within +-100000 px (1e39 is inf in float32).
        ("a/b.jpg\n1\n1 2 3 1_0 0 0 0 0 0 0\n", 3, "10 numbers", "'1 2 3 1_0 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n1 2 3 inf 0 0 0 0 0 0\n", 3, "10 numbers", "'1 2 3 inf 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n1 2 1e39 4 0 0 0 0 0 0\n", 3,
         "w (column 3) within +-100000 px (no image is that large) (face 1 of 1 of a/b.jpg)",
         "'1 2 1e39 4 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n1 2 3 3.5e38 0 0 0 0 0 0\n", 3, "h (column 4) within +-100000 px",
         "'1 2 3 3.5e38 0 0 0 0 0 0'"),
        ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n123456 2 3 4 0 0 0 0 0 0\n", 4,
         "x (column 1) within +-100000 px (no image is that large) (face 2 of 2 of a/b.jpg)",
         "'123456 2 3 4 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n1 -1e6 3 4 0 0 0 0 0 0\n", 3, "y (column 2) within +-100000 px",
         "'1 -1e6 3 4 0 0 0 0 0 0'"),
        # Negative x / y: a box wholly left of or above the image is an error.
        ("a/b.jpg\n1\n-50 2 30 4 0 0 0 0 0 0\n", 3,
         "a box reaching into the image (x + w > 0 and y + h > 0) (face 1 of 1 of a/b.jpg)",
         "'-50 2 30 4 0 0 0 0 0 0'"),
        ("a/b.jpg\n1\n5 -4 30 4 0 0 0 0 0 0\n", 3, "a box reaching into the image", "'5 -4 30 4 0 0 0 0 0 0'"),
        # Attribute flags: integers in their official ranges.
        ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0.5\n", 3, "pose (column 10) an integer 0-1",
         "'1 2 3 4 0 0 0 0 0 0.5'"),
    ],
)
def test_reader_malformed_file_raises_one_line_with_file_and_line(tmp_path, text, line, expected, got):
    path = write(tmp_path, text)
    with pytest.raises(AnnotationError) as info:
        read_wider_annotations(path, "imgs")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: expected ")
    assert expected in message
    assert message.endswith(f"got {got}")


@pytest.mark.parametrize("column", range(6))
def test_reader_attribute_flags_outside_their_official_range_raise(tmp_path, column):
    """blur 0-2, expression 0-1, illumination 0-1, invalid 0-1, occlusion 0-2, pose 0-1:
    one past the top and -1 are errors naming the flag, its column, the file and the line."""
    top = ATTRIBUTE_MAX[column]
    for value in (top + 1, -1):
        flags = ["0"] * 6
        flags[column] = str(value)
        line = "1 2 3 4 " + " ".join(flags)
        path = write(tmp_path, f"a/b.jpg\n2\n5 6 7 8 0 0 0 0 0 0\n{line}\n", name=f"gt{value}.txt")
        with pytest.raises(AnnotationError) as info:
            read_wider_annotations(path, "imgs")
        assert str(info.value) == (f"{path}:4: expected {ATTRIBUTE_NAMES[column]} (column {column + 5}) "
                                   f"an integer 0-{top} (face 2 of 2 of a/b.jpg), got '{line}'")
    flags = ["0"] * 6
    flags[column] = str(top)
    ok = read_wider_annotations(write(tmp_path, f"a/b.jpg\n1\n1 2 3 4 {' '.join(flags)}\n"), "imgs")
    assert ok.records[0].attributes[0, column] == top


def test_reader_keeps_boxes_partly_left_of_the_image_and_fractional_values(tmp_path):
    """x < 0 < x + w (a converted set's box partly outside): kept as it is, the generator
    clips it; fractional and exponent spellings read as the numbers they are."""
    path = write(tmp_path, "a/b.jpg\n2\n-5 -2.5 20 10 0 0 0 0 0 0\n1e2 .5 +7 99999 2 1 1 1 2 1\n")
    record = read_wider_annotations(path, "imgs").records[0]
    np.testing.assert_array_equal(record.boxes, [[-5, -2.5, 15, 7.5], [100, 0.5, 107, 99999.5]])
    assert np.isfinite(record.boxes).all()


def test_reader_empty_test_filelist_is_an_error(tmp_path):
    path = write(tmp_path, "\n\n", name="list.txt")
    with pytest.raises(AnnotationError, match=r"list.txt:1: expected an image path .*\(the file lists "
                                              r"no images\), got end of file$"):
        read_wider_test_filelist(path, "imgs")


def test_dropped_box_warning_lists_the_first_lines_and_counts_the_rest(tmp_path):
    faces = "".join(f"{k} 1 {'0' if k % 2 else '3'} 4 0 0 0 0 0 0\n" for k in range(16))
    path = write(tmp_path, f"a/b.jpg\n16\n{faces}")
    with pytest.warns(AnnotationWarning) as caught:
        result = read_wider_annotations(path, "imgs")
    assert [str(w.message) for w in caught] == [
        f"{path}: 8 face lines with w or h under 0.01 px left out (lines 4, 6, 8, 10, 12 and 3 more)"]
    assert caught[0].filename == __file__  # attributed to the caller, not to data/wider.py
    assert result.dropped_lines == [4, 6, 8, 10, 12, 14, 16, 18] and result.num_boxes == 8


def test_reader_without_dropped_boxes_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = read_wider_annotations(write(tmp_path, "a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"), "imgs")
    assert result.dropped_boxes == 0 and result.dropped_lines == []


def test_reader_missing_file_is_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nope.txt: annotation file not found"):
        read_wider_annotations(str(tmp_path / "nope.txt"), "imgs")


def test_reader_full_official_val_file_counts(shared_val_annotations):
    """The real val file: 3,226 images, 39,708 face lines, 11 with w/h <= 0, 585 invalid."""
    path = os.path.join(shared_val_annotations, "wider_face_val_bbx_gt.txt")
    with pytest.warns(AnnotationWarning, match=r"11 face lines with w or h under 0.01 px left out "
                                               r"\(lines 1223, 2803, 17233, 17359, 18361 and 6 more\)"):
        result = read_wider_annotations(path, "images")
    assert len(result.dropped_lines) == 11
    assert result.num_images == 3226
    assert result.num_listed == 39708
    assert result.dropped_boxes == 11
    assert result.num_boxes == 39708 - 11
    # Count invalid flags straight from the text: none of them is on a dropped line.
    with open(path) as f:
        rows = [line.split() for line in f if len(line.split()) == 10]
    invalid = sum(1 for r in rows if r[7] == "1")
    dropped_invalid = sum(1 for r in rows if r[7] == "1" and (int(r[2]) <= 0 or int(r[3]) <= 0))
    assert invalid == 585
    assert result.num_ignored == invalid - dropped_invalid
    assert result.num_faces == result.num_boxes - result.num_ignored
    first = result.records[0]
    assert first.name == "0--Parade/0_Parade_marchingband_1_465.jpg" and first.line == 1
    assert len(first.boxes) == 126
    assert all((box_sizes(r.boxes) > 0).all() for r in result.records)


def test_reader_test_filelist(tmp_path):
    path = write(tmp_path, "0--Parade/0_Parade_marchingband_1_737.jpg\r\n1--Handshaking/1_x.jpg\r\n\r\n")
    records = read_wider_test_filelist(path, "imgs")
    assert [r.name for r in records] == ["0--Parade/0_Parade_marchingband_1_737.jpg", "1--Handshaking/1_x.jpg"]
    assert records[1].path == os.path.join("imgs", "1--Handshaking/1_x.jpg")
    assert all(len(r.boxes) == 0 for r in records) and records[1].line == 2
    with pytest.raises(AnnotationError, match=r"list.txt:2: expected an image path"):
        read_wider_test_filelist(write(tmp_path, "a/b.jpg\n3\n", name="list.txt"), "imgs")


# --- writer -------------------------------------------------------------------------------

def test_write_read_round_trip_integer_and_fractional_boxes(tmp_path):
    """read(write(x)) gives back names, boxes, ignore flags and attributes exactly: the
    records' corners are written as x y w h whose sums read back to the same x2, y2."""
    rng = np.random.default_rng(0)
    frac = rng.uniform(1, 500, (5, 4)).astype(np.float32)
    frac[:, 2:] += frac[:, :2]  # any float32 corners
    records = [
        ImageRecord("p", "0--Parade/a.jpg", boxes=[[1, 2, 4, 6], [10, 20, 40, 60]], ignore=[False, True],
                    attributes=[[2, 1, 1, 0, 2, 1], [0, 0, 0, 0, 0, 0]]),
        ImageRecord("p", "1--Handshaking/empty.jpg"),
        ImageRecord("p", "2--Demo/frac.jpg", boxes=frac,
                    ignore=[True, False, False, True, False]),
        ImageRecord("p", "2--Demo/quarter.jpg", boxes=[[0.25, 1.5, 13.0, 4.625]], ignore=[False]),
        # a COCO bbox read as corners: written back as the same short decimals
        ImageRecord("p", "2--Demo/coco.jpg", ignore=[False],
                    boxes=xywh_to_xyxy(np.array([[199.84, 200.46, 77.71, 70.88]]))),
    ]
    path = str(tmp_path / "out" / "gt.txt")
    write_wider_annotations(records, path)
    text = open(path).read()
    assert f"1--Handshaking/empty.jpg\n0\n{DUMMY_LINE}\n" in text
    assert "1 2 3 4 2 1 1 0 2 1\n" in text and "10 20 30 40 0 0 0 1 0 0\n" in text
    assert "0.25 1.5 12.75 3.125 0 0 0 0 0 0\n" in text
    assert "199.84 200.46 77.71 70.88 0 0 0 0 0 0\n" in text
    back = read_wider_annotations(path, "imgs")
    assert back.dropped_boxes == 0
    assert [r.name for r in back.records] == [r.name for r in records]
    for original, read in zip(records, back.records):
        np.testing.assert_array_equal(read.boxes, original.boxes)
        np.testing.assert_array_equal(read.ignore, original.ignore)
    np.testing.assert_array_equal(back.records[0].attributes[:, [0, 1, 2, 4, 5]],
                                  [[2, 1, 1, 2, 1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(back.records[2].attributes[:, 3], [1, 0, 0, 1, 0])


def test_write_read_round_trip_full_val_file(tmp_path, shared_val_annotations):
    original = read_wider_annotations(
        os.path.join(shared_val_annotations, "wider_face_val_bbx_gt.txt"), "images")
    path = str(tmp_path / "gt.txt")
    write_wider_annotations(original.records, path)
    back = read_wider_annotations(path, "images")
    assert back.num_images == original.num_images and back.num_boxes == original.num_boxes
    for a, b in zip(original.records, back.records):
        assert a.name == b.name
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.attributes, b.attributes)


def test_write_rejects_non_image_name_and_keeps_old_file(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("old\n")
    with pytest.raises(AnnotationError, match="name must be an image path"):
        write_wider_annotations([ImageRecord("p", "a/b.jpg"), ImageRecord("p", "not an image")], str(path))
    assert path.read_text() == "old\n"


# --- images on disk -----------------------------------------------------------------------

def make_records(tmp_path, present, missing):
    records = []
    for i in range(present + missing):
        path = tmp_path / f"img{i}.jpg"
        if i < present:
            path.write_bytes(b"x")
        records.append(ImageRecord(str(path), f"img{i}.jpg"))
    return records


def test_find_missing_images(tmp_path):
    records = make_records(tmp_path, present=2, missing=3)
    assert [r.name for r in find_missing_images(records)] == ["img2.jpg", "img3.jpg", "img4.jpg"]


def test_check_images_raises_one_line_with_count_and_examples(tmp_path):
    records = make_records(tmp_path, present=2, missing=4)
    with pytest.raises(DatasetError) as info:
        check_images(records, skip_missing=False, source="gt.txt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("gt.txt: 4 of 6 listed images are missing, e.g. ")
    assert "img2.jpg" in message and "img4.jpg" in message and "img5.jpg" not in message
    assert message.endswith("(set skip_missing_images=True to train without them)")


def test_check_images_skip_missing_warns_and_returns_the_rest(tmp_path):
    records = make_records(tmp_path, present=2, missing=3)
    with pytest.warns(UserWarning, match="gt.txt: skipping 3 of 5 listed images"):
        kept = check_images(records, skip_missing=True, source="gt.txt")
    assert [r.name for r in kept] == ["img0.jpg", "img1.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(check_images(kept, skip_missing=False, source="gt.txt")) == 2


# --- load_wider_split ---------------------------------------------------------------------

def test_load_split_missing_layout_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_wider_split(str(tmp_path), "train")
    message = str(info.value)
    assert "wider_face_train_bbx_gt.txt" in message
    assert "python tools/download.py" in message and "python train.py --demo" in message
    assert "\n" not in message


def test_load_split_skip_missing_counts_skipped(tmp_path):
    images_dir, annotation = wider_split_paths(str(tmp_path), "val")
    os.makedirs(os.path.join(images_dir, "0--Parade"))
    open(os.path.join(images_dir, "0--Parade", "0_Parade_marchingband_1_465.jpg"), "wb").close()
    os.makedirs(os.path.dirname(annotation))
    with open(annotation, "w") as f:
        f.write(SAMPLE)
    with pytest.raises(DatasetError, match="2 of 3 listed images are missing"):
        load_wider_split(str(tmp_path), "val")
    with pytest.warns(UserWarning):
        result = load_wider_split(str(tmp_path), "val", skip_missing=True)
    assert [r.name for r in result.records] == ["0--Parade/0_Parade_marchingband_1_465.jpg"]
    assert result.skipped_images == 2 and result.source == annotation


def test_load_split_shared_subset_finds_all_images(shared_subset):
    """The 200-photo real subset: every listed image exists, 4,372 faces listed."""
    result = load_wider_split(shared_subset, "val")
    assert result.num_images == 200 and result.skipped_images == 0
    assert result.num_listed == 4372
    assert all(os.path.isfile(r.path) for r in result.records)
    assert result.records[0].name == "0--Parade/0_Parade_Parade_0_194.jpg"
    assert result.records[0].path.startswith(os.path.join(shared_subset, "WIDER_val", "images"))
