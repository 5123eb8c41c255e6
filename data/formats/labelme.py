"""labelme annotations: one .json per image, faces drawn as rectangles.

A labelme file (https://github.com/wkentaro/labelme) looks like

    {"imagePath": "img_0001.jpg", "imageWidth": 640, "imageHeight": 480,
     "shapes": [{"label": "face", "shape_type": "rectangle",
                 "points": [[412.0, 96.5], [301.0, 210.0]], "flags": {}}]}

- `points` are two opposite corners in any order (labelme keeps the drag direction);
  the box is their min / max, in the pixels of the image as decoded upright (labelme and
  OpenCV both apply EXIF orientation, so the two agree).
- `imagePath` is relative to the .json's folder (backslashes from Windows accepted); if
  it does not exist, the image of the same name beside the .json is used.
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

from data.formats import LoadReport, LoadResult, display_path, parse_label_filter, record_name
from data.image import image_files
from data.records import ImageRecord


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
    records, used_images = [], set()
    for json_path in labelme_files(folder):
        record = _read_file(json_path, folder, accepted, report)
        if record is not None:
            records.append(record)
            used_images.add(os.path.normpath(os.path.abspath(record.path)))
    report.unlabelled = sum(
        1 for p in image_files(folder) if os.path.normpath(os.path.abspath(p)) not in used_images
    )
    records.sort(key=lambda r: r.name)
    report.count(records)
    return LoadResult(records, report)


def _read_file(json_path: str, folder: str, accepted, report: LoadReport) -> Optional[ImageRecord]:
    shown = display_path(json_path, folder)
    try:
        with open(json_path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        report.problem(f"{shown}:{e.lineno}: not valid JSON ({e.msg})")
        return None
    except UnicodeDecodeError:
        report.problem(f"{shown}: not UTF-8 text")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        report.problem(f"{shown}: shapes: missing, not a labelme file")
        return None
    image_path = _image_path(json_path, data.get("imagePath"))
    if image_path is None:
        report.problem(f"{shown}: imagePath: missing or not a string")
        return None
    if not os.path.isfile(image_path):
        report.problem(f"{shown}: imagePath: {data['imagePath']} not found", missing_image=True)
        return None

    boxes, ignore = [], []
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
        box = _rectangle(shape.get("points"), where, report)
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


def _rectangle(points, where: str, report: LoadReport):
    """[x, y, w, h] from a rectangle's corner points (any order), or None if bad."""
    try:
        xy = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        xy = None
    if xy is None or xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 2:
        report.problem(f"{where}.points: expected two corners [[x, y], [x, y]], got {_short(points)}")
        return None
    if not np.isfinite(xy).all():
        report.problem(f"{where}.points: not finite numbers: {_short(points)}")
        return None
    x1, y1 = xy.min(axis=0)
    x2, y2 = xy.max(axis=0)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        report.problem(f"{where}.points: zero-size rectangle (w={_num(w)}, h={_num(h)})")
        return None
    return [x1, y1, w, h]


def _num(v: float) -> str:
    return str(int(v)) if math.isclose(v, round(v)) else f"{v:g}"


def _short(value) -> str:
    text = json.dumps(value) if value is not None else "nothing"
    return text if len(text) <= 60 else text[:60] + "..."
