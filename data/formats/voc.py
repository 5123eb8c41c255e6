"""Pascal VOC annotations: one .xml per image, one `<object>` per face.

A VOC file (LabelImg, CVAT, Roboflow, the Kaggle face-mask sets, PASCAL VOC itself) looks like

    <annotation>
        <filename>img_0001.jpg</filename>
        <size><width>640</width><height>480</height><depth>3</depth></size>
        <object>
            <name>face</name>
            <truncated>0</truncated>
            <difficult>0</difficult>
            <bndbox><xmin>301</xmin><ymin>96</ymin><xmax>412</xmax><ymax>210</ymax></bndbox>
        </object>
    </annotation>

Layouts (the .xml files are read from the annotation folder, not its sub-folders):

    root/annotations/*.xml + root/images/          (Kaggle style)
    root/Annotations/*.xml + root/JPEGImages/      (PASCAL VOC itself; ImageSets/ not used)
    root/*.xml beside the images                   (LabelImg's default)

- Pixel convention: the four `<bndbox>` values (integers or floats) are read as continuous
  corner coordinates in the pixels of the image file, so the box (the project's corners)
  is x1 = xmin, y1 = ymin, x2 = xmax, y2 = ymax, with no 1-based shift. (VOC's own values
  are 1-based inclusive pixel indices; the difference is under one pixel, and this is
  how most converters read them.)
- Borders: a box may reach up to BORDER_TOLERANCE (1 px) past the image, because VOC tools
  often write xmax = width or width + 1; it is clipped to the image. A box further out,
  or of non-positive size (before or after clipping), is reported and left out. The
  image size is `<size>` when it holds positive numbers up to MAX_COORDINATE (no photo is
  larger: such a `<size>` is corrupt), else read from the image file; so every box kept is
  finite, sane and inside its image.
- `<difficult>1</difficult>` makes an ignored face: neither learned nor penalised.
  `<truncated>`, `<occluded>` and `<pose>` are accepted and change nothing: a truncated
  face is still a face, boxed as far as it is visible.
- The image is `<filename>` in the images folder; when that file is missing (a stale
  extension, `<filename>` absent), the image with the .xml's name and any image extension.
  `<folder>` and `<path>` name the labelling machine's folders and are not used. An
  absolute or `..` `<filename>` is refused (reported, the file left out, the named file
  never read): images must lie inside the images folder.
- Every `<object>` is a face unless the label filter names the `<name>`s to read.
- An .xml without `<object>` is an image without faces: an all-background sample. Images
  without an .xml are not used (counted in the report).
A bad object (numbered from 1 in messages, in file order) drops only that object; a
malformed .xml or a missing image drops the file.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import Iterable, Optional, Tuple

import numpy as np

from data.formats import (
    MAX_COORDINATE,
    MIN_BOX_SIZE,
    LoadReport,
    LoadResult,
    display_path,
    escapes_folder,
    outside_message,
    parse_label_filter,
    path_inside,
    record_name,
    shown_text,
)
from data.image import IMAGE_EXTENSIONS, read_image_size
from data.records import ImageRecord
from common.errors import DatasetError, ImageError

# (annotation folder, images folder) pairs, in the order they are looked for.
LAYOUTS = (("annotations", "images"), ("Annotations", "JPEGImages"))
# How far (pixels) a box may reach past the image border and still be clipped, not rejected.
BORDER_TOLERANCE = 1.0
_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def voc_layout(folder: str) -> Optional[Tuple[str, str]]:
    """(annotation folder, images folder) of a VOC dataset, or None if it has no .xml."""
    for annotation_dir, image_dir in LAYOUTS:
        where = os.path.join(folder, annotation_dir)
        if xml_files(where):
            return where, os.path.join(folder, image_dir)
    if xml_files(folder):
        return folder, folder
    return None


def read_voc(folder: str, labels: Optional[Iterable[str]] = None) -> LoadResult:
    """Read a Pascal VOC dataset folder into ImageRecords.

    Args:
        folder: the dataset folder, in one of the layouts of the module doc.
        labels: `<name>`s read as faces (exact match); None reads every object as a face.

    Returns:
        LoadResult(records sorted by name, report). Names are the image's path below the
        images folder. Bad files and objects are in the report, not in the records.
    """
    layout = voc_layout(folder)
    if layout is None:
        raise DatasetError(
            f"{folder}: no VOC .xml files (looked in annotations/, Annotations/ and the folder)"
        )
    xml_dir, images_dir = layout
    accepted = parse_label_filter(labels)
    report = LoadReport(folder, "voc")
    images = _images_in(images_dir)
    by_stem = {}
    for path in images:
        by_stem.setdefault(_stem(path), []).append(path)
    records, claimed = [], set()
    for xml_path in xml_files(xml_dir):
        claimed.update(_key(p) for p in by_stem.get(_stem(xml_path), ()))  # even if it is bad
        record = _read_file(xml_path, folder, images_dir, by_stem, accepted, report)
        if record is not None:
            records.append(record)
            claimed.add(_key(record.path))
    report.unlabelled = sum(1 for p in images if _key(p) not in claimed)
    records.sort(key=lambda r: r.name)
    report.count(records)
    return LoadResult(records, report)


def xml_files(folder: str) -> list:
    """Sorted .xml files directly in `folder` (none if it is not a folder)."""
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if f.lower().endswith(".xml") and os.path.isfile(os.path.join(folder, f))
    )


def _images_in(folder: str) -> list:
    """Sorted image files directly in `folder`."""
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _key(path: str) -> str:
    """One spelling of a file's path, to compare paths found in different ways."""
    return os.path.normpath(os.path.abspath(path))


def _read_file(xml_path: str, folder: str, images_dir: str, by_stem: dict, accepted,
               report: LoadReport) -> Optional[ImageRecord]:
    shown = display_path(xml_path, folder)
    try:
        # The standard library's parser: it never fetches external entities, and its expat
        # (>= 2.4) bounds entity expansion.
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        line = e.position[0] if e.position else 0
        reason = str(e).split(": line ")[0]
        report.problem(f"{shown}:{line}: not valid XML ({reason})")
        return None
    except (ValueError, LookupError) as e:
        # expat's answer to an XML declaration naming a multi-byte (ValueError) or unknown
        # (LookupError) encoding, raised before any element is read.
        report.problem(f"{shown}:1: not readable XML ({shown_text(str(e))})")
        return None
    if root.tag != "annotation":
        report.problem(f"{shown}: <{root.tag}>: expected an <annotation> root, not a VOC file")
        return None

    filename = (root.findtext("filename") or "").strip()
    if escapes_folder(filename):  # judged on the text: the outside file is never looked at
        report.problem(outside_message(f"{shown}: <filename>", filename,
                                       display_path(images_dir, folder)))
        return None
    image_path = _image_path(images_dir, filename, by_stem.get(_stem(xml_path), ()))
    if image_path is None:
        looked = _stem(xml_path) + ".{jpg,png,...}"
        what = (f"{shown_text(filename)} not found (nor {looked})" if filename
                else f"missing, and no {looked}")
        report.problem(f"{shown}: <filename>: {what} in {display_path(images_dir, folder)}",
                       missing_image=True)
        return None
    size, size_from = _size(root), "<size>"
    if size is None:
        size_from = "the image file"
        try:
            size = read_image_size(image_path)
        except ImageError as e:
            report.problem(f"{shown}: <size>: missing, and {_reason(e)}")
            return None

    boxes, ignore = [], []
    for number, obj in enumerate(root.iter("object"), start=1):
        where = f"{shown}: object {number}"
        if accepted is not None and (obj.findtext("name") or "").strip() not in accepted:
            report.filtered += 1
            continue
        box = _box(obj, size, size_from, where, report)
        if box is None:
            continue
        difficult = _flag(obj, "difficult", where, report)
        if difficult is None:
            continue
        boxes.append(box)
        ignore.append(difficult)
    return ImageRecord(
        path=image_path,
        name=record_name(image_path, images_dir),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        ignore=np.asarray(ignore, bool),
    )


def _image_path(images_dir: str, filename: str, same_stem) -> Optional[str]:
    """`<filename>` in the images folder, else the first image named like the .xml
    (`same_stem`, sorted); None if neither."""
    if filename:
        relative = filename.replace("\\", "/")
        for candidate in (relative, os.path.basename(relative)):
            path = path_inside(images_dir, candidate)  # a symlink leading out is not used
            if path:
                return os.path.normpath(path)
    return same_stem[0] if same_stem else None


def _size(root) -> Optional[Tuple[float, float]]:
    """(width, height) from `<size>` when both are positive numbers, else None."""
    try:
        width = float(root.findtext("size/width") or "")
        height = float(root.findtext("size/height") or "")
    except ValueError:
        return None
    if not (0 < width <= MAX_COORDINATE and 0 < height <= MAX_COORDINATE):
        return None  # also NaN and inf
    return width, height


def _box(obj, size, size_from: str, where: str, report: LoadReport):
    """[x1, y1, x2, y2] clipped to the image, or None (reported) if missing, bad or outside it."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        report.problem(f"{where} <bndbox>: missing")
        return None
    values = []
    for key in _CORNERS:
        text = bndbox.findtext(key)
        if text is None or not text.strip():
            report.problem(f"{where} <bndbox><{key}>: missing")
            return None
        try:
            # ASCII only, no '_': float() would read '1_0' as 10 and '١' as 1.
            if not text.isascii() or "_" in text:
                raise ValueError(text)
            value = float(text)
        except ValueError:
            report.problem(f"{where} <bndbox><{key}>: {_quoted(text)} is not a number")
            return None
        if not math.isfinite(value):
            report.problem(f"{where} <bndbox><{key}>: {_quoted(text)} is not a finite number")
            return None
        values.append(value)
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        report.problem(
            f"{where} <bndbox>: non-positive size (w={_num(x2 - x1)}, h={_num(y2 - y1)})")
        return None
    width, height = size
    for key, value, limit in (("xmin", x1, width), ("ymin", y1, height),
                              ("xmax", x2, width), ("ymax", y2, height)):
        if not -BORDER_TOLERANCE <= value <= limit + BORDER_TOLERANCE:
            axis = "width" if key[0] == "x" else "height"
            report.problem(f"{where} <bndbox><{key}>: {_num(value)} is more than "
                           f"{_num(BORDER_TOLERANCE)} px outside the image ({axis} {_num(limit)} "
                           f"from {size_from})")
            return None
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        report.problem(f"{where} <bndbox>: nothing left inside the image once clipped")
        return None
    if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:  # float32 corners would collapse
        report.problem(f"{where} <bndbox>: w={_num(x2 - x1)}, h={_num(y2 - y1)}: under "
                       f"{MIN_BOX_SIZE:g} px (no face is that small)")
        return None
    return [x1, y1, x2, y2]


def _flag(obj, key: str, where: str, report: LoadReport) -> Optional[bool]:
    """A 0 / 1 element (absent or empty: False); None (reported) if anything else."""
    text = (obj.findtext(key) or "").strip()
    if text in ("", "0", "1"):
        return text == "1"
    report.problem(f"{where} <{key}>: {_quoted(text)} is not 0 or 1")
    return None


def _reason(error: ImageError) -> str:
    """An ImageError's message without its leading `path: ` (the caller names the file)."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def _quoted(text: str) -> str:
    """An element's text for a message: quoted, escaped, cut at 60 characters."""
    return shown_text(repr(text.strip()))


def _num(v: float) -> str:
    # Integers as integers, up to 1e15 (past it, 1e300 would print as 301 digits).
    return str(int(v)) if abs(v) < 1e15 and math.isclose(v, round(v)) else f"{v:g}"
