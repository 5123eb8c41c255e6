"""labelme annotations: one .json per image, faces drawn as rectangles.

A labelme file (https://github.com/wkentaro/labelme) looks like

    {"imagePath": "img_0001.jpg", "imageWidth": 640, "imageHeight": 480,
     "shapes": [{"label": "face", "shape_type": "rectangle",
                 "points": [[412.0, 96.5], [301.0, 210.0]], "flags": {}}]}

- `points` are two opposite corners in any order (labelme keeps the drag direction);
  the box is their min / max, in the pixels of the image as decoded upright (labelme and
  OpenCV both apply EXIF orientation, so the two agree).
- `imagePath` is relative to the .json's folder (backslashes from Windows accepted); if
  it does not exist, the image of the same name beside the .json is used. imagePath is
  followed when it names another image than the .json's own, except when the .json's own
  image (same stem, beside it) exists: then the pair is ambiguous (typically a .json copied
  from another image's and edited), so the file is reported and left out. An image is read
  once: a .json naming an image that has its own .json (same stem, beside it) is reported,
  and so is a second .json naming the same image (sorted order).
- Boxes must be sane (`data.formats.box_problem`): finite, within MAX_COORDINATE px, not
  wholly outside the image, whose size is `imageWidth` / `imageHeight` (read from the image
  file's header when those are missing or not positive numbers).
- A shape whose per-label flags say `ignore` (labelme `--labelflags '{face: [ignore]}'`)
  becomes an ignored face: neither learned nor penalised.
- Shapes other than rectangles are skipped and counted; so are labels outside the filter.
- A .json with no rectangles is an image without faces: an all-background sample.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Optional

import numpy as np

from data.formats import (
    LoadReport,
    LoadResult,
    box_problem,
    display_path,
    is_number,
    load_json,
    parse_label_filter,
    record_name,
    shown_text,
    valid_size,
)
from data.image import IMAGE_EXTENSIONS, image_files, read_image_size
from data.records import ImageRecord
from common.errors import AnnotationError, ImageError


def labelme_files(folder: str) -> list:
    """Sorted .json files under `folder` (recursive)."""
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(".json"))
    return sorted(found)


def read_labelme(folder: str, labels: Optional[Iterable[str]] = None) -> LoadResult:
    """Read every labelme .json under `folder` into ImageRecords.

    Args:
        folder: the dataset folder (searched recursively).
        labels: rectangle labels read as faces (exact match); None accepts every rectangle.

    Returns:
        LoadResult(records sorted by name, report). Bad files and shapes are in the report
        (emitted as one warning by the caller, see `LoadReport.emit`), not in the records.
    """
    accepted = parse_label_filter(labels)
    report = LoadReport(folder, "labelme")
    records, used_images = [], {}  # image key -> the .json that claimed it
    for json_path in labelme_files(folder):
        record = _read_file(json_path, folder, accepted, report, used_images)
        if record is not None:
            records.append(record)
            used_images[os.path.normpath(os.path.abspath(record.path))] = json_path
    report.unlabelled = sum(
        1 for p in image_files(folder) if os.path.normpath(os.path.abspath(p)) not in used_images
    )
    records.sort(key=lambda r: r.name)
    report.count(records)
    return LoadResult(records, report)


def _read_file(json_path: str, folder: str, accepted, report: LoadReport,
               used_images: dict) -> Optional[ImageRecord]:
    shown = display_path(json_path, folder)
    try:
        data = load_json(json_path, shown)
    except AnnotationError as e:
        report.problem(str(e))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        report.problem(f"{shown}: shapes: missing, not a labelme file")
        return None
    image_path = _image_path(json_path, data.get("imagePath"))
    if image_path is None:
        report.problem(f"{shown}: imagePath: missing or not a string")
        return None
    if not os.path.isfile(image_path):
        report.problem(f"{shown}: imagePath: {shown_text(data['imagePath'])} not found",
                       missing_image=True)
        return None
    own = _own_image(json_path)
    if own is not None and _stem_key(image_path) != _stem_key(json_path):
        report.problem(f"{shown}: imagePath: names {display_path(image_path, folder)}, but the "
                       f".json's own image {display_path(own, folder)} is beside it; fix imagePath "
                       f"or rename the .json")
        return None
    owner = os.path.splitext(image_path)[0] + ".json"
    if _key(owner) != _key(json_path) and os.path.isfile(owner):
        report.problem(f"{shown}: imagePath: {display_path(image_path, folder)} is annotated by "
                       f"its own {display_path(owner, folder)}")
        return None
    first = used_images.get(_key(image_path))
    if first is not None:
        report.problem(f"{shown}: imagePath: {display_path(image_path, folder)} is already "
                       f"annotated by {display_path(first, folder)}")
        return None

    boxes, ignore, size = [], [], None
    for i, shape in enumerate(data["shapes"]):
        where = f"{shown}: shapes[{i}]"
        if not isinstance(shape, dict):
            report.problem(f"{where}: expected an object")
            continue
        # labelme omits shape_type for polygons in its oldest files.
        if shape.get("shape_type", "polygon") != "rectangle":
            report.skipped_shapes += 1
            continue
        if accepted is not None and str(shape.get("label", "")) not in accepted:
            report.filtered += 1
            continue
        if size is None:  # only needed, so only read, for a file with rectangles
            size = _image_size(data, image_path)
            if isinstance(size, ImageError):
                report.problem(f"{shown}: imagePath: {_reason(size)}")
                return None
        box = _rectangle(shape.get("points"), where, report, size)
        if box is None:
            continue
        boxes.append(box)
        flags = shape.get("flags")
        ignore.append(bool(isinstance(flags, dict) and flags.get("ignore")))
    return ImageRecord(
        path=image_path,
        name=record_name(image_path, folder),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        ignore=np.asarray(ignore, bool),
    )


def _key(path: str) -> str:
    """One spelling of a file's path, to compare paths found in different ways."""
    return os.path.normpath(os.path.abspath(path))


def _stem_key(path: str) -> str:
    """The path without its extension: x.json, x.jpg and x.png belong together."""
    return os.path.splitext(_key(path))[0]


def _own_image(json_path: str) -> Optional[str]:
    """The image beside a .json with its stem (`x.json` -> `x.jpg`, ...), or None."""
    stem = os.path.splitext(json_path)[0]
    for ext in IMAGE_EXTENSIONS:
        for candidate in (stem + ext, stem + ext.upper()):
            if os.path.isfile(candidate):
                return candidate
    return None


def _image_size(data: dict, image_path: str):
    """(width, height) from imageWidth / imageHeight, else the image header; the
    ImageError if the header cannot be read."""
    size = valid_size(data.get("imageWidth"), data.get("imageHeight"))
    if size is not None:
        return size
    try:
        return read_image_size(image_path)
    except ImageError as e:
        return e


def _reason(error: ImageError) -> str:
    """An ImageError's message without its leading `path: ` (the caller names the file)."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def _image_path(json_path: str, image_path) -> Optional[str]:
    """The image file a labelme .json names; the same name beside the .json as fallback."""
    if not isinstance(image_path, str) or not image_path.strip():
        return None
    here = os.path.dirname(json_path)
    relative = image_path.strip().replace("\\", "/")
    path = os.path.normpath(os.path.join(here, relative))
    if not os.path.isfile(path):
        beside = os.path.join(here, os.path.basename(relative))
        if os.path.isfile(beside):
            return beside
    return path


def _rectangle(points, where: str, report: LoadReport, size):
    """[x1, y1, x2, y2] from a rectangle's corner points (any order), or None if bad."""
    if not (isinstance(points, list) and len(points) >= 2 and all(
            isinstance(p, list) and len(p) == 2 and all(is_number(v) for v in p) for p in points)):
        report.problem(f"{where}.points: expected two corners [[x, y], [x, y]], got {_short(points)}")
        return None
    xy = np.asarray(points, dtype=np.float64)  # numbers only (load_json bounds integers)
    if not np.isfinite(xy).all():
        report.problem(f"{where}.points: not finite numbers: {_short(points)}")
        return None
    x1, y1 = xy.min(axis=0)
    x2, y2 = xy.max(axis=0)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        report.problem(f"{where}.points: zero-size rectangle (w={_num(w)}, h={_num(h)})")
        return None
    problem = box_problem(float(x1), float(y1), float(w), float(h), size)
    if problem:
        report.problem(f"{where}.points: {problem}")
        return None
    return [x1, y1, x2, y2]


def _num(v: float) -> str:
    # Integers as integers, up to 1e15 (past it, 1e300 would print as 301 digits).
    return str(int(v)) if abs(v) < 1e15 and math.isclose(v, round(v)) else f"{v:g}"


def _short(value) -> str:
    text = json.dumps(value) if value is not None else "nothing"
    return text if len(text) <= 60 else text[:60] + "..."
