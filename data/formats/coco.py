"""COCO annotations: one .json with `images`, `annotations` and `categories`.

    {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                      "bbox": [x, y, w, h], "iscrowd": 0}],
     "categories": [{"id": 1, "name": "face"}]}

- `bbox` is top-left x, y and width, height in pixels: the project's xywh as it is.
- `iscrowd: 1` (and a truthy `ignore`, used by some face sets) makes an ignored face.
- Categories read as faces: the names given, else `face` when the file has a category of
  that name (any case), else all of them.
- Every listed image is a record, so images without face annotations are background.
- `file_name` is looked up under, in order: the images folder given, the .json's folder,
  its `images/`, the parent folder's `images/`, the parent folder, and the parent's folder
  named after the file (`annotations/instances_train2017.json` -> `train2017/`).
A malformed .json file is the whole dataset: it raises AnnotationError. A bad image entry
or annotation is reported and left out.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Optional

import numpy as np

from data.formats import LoadReport, LoadResult, parse_label_filter
from data.records import ImageRecord
from errors import AnnotationError, DatasetError

DEFAULT_CATEGORY = "face"


def is_coco_file(path: str) -> bool:
    """Whether a .json file is a COCO annotation file (has `images` and `annotations`)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "images" in data and "annotations" in data


def image_folders(json_path: str, images_dir: Optional[str] = None) -> list:
    """Folders where the file names of a COCO .json are looked up, in order."""
    here = os.path.dirname(os.path.abspath(json_path))
    parent = os.path.dirname(here)
    stem = os.path.splitext(os.path.basename(json_path))[0]
    folders = [images_dir] if images_dir else []
    folders += [here, os.path.join(here, "images"), os.path.join(parent, "images"), parent,
                os.path.join(parent, stem.rsplit("_", 1)[-1])]
    unique = []
    for folder in folders:
        if folder not in unique and os.path.isdir(folder):
            unique.append(folder)
    return unique


def read_coco(
    json_path: str,
    images_dir: Optional[str] = None,
    categories: Optional[Iterable[str]] = None,
) -> LoadResult:
    """Read a COCO annotation file into ImageRecords.

    Args:
        json_path: the COCO .json.
        images_dir: folder of the images; None looks in the usual places (module doc).
        categories: category names read as faces; None: 'face' if present, else all.

    Returns:
        LoadResult(records in the file's image order, report). Record names are the
        `file_name`s, '/'-separated.
    """
    data = _load(json_path)
    shown = os.path.basename(json_path)
    report = LoadReport(json_path, "coco")
    accepted = _category_ids(data["categories"], categories, json_path)
    folders = image_folders(json_path, images_dir)

    images = {}  # id -> (path, name)
    for i, entry in enumerate(data["images"]):
        where = f"{shown}: images[{i}]"
        if not isinstance(entry, dict) or not _is_id(entry.get("id")):
            report.problem(f"{where}.id: expected an object with an integer or string id")
            continue
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            report.problem(f"{where}.file_name: missing or not a string")
            continue
        if entry["id"] in images:
            report.problem(f"{where}.id: {entry['id']!r} listed twice")
            continue
        name = file_name.strip().replace("\\", "/")
        path = next((p for p in (os.path.join(f, name) for f in folders) if os.path.isfile(p)), None)
        if path is None:
            report.problem(f"{where}.file_name: {name} not found", missing_image=True)
            continue
        images[entry["id"]] = (path, name)

    boxes = {image_id: [] for image_id in images}
    ignore = {image_id: [] for image_id in images}
    known_images = {e["id"] for e in data["images"] if isinstance(e, dict) and _is_id(e.get("id"))}
    for i, ann in enumerate(data["annotations"]):
        where = f"{shown}: annotations[{i}]"
        if not isinstance(ann, dict):
            report.problem(f"{where}: expected an object")
            continue
        image_id = ann.get("image_id")
        if not _is_id(image_id) or image_id not in known_images:
            report.problem(f"{where}.image_id: {image_id!r} is not in images")
            continue
        if image_id not in images:
            continue  # its image entry was already reported
        category = ann.get("category_id")
        if accepted is not None and (not _is_id(category) or category not in accepted):
            report.filtered += 1
            continue
        box = _bbox(ann.get("bbox"), f"{where}.bbox", report)
        if box is None:
            continue
        boxes[image_id].append(box)
        ignore[image_id].append(bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0)))

    records = [
        ImageRecord(
            path=path, name=name,
            boxes=np.asarray(boxes[image_id], np.float32).reshape(-1, 4),
            ignore=np.asarray(ignore[image_id], bool),
        )
        for image_id, (path, name) in images.items()
    ]
    report.count(records)
    return LoadResult(records, report)


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _load(json_path: str) -> dict:
    try:
        with open(json_path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{json_path}: COCO annotation file not found") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{json_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{json_path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{json_path}: expected a COCO object with images and annotations")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{json_path}: {key}: missing or not a list")
    data.setdefault("categories", [])
    if not isinstance(data["categories"], list):
        raise AnnotationError(f"{json_path}: categories: not a list")
    return data


def _category_ids(categories: list, wanted, json_path: str) -> Optional[frozenset]:
    """Accepted category ids; None accepts every annotation."""
    names = {}
    for c in categories:
        if isinstance(c, dict) and _is_id(c.get("id")):
            names.setdefault(str(c.get("name", "")), set()).add(c["id"])
    chosen = parse_label_filter(wanted)
    if chosen is None:
        faces = [ids for name, ids in names.items() if name.lower() == DEFAULT_CATEGORY]
        return frozenset().union(*faces) if faces else None
    unknown = sorted(chosen - set(names))
    if unknown:
        raise DatasetError(
            f"{json_path}: categories: {', '.join(unknown)} not found "
            f"(the file has: {', '.join(sorted(names)) or 'none'})"
        )
    return frozenset().union(*(names[n] for n in chosen))


def _bbox(bbox, where: str, report: LoadReport):
    """[x, y, w, h] floats, or None (reported) if malformed or of non-positive size."""
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        report.problem(f"{where}: expected [x, y, w, h] numbers, got {json.dumps(bbox)[:60]}")
        return None
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        report.problem(f"{where}: not finite numbers: {bbox}")
        return None
    for key, value in (("w", w), ("h", h)):
        if value < 0:
            report.problem(f"{where}: {key}={value:g}: negative size")
            return None
        if value == 0:
            report.problem(f"{where}: {key}=0: zero size")
            return None
    return [x, y, w, h]
