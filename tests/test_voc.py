"""data/formats/voc.py: Pascal VOC folders read like their WIDER twin, bad input reported,
registered for detection, mixing and conversion; the real face-mask set's counts."""

import os

import cv2
import numpy as np
import pytest

from config import Config
from conftest import SHARED
from data.convert import convert_to_wider
from data.datasets import Source, detect_format, load_records, parse_sources, training_records
from data.formats import AnnotationWarning
from data.formats.voc import read_voc
from data.image import read_image, read_image_size
from data.wider import read_wider_annotations, wider_split_paths
from common.errors import DatasetError
from helpers import (
    FACES,
    assert_same_faces,
    make_coco,
    make_labelme,
    make_yolo,
    wider_twin,
    write_image,
)

FACE_MASK_VOC = os.path.join(SHARED, "real_faces", "face_mask_voc")
KAGGLE = ("annotations", "images")
PASCAL = ("Annotations", "JPEGImages")
FLAT = ("", "")


def _num(v):
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def voc_object(box, name="face", difficult=False, truncated=False, corners=None):
    """An <object> for an xywh box (or raw `corners` text: xmin, ymin, xmax, ymax)."""
    if corners is None:
        x, y, w, h = box
        corners = (_num(x), _num(y), _num(x + w), _num(y + h))
    values = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), corners))
    return (f"<object><name>{name}</name><pose>Unspecified</pose>"
            f"<truncated>{int(truncated)}</truncated><difficult>{int(difficult)}</difficult>"
            f"<bndbox>{values}</bndbox></object>")


def voc_xml(filename, width, height, objects):
    """A VOC annotation document, one element a line (so parse errors have line numbers)."""
    size = "" if width is None else (
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    return "\n".join(["<annotation>", "<folder>images</folder>",
                      f"<filename>{filename}</filename>", size, *objects, "</annotation>"]) + "\n"


def make_voc(root, faces=FACES, layout=KAGGLE):
    """A VOC folder of FACES: difficult = the ignore flag; one face marked truncated."""
    xml_dir, image_dir = (os.path.join(str(root), d) for d in layout)
    os.makedirs(xml_dir, exist_ok=True)
    for name, (w, h, boxes, ignore) in faces.items():
        write_image(os.path.join(image_dir, name), w, h)
        objects = [voc_object(b, difficult=ig, truncated=(k == 0)) for k, (b, ig)
                   in enumerate(zip(boxes, ignore))]
        write_xml(os.path.join(xml_dir, os.path.splitext(name)[0] + ".xml"),
                  voc_xml(name, w, h, objects))
    return str(root)


def write_xml(path, text):
    with open(path, "w") as f:
        f.write(text)


# --- records --------------------------------------------------------------------------------

def test_voc_reads_like_its_wider_twin(tmp_path):
    """Corners -> xywh exactly (floats too), difficult -> ignore, truncated changes nothing."""
    root = make_voc(tmp_path / "voc")
    records, report = read_voc(root)
    assert_same_faces(records, wider_twin(tmp_path))
    assert [r.name for r in records] == ["a.jpg", "b.jpg", "c.jpg"]
    assert records[0].path == os.path.join(root, "images", "a.jpg")
    assert (report.images, report.faces, report.ignored, report.problems, report.unlabelled) == (
        3, 4, 1, 0, 0)
    assert report.fmt == "voc" and not report.notable


@pytest.mark.parametrize("layout", [PASCAL, FLAT])
def test_pascal_voc_and_labelimg_layouts_read_the_same(tmp_path, layout):
    """Annotations/ + JPEGImages/ (VOC itself) and .xml beside the images (LabelImg)."""
    root = make_voc(tmp_path / "voc", layout=layout)
    records, report = read_voc(root)
    assert_same_faces(records, wider_twin(tmp_path))
    assert report.problems == 0 and report.unlabelled == 0
    assert records[0].path == os.path.join(root, layout[1], "a.jpg")


def test_label_filter_keeps_the_named_objects_and_counts_the_rest(tmp_path):
    """--face-labels: None reads every object as a face, a list skips (and counts) the others."""
    root = make_voc(tmp_path / "voc")
    write_xml(os.path.join(root, "annotations", "c.xml"),
              voc_xml("c.jpg", 120, 120, [voc_object([10, 10, 20, 20], name="hand")]))
    everything, report = read_voc(root)
    assert len(everything[2].boxes) == 1 and report.filtered == 0
    faces, report = read_voc(root, labels="face,mask")
    assert len(faces[2].boxes) == 0 and report.filtered == 1
    assert_same_faces(faces, wider_twin(tmp_path))
    via_loader = load_records(root, "train", "voc", labels=["hand"], holdout=False)
    assert [len(r.boxes) for r in via_loader] == [0, 0, 1]


def test_bad_input_is_reported_with_file_and_element_and_the_rest_loads(tmp_path):
    """Each bad object drops only itself; a malformed file or a missing image drops the file."""
    root = make_voc(tmp_path / "voc")
    ann = os.path.join(root, "annotations")
    write_image(os.path.join(root, "images", "d.jpg"), 100, 80)
    write_xml(os.path.join(ann, "d.xml"), voc_xml("d.jpg", 100, 80, [
        voc_object(None, corners=("abc", "5", "20", "20")),     # 1: not a number
        "<object><name>face</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax></bndbox></object>",                     # 2: no ymax
        "<object><name>face</name></object>",                   # 3: no bndbox
        voc_object(None, corners=("30", "10", "30", "20")),     # 4: zero width
        voc_object(None, corners=("10", "40", "20", "30")),     # 5: ymax < ymin
        voc_object(None, corners=("90", "10", "102", "20")),    # 6: 2 px past the width
        voc_object([10, 10, 20, 20]).replace("<difficult>0<", "<difficult>yes<"),  # 7
        voc_object(None, corners=("100", "10", "100.5", "20")),  # 8: nothing left once clipped
        voc_object([40, 30, 20, 25]),                            # 9: good
    ]))
    write_xml(os.path.join(ann, "broken.xml"), "<annotation>\n<filename>x.jpg\n</annotation>\n")
    write_xml(os.path.join(ann, "gone.xml"),
              voc_xml("gone.jpg", 50, 50, [voc_object([1, 1, 5, 5])]))
    records, report = read_voc(root)

    assert [r.name for r in records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    np.testing.assert_array_equal(records[3].boxes, [[40, 30, 60, 55]])
    assert_same_faces(records[:3], wider_twin(tmp_path))
    d = os.path.join("annotations", "d.xml")
    assert report.messages == [
        f"{os.path.join('annotations', 'broken.xml')}:3: not valid XML (mismatched tag)",
        f"{d}: object 1 <bndbox><xmin>: 'abc' is not a number",
        f"{d}: object 2 <bndbox><ymax>: missing",
        f"{d}: object 3 <bndbox>: missing",
        f"{d}: object 4 <bndbox>: non-positive size (w=0, h=10)",
        f"{d}: object 5 <bndbox>: non-positive size (w=10, h=-10)",
        f"{d}: object 6 <bndbox><xmax>: 102 is more than 1 px outside the image "
        f"(width 100 from <size>)",
        f"{d}: object 7 <difficult>: 'yes' is not 0 or 1",
        f"{d}: object 8 <bndbox>: nothing left inside the image once clipped",
        f"{os.path.join('annotations', 'gone.xml')}: <filename>: gone.jpg not found "
        f"(nor gone.{{jpg,png,...}}) in images",
    ]
    assert report.problems == 10 and report.missing_images == 1 and report.unlabelled == 0
    with pytest.warns(AnnotationWarning, match=r"10 problems left out \(1 missing image, 9 bad"):
        report.emit()


def test_not_a_voc_document_is_reported(tmp_path):
    """An .xml whose root is not <annotation> (another tool's file) is named and left out."""
    root = make_voc(tmp_path / "voc")
    write_xml(os.path.join(root, "annotations", "other.xml"), "<html><body/></html>\n")
    records, report = read_voc(root)
    assert len(records) == 3
    assert report.messages == [
        f"{os.path.join('annotations', 'other.xml')}: <html>: expected an <annotation> root, "
        f"not a VOC file"]


def test_boxes_on_the_border_are_clipped_within_one_pixel(tmp_path):
    """xmax = width + 1 (1-based tools) and xmin = -1 are clipped; the image size comes from
    <size>, or from the image file when <size> is absent or 0."""
    root = tmp_path / "voc"
    os.makedirs(root / "annotations")
    write_image(root / "images" / "e.jpg", 100, 80)
    write_xml(root / "annotations" / "e.xml", voc_xml("e.jpg", 100, 80, [
        voc_object(None, corners=("90", "70", "101", "81")),   # 1 px past both borders
        voc_object(None, corners=("-1", "0", "10", "80")),     # 1 px before the left border
        voc_object(None, corners=("0.5", "0.5", "100", "80")),  # exactly on the border
    ]))
    write_image(root / "images" / "f.jpg", 60, 40)
    write_xml(root / "annotations" / "f.xml", voc_xml("f.jpg", None, None, [
        voc_object(None, corners=("50", "30", "61", "41")),
        voc_object(None, corners=("50", "30", "62", "40")),
    ]))
    write_image(root / "images" / "g.jpg", 60, 40)
    write_xml(root / "annotations" / "g.xml", voc_xml("g.jpg", 0, 0, [
        voc_object(None, corners=("10", "10", "20", "41.5")),
    ]))
    records, report = read_voc(str(root))
    by_name = {r.name: r.boxes for r in records}
    np.testing.assert_array_equal(by_name["e.jpg"], [[90, 70, 100, 80], [0, 0, 10, 80],
                                                     [0.5, 0.5, 100, 80]])
    np.testing.assert_array_equal(by_name["f.jpg"], [[50, 30, 60, 40]])
    assert len(by_name["g.jpg"]) == 0
    f, g = (os.path.join("annotations", n) for n in ("f.xml", "g.xml"))
    assert report.messages == [
        f"{f}: object 2 <bndbox><xmax>: 62 is more than 1 px outside the image "
        f"(width 60 from the image file)",
        f"{g}: object 1 <bndbox><ymax>: 41.5 is more than 1 px outside the image "
        f"(height 40 from the image file)",
    ]


def test_absurd_size_falls_back_to_the_image_and_absurd_boxes_are_problems(tmp_path):
    """A <size> of 1e300 (or beyond MAX_COORDINATE) is corrupt: the image file's size is used,
    so boxes stay checked against the real image; 1e12 / 1e300 / 400-digit corners, '1_0'
    (float() would read 10) and non-ASCII digits are reported."""
    root = tmp_path / "voc"
    os.makedirs(root / "annotations")
    write_image(root / "images" / "h.jpg", 60, 40)
    write_xml(root / "annotations" / "h.xml", voc_xml("h.jpg", "1e300", "1e300", [
        voc_object(None, corners=("10", "10", "1e12", "20")),
        voc_object(None, corners=("10", "10", "1e300", "20")),
        voc_object(None, corners=("10", "10", "9" * 400, "20")),
        voc_object(None, corners=("1_0", "10", "20", "20")),
        voc_object(None, corners=("\u0661", "10", "20", "20")),
        voc_object(None, corners=("100", "10", "120", "20")),
        voc_object(None, corners=("10", "10", "30", "20")),
    ]))
    records, report = read_voc(str(root))
    np.testing.assert_array_equal(records[0].boxes, [[10, 10, 30, 20]])
    h = os.path.join("annotations", "h.xml")
    assert report.messages == [
        f"{h}: object 1 <bndbox><xmax>: 1000000000000 is more than 1 px outside the image "
        f"(width 60 from the image file)",
        f"{h}: object 2 <bndbox><xmax>: 1e+300 is more than 1 px outside the image "
        f"(width 60 from the image file)",
        f"{h}: object 3 <bndbox><xmax>: '{'9' * 59}... is not a finite number",
        f"{h}: object 4 <bndbox><xmin>: '1_0' is not a number",
        f"{h}: object 5 <bndbox><xmin>: '\u0661' is not a number",
        f"{h}: object 6 <bndbox><xmin>: 100 is more than 1 px outside the image "
        f"(width 60 from the image file)",
    ]


@pytest.mark.parametrize("encoding", ["cp932", "utf-32", "no-such-encoding"])
def test_xml_declaring_an_encoding_expat_cannot_read_is_reported(tmp_path, encoding):
    """expat raises ValueError (multi-byte encodings) or LookupError (unknown ones), not
    ParseError, for such a declaration: reported like any malformed file."""
    root = make_voc(tmp_path / "voc")
    write_xml(os.path.join(root, "annotations", "a.xml"),
              f'<?xml version="1.0" encoding="{encoding}"?>\n' + voc_xml("a.jpg", 160, 120, []))
    records, report = read_voc(root)
    assert [r.name for r in records] == ["b.jpg", "c.jpg"]
    assert len(report.messages) == 1
    assert report.messages[0].startswith(f"{os.path.join('annotations', 'a.xml')}:1: not readable XML (")


def test_image_found_by_the_xml_name_when_filename_is_stale_or_absent(tmp_path):
    """<filename> naming a .png re-encoded as .jpg, or no <filename>: the image named like
    the .xml is used; an unreadable image without <size> is reported."""
    root = tmp_path / "voc"
    os.makedirs(root / "annotations")
    write_image(root / "images" / "p.jpg", 50, 40)
    write_xml(root / "annotations" / "p.xml", voc_xml("p.png", 50, 40, [voc_object([1, 2, 3, 4])]))
    write_image(root / "images" / "q.png", 50, 40)
    write_xml(root / "annotations" / "q.xml",
              voc_xml("", 50, 40, [voc_object([5, 6, 7, 8])]).replace("<filename></filename>", ""))
    (root / "images" / "r.jpg").write_bytes(b"not an image")
    write_xml(root / "annotations" / "r.xml",
              voc_xml("r.jpg", None, None, [voc_object([1, 1, 2, 2])]))
    records, report = read_voc(str(root))
    assert [(r.name, r.boxes.tolist()) for r in records] == [
        ("p.jpg", [[1, 2, 4, 6]]), ("q.png", [[5, 6, 12, 14]])]
    assert report.messages == [
        f"{os.path.join('annotations', 'r.xml')}: <size>: missing, and not a readable image "
        f"(corrupt or unsupported format)"]
    assert report.unlabelled == 0  # r.jpg has an .xml (a bad one): not 'without annotation'


def test_images_without_xml_are_counted_not_used(tmp_path):
    """Like labelme: a photo not labelled yet is not background; the warning counts it."""
    root = make_voc(tmp_path / "voc")
    write_image(os.path.join(root, "images", "later.jpg"), 40, 40)
    records, report = read_voc(root)
    assert [r.name for r in records] == ["a.jpg", "b.jpg", "c.jpg"] and report.unlabelled == 1
    with pytest.warns(AnnotationWarning, match=r"1 images without annotation file \(not used\)"):
        report.emit()


# --- registration: detection, mixing, splits -------------------------------------------------

def test_auto_detection_finds_voc_and_leaves_the_other_formats_alone(tmp_path):
    """annotations/*.xml, Annotations/*.xml and LabelImg's .xml beside images are VOC; each
    existing format is detected as before."""
    for layout in (KAGGLE, PASCAL, FLAT):
        root = make_voc(tmp_path / f"voc_{layout[0] or 'flat'}", layout=layout)
        assert detect_format(root) == "voc"
        assert len(load_records(root, "train", holdout=False)) == 3
    # darknet's voc_label.py writes YOLO labels/ into a VOC folder: still read as VOC.
    root = make_voc(tmp_path / "darknet", layout=PASCAL)
    os.makedirs(os.path.join(root, "labels"))
    write_xml(os.path.join(root, "labels", "a.txt"), "0 0.5 0.5 0.1 0.1\n")
    assert detect_format(root) == "voc"
    assert detect_format(make_labelme(str(tmp_path / "lm"))) == "labelme"
    assert detect_format(make_yolo(str(tmp_path / "yolo"))) == "yolo"
    coco_file = make_coco(str(tmp_path / "coco"))
    assert detect_format(str(tmp_path / "coco")) == "coco" and detect_format(coco_file) == "coco"
    write_image(tmp_path / "just_images" / "x.jpg", 20, 20)
    write_xml(tmp_path / "just_images" / "unrelated.xml", "<config/>\n")
    with pytest.raises(DatasetError, match="cannot tell the dataset format"):
        detect_format(str(tmp_path / "just_images"))


def test_mixing_syntax_and_training_records_take_voc_sources(tmp_path):
    """`voc=PATH:WEIGHT` names the format and repeats the source by its weight."""
    root = make_voc(tmp_path / "voc")
    assert parse_sources(f"voc={root}:3") == [Source(root, 3.0, "voc")]
    config = Config(dataset=f"voc={root}:2", input_size=64, grid_size=4, batch_size=4, seed=7)
    train = training_records(config)
    own = load_records(root, "train", seed=7)
    assert len(own) == 2 and len(train) == 2 * len(own)
    assert sorted(r.name for r in train) == sorted(2 * [r.name for r in own])


@pytest.mark.parametrize("layout", [KAGGLE, FLAT])
def test_train_and_val_folders_of_a_voc_source_are_detected_and_are_its_splits(tmp_path, layout):
    """root/train/ and root/valid/, each a VOC folder, are detected and are the splits."""
    make_voc(tmp_path / "voc" / "train", {k: FACES[k] for k in ("a.jpg", "b.jpg")}, layout)
    make_voc(tmp_path / "voc" / "valid", {"c.jpg": FACES["c.jpg"]}, layout)
    root = str(tmp_path / "voc")
    assert detect_format(root) == "voc"
    assert [r.name for r in load_records(root, "train")] == ["a.jpg", "b.jpg"]
    assert [r.name for r in load_records(root, "val")] == ["c.jpg"]


# --- images and conversion -------------------------------------------------------------------

def test_rgba_and_grayscale_png_read_as_three_channels_through_the_generator(tmp_path):
    """PNG RGBA (the face-mask set's originals) and grayscale images decode as (H, W, 3)."""
    from data.data_generator import FaceGridDataset

    root = tmp_path / "voc"
    os.makedirs(root / "annotations")
    os.makedirs(root / "images")
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 200, 128
    assert cv2.imwrite(str(root / "images" / "rgba.png"), rgba)
    assert cv2.imwrite(str(root / "images" / "gray.png"), np.full((40, 20), 90, np.uint8))
    assert cv2.imwrite(str(root / "images" / "gray.jpg"), np.full((24, 36), 60, np.uint8))
    for name, (w, h) in (("rgba.png", (50, 30)), ("gray.png", (20, 40)), ("gray.jpg", (36, 24))):
        write_xml(root / "annotations" / (name.replace(".", "_") + ".xml"),
                  voc_xml(name, w, h, [voc_object([2, 2, 10, 10])]))
    records, report = read_voc(os.path.join(str(tmp_path), ".", "voc"))  # a path not normalised
    assert report.problems == 0 and report.unlabelled == 0 and len(records) == 3
    shapes = {r.name: read_image(r.path).shape for r in records}
    assert shapes == {"rgba.png": (30, 50, 3), "gray.png": (40, 20, 3), "gray.jpg": (24, 36, 3)}
    assert tuple(read_image(str(root / "images" / "rgba.png"))[0, 0]) == (0, 0, 200)  # BGR
    config = Config(input_size=64, grid_size=4, batch_size=3, seed=7)
    images, targets = FaceGridDataset(records, config, training=False)[0]
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    assert targets.shape[:3] == (3, 4, 4)


def test_convert_writes_a_voc_source_as_wider_and_reads_back_the_same(tmp_path):
    """data.convert: VOC -> official WIDER layout -> data.wider gives the same boxes and flags."""
    root = make_voc(tmp_path / "voc")
    records = load_records(root, "train", holdout=False)
    convert_to_wider(records, str(tmp_path / "out"), "train", progress=False)
    images_dir, annotation_path = wider_split_paths(str(tmp_path / "out"), "train")
    back = read_wider_annotations(annotation_path, images_dir).records
    assert [r.name for r in back] == ["0--custom/a.jpg", "0--custom/b.jpg", "0--custom/c.jpg"]
    for original, read in zip(records, back):
        np.testing.assert_array_equal(read.boxes, original.boxes)
        np.testing.assert_array_equal(read.ignore, original.ignore)
    assert_same_faces(load_records(str(tmp_path / "out"), "train", holdout=False),
                      wider_twin(tmp_path))


# --- the real set ------------------------------------------------------------------------------

def test_face_mask_voc_counts():
    """The shared Kaggle face-mask set: 703 images, 3,526 faces, nothing left out; the nine
    boxes written with xmax = width + 1 are clipped to the image."""
    if not os.path.isdir(FACE_MASK_VOC):
        pytest.skip(f"{FACE_MASK_VOC} not present")
    assert detect_format(FACE_MASK_VOC) == "voc"
    records, report = read_voc(FACE_MASK_VOC)
    assert (report.images, report.faces, report.ignored) == (703, 3526, 0)
    assert (report.problems, report.unlabelled, report.filtered) == (0, 0, 0)
    for record in records:
        w, h = read_image_size(record.path)
        x1, y1, x2, y2 = record.boxes.T
        assert np.all(x2 > x1) and np.all(y2 > y1) and np.all(x1 >= 0) and np.all(y1 >= 0), record.name
        assert np.all(x2 <= w) and np.all(y2 <= h), record.name
    # maksssksksss5.xml: <xmin>364</xmin>...<xmax>401</xmax> in a 400 px wide image.
    clipped = next(r for r in records if r.name == "maksssksksss5.jpg")
    assert np.all(clipped.boxes == [364, 30, 400, 66], axis=1).any()
    _, report = read_voc(FACE_MASK_VOC, labels="with_mask")
    assert report.faces == 2812 and report.filtered == 606 + 108
