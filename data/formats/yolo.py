"""YOLO annotations: one text file per image, one `class cx cy w h` line per box.

Values are normalised by the image size (centre and size in [0, 1]), so converting to
pixels needs each image's size: it is read from the file header (`read_image_size`,
microseconds for JPEG / PNG, a full decode for other formats), only for images that have
boxes. Layouts found by the usual rule "replace the last `images` folder by `labels`,
the extension by .txt", or a .txt beside the image:

    root/images/a.jpg          + root/labels/a.txt
    root/images/train/a.jpg    + root/labels/train/a.txt      (Ultralytics)
    root/train/images/a.jpg    + root/train/labels/a.txt      (Roboflow export)
    root/a.jpg                 + root/a.txt

Class names, used when the filter names classes, come from `classes.txt` (one name a
line, line k is class k) in the folder or up to two folders above it; it is read only when
the filter names a class by name, and one that is not UTF-8 raises AnnotationError naming
it. An image without a label file is background (no faces), as in YOLO tools; it is
counted in the report. Values are plain ASCII numbers (Python would read '1_0' as 10);
a box converted to pixels must be sane (`data.formats.box_problem`), else it is reported;
kept boxes become the project's pixel corners x1, y1, x2, y2 here.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional

import numpy as np

from data.boxes import xywh_to_xyxy
from data.formats import (
    LoadReport,
    LoadResult,
    box_problem,
    decode_utf8,
    display_path,
    parse_label_filter,
    record_name,
    shown_text,
)
from data.image import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, check_pixels, image_files, read_image_size
from data.records import ImageRecord
from common.errors import AnnotationError, DatasetError, ImageError

CLASSES_FILE = "classes.txt"
# Exports round 1.0 to values like 1.0000001; this much outside [0, 1] is still accepted.
_TOLERANCE = 1e-6


def load_class_names(folder: str) -> Optional[list]:
    """Names from `classes.txt` in `folder` or up to two folders above; None if none.

    A classes.txt that is not UTF-8 text raises AnnotationError naming it and the line.
    """
    here = os.path.abspath(folder)
    for _ in range(3):
        path = os.path.join(here, CLASSES_FILE)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                raw = f.read()
            try:
                text = decode_utf8(raw, path)
            except AnnotationError as e:
                raise AnnotationError(f"{e}; {CLASSES_FILE} holds one class name a line") from None
            return [line.strip() for line in text.splitlines() if line.strip()]
        here = os.path.dirname(here)
    return None


def resolve_classes(classes, folder: str) -> Optional[frozenset]:
    """The accepted class ids from ids and / or names (names need classes.txt)."""
    chosen = parse_label_filter(classes)
    if chosen is None:
        return None
    # classes.txt is read only when a name needs it: ids alone work without (or despite) it.
    names = None if all(_is_class_id(item) for item in chosen) else load_class_names(folder)
    ids = set()
    for item in chosen:
        if _is_class_id(item):
            ids.add(int(item))
        elif names is not None and item in names:
            ids.add(names.index(item))
        elif names is None:
            raise DatasetError(
                f"{folder}: class name {item!r} needs a {CLASSES_FILE} (one name a line), "
                f"or give class ids"
            )
        else:
            raise DatasetError(
                f"{folder}: class {item!r} is not in {CLASSES_FILE} ({', '.join(names)})"
            )
    return frozenset(ids)


def _is_class_id(text: str) -> bool:
    """Up to 18 ASCII digits: str.isdigit() also accepts '²' or '١', which int() rejects or
    reads as another number, and an id of hundreds of digits is corruption, not a class."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def label_path_candidates(image_path: str) -> list:
    """Where an image's label file may be: labels/ in place of the last images/, or beside."""
    directory, file = os.path.split(image_path)
    stem = os.path.splitext(file)[0] + ".txt"
    parts = directory.split(os.sep)
    candidates = []
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] == "images":
            candidates.append(os.path.join(os.sep.join(parts[:k] + ["labels"] + parts[k + 1:]), stem))
            break
    candidates.append(os.path.join(directory, stem))
    return candidates


def read_yolo(folder: str, classes: Optional[Iterable] = None,
              max_pixels: Optional[int] = None) -> LoadResult:
    """Read a YOLO dataset folder into ImageRecords (boxes converted to pixels).

    Args:
        folder: the dataset folder; images are found recursively under it.
        classes: class ids (ints or digit strings) and / or names from classes.txt read as
            faces; None accepts every class.
        max_pixels: Config.max_image_pixels (None: its default). An image whose header
            claims more pixels is reported and left out, not used to scale boxes: it would
            not decode, and a corrupt header would scale them to nonsense.

    Returns:
        LoadResult(records sorted by name, report). Bad lines, out-of-range values,
        unreadable images and label files without an image are in the report.
    """
    accepted = resolve_classes(classes, folder)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    report = LoadReport(folder, "yolo")
    records, claimed = [], set()
    for image_path in image_files(folder):
        label_path = next((p for p in label_path_candidates(image_path) if os.path.isfile(p)), None)
        name = _image_name(image_path, folder)
        if label_path is None:
            report.unlabelled += 1
            records.append(ImageRecord(path=image_path, name=name))
            continue
        claimed.add(os.path.abspath(label_path))
        rows = _read_label_file(label_path, folder, accepted, report)
        if rows is None:
            continue
        boxes = np.zeros((0, 4), np.float32)
        if rows:
            try:
                width, height = read_image_size(image_path)
                check_pixels(image_path, width, height, limit)
            except ImageError as e:
                report.problem(f"{display_path(image_path, folder)}: {_reason(e)}")
                continue
            values = np.asarray([row for row, _ in rows], np.float64)
            pixels = np.stack([
                (values[:, 0] - values[:, 2] / 2) * width,
                (values[:, 1] - values[:, 3] / 2) * height,
                values[:, 2] * width,
                values[:, 3] * height,
            ], axis=1)
            # Normalised values in [0, 1] are sane; the pixel box can still be absurd (an
            # image header claiming a huge size) or, by the tolerance, wholly outside.
            sane = []
            for (_, where), box in zip(rows, pixels):
                problem = box_problem(*map(float, box), (width, height))
                if problem:
                    report.problem(f"{where}: {problem}")
                else:
                    sane.append(box)
            boxes = xywh_to_xyxy(np.asarray(sane, np.float64))  # pixel corners
        records.append(ImageRecord(
            path=image_path, name=name, boxes=boxes, ignore=np.zeros(len(boxes), bool),
        ))
    for label_path in _orphan_labels(folder, claimed):
        report.problem(
            f"{display_path(label_path, folder)}: no image for this label file "
            f"(looked for {_expected_image(label_path, folder)})",
            missing_image=True,
        )
    records.sort(key=lambda r: r.name)
    report.count(records)
    return LoadResult(records, report)


def _read_label_file(path: str, folder: str, accepted, report: LoadReport):
    """[([cx, cy, w, h], 'file:line'), ...] of the accepted classes, or None if the file
    is unreadable."""
    shown = display_path(path, folder)
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        report.problem(f"{shown}: not UTF-8 text")
        return None
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{shown}:{number}"
        if len(fields) != 5:
            report.problem(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}")
            continue
        try:
            # ASCII only, no '_': int() / float() would read '1_0' as 10 and '١' as 1.
            if not (line.isascii() and "_" not in line and _is_class_id(fields[0])):
                raise ValueError(line)
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            report.problem(f"{where}: expected 'class cx cy w h' (an integer and 4 numbers), "
                           f"got {shown_text(repr(line.strip()), 80)}")
            continue
        if accepted is not None and cls not in accepted:
            report.filtered += 1
            continue
        error = _check_values(cx, cy, w, h)
        if error:
            report.problem(f"{where}: {error}")
            continue
        rows.append(([cx, cy, w, h], where))
    return rows


def _check_values(cx: float, cy: float, w: float, h: float) -> Optional[str]:
    for key, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not math.isfinite(value):
            return f"{key}={value} is not a number"
    for key, value in (("w", w), ("h", h)):
        if value < 0:
            return f"{key}={value:g}: negative size"
        if value == 0:
            return f"{key}=0: zero size"
    for key, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not -_TOLERANCE <= value <= 1 + _TOLERANCE:
            return f"{key}={value:g} outside [0, 1]"
    return None


def _orphan_labels(folder: str, claimed: set) -> list:
    """Label files no image claimed: .txt under a `labels` folder, or beside images."""
    orphans = []
    for root, _, files in os.walk(folder):
        in_labels = "labels" in os.path.relpath(root, folder).split(os.sep)
        beside_images = any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files)
        if not (in_labels or beside_images):
            continue
        for f in files:
            path = os.path.join(root, f)
            if (f.lower().endswith(".txt") and f != CLASSES_FILE
                    and os.path.abspath(path) not in claimed):
                orphans.append(path)
    return sorted(orphans)


def _expected_image(label_path: str, folder: str) -> str:
    directory, file = os.path.split(label_path)
    parts = directory.split(os.sep)
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] == "labels":
            directory = os.sep.join(parts[:k] + ["images"] + parts[k + 1:])
            break
    stem = os.path.splitext(file)[0]
    return display_path(os.path.join(directory, stem), folder) + ".{jpg,png,...}"


def _image_name(image_path: str, folder: str) -> str:
    """The image's path below the last `images` folder (or below `folder`), '/'-separated."""
    parts = record_name(image_path, folder).split("/")
    if "images" in parts[:-1]:
        parts = parts[len(parts) - parts[::-1].index("images"):]
    return "/".join(parts)


def _reason(error: ImageError) -> str:
    """An ImageError's message without its leading `path: ` (the caller names the file)."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text
