"""COCO annotations: one .json with `images`, `annotations` and `categories`.

    {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                      "bbox": [x, y, w, h], "iscrowd": 0}],
     "categories": [{"id": 1, "name": "face"}]}

- `bbox` is top-left x, y and width, height in pixels (xywh), turned into the project's
  corners x1, y1, x2, y2 here, once (`data.boxes.xywh_to_xyxy`).
- `iscrowd: 1` (and `ignore: 1`, used by some face sets) makes an ignored face. Both are
  read strictly: 0 / 1 (or false / true); anything else, the string "0" included (which
  a truthiness test would read as crowd), is reported and the annotation left out.
- Categories read as faces: the names given, else `face` when the file has a category of
  that name (any case), else all of them. In a file that lists categories, an annotation
  whose `category_id` is missing, of another type (a string "1" for the id 1) or not
  listed is reported, not silently skipped; one of a listed non-face category is
  counted as filtered.
- Boxes must be sane (`data.formats.box_problem`): finite, within MAX_COORDINATE px, not
  wholly outside the image, whose size is the entry's `width` / `height` (read from the
  image file's header when those are missing or not positive numbers).
- Every listed image is a record, so images without face annotations are background.
- `file_name` is looked up under, in order: the images folder given, the .json's folder,
  its `images/`, the parent folder's `images/`, the parent folder, and the parent's folder
  named after the file (`annotations/instances_train2017.json` -> `train2017/`). It must
  stay inside the folder it is found in: an absolute or `..` name, or a symlink leading
  out, is reported and its image left out, never read (`data.formats.escapes_folder`).
A malformed .json file is the whole dataset: it raises AnnotationError. A bad image entry
or annotation is reported and left out.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Optional

import numpy as np

from data.boxes import xywh_to_xyxy
from data.formats import (
    LoadReport,
    LoadResult,
    box_problem,
    escapes_folder,
    is_number,
    load_json,
    outside_message,
    parse_label_filter,
    path_inside,
    shown_text,
    valid_size,
)
from data.image import read_image_size
from data.records import ImageRecord
from common.errors import AnnotationError, DatasetError, FaceDetectorError, ImageError

DEFAULT_CATEGORY = "face"


def is_coco_file(path: str) -> bool:
    """Whether a .json file is a COCO annotation file (has `images` and `annotations`)."""
    try:
        data = load_json(path)
    except (OSError, FaceDetectorError):
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

    images = _read_images(data["images"], json_path, folders, report)
    boxes, ignore = _read_annotations(data, images, accepted, shown, report)

    records = [
        ImageRecord(
            path=path, name=name,
            boxes=xywh_to_xyxy(np.asarray(boxes[image_id], np.float64)),
            ignore=np.asarray(ignore[image_id], bool),
        )
        for image_id, (path, name, _) in images.items()
    ]
    report.count(records)
    return LoadResult(records, report)


def _read_images(entries: list, json_path: str, folders: list, report: LoadReport) -> dict:
    """The file's `images`, found on disk: {id: (path, name, (width, height))}; each bad
    or missing entry is a problem of the report."""
    shown = os.path.basename(json_path)
    images = {}  # id -> (path, name, (width, height))
    for i, entry in enumerate(entries):
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
        if escapes_folder(name):  # judged on the text: the outside file is never looked at
            report.problem(outside_message(f"{where}.file_name", name,
                                           folders[0] if folders else os.path.dirname(json_path)))
            continue
        path = next((p for p in (path_inside(f, name) for f in folders) if p), None)
        if path is None:
            report.problem(f"{where}.file_name: {shown_text(name)} not found", missing_image=True)
            continue
        size = valid_size(entry.get("width"), entry.get("height"))
        if size is None:  # no usable width / height in the entry: the file's header says
            try:
                size = read_image_size(path)
            except ImageError as e:
                report.problem(f"{where}.file_name: {shown_text(name)}: {_reason(e)}")
                continue
        images[entry["id"]] = (path, name, size)
    return images


def _read_annotations(data: dict, images: dict, accepted: Optional[set], shown: str,
                      report: LoadReport) -> tuple:
    """Each found image's face boxes (xywh, as the file has them) and ignore flags:
    ({id: [box, ...]}, {id: [bool, ...]}); annotations of other categories are counted
    as filtered, bad ones are problems of the report."""
    boxes = {image_id: [] for image_id in images}
    ignore = {image_id: [] for image_id in images}
    known_images = {e["id"] for e in data["images"] if isinstance(e, dict) and _is_id(e.get("id"))}
    listed = _listed_categories(data["categories"])
    for i, ann in enumerate(data["annotations"]):
        where = f"{shown}: annotations[{i}]"
        if not isinstance(ann, dict):
            report.problem(f"{where}: expected an object")
            continue
        image_id = ann.get("image_id")
        if not _is_id(image_id) or image_id not in known_images:
            report.problem(f"{where}.image_id: {_json(image_id)} is not in images")
            continue
        if image_id not in images:
            continue  # its image entry was already reported
        category = ann.get("category_id")
        if listed and (not _is_id(category) or category not in listed):
            what = "missing" if "category_id" not in ann else f"{_json(category)} is not"
            report.problem(f"{where}.category_id: {what} a category id of the file "
                           f"({_some(listed)})")
            continue
        if accepted is not None and (not _is_id(category) or category not in accepted):
            report.filtered += 1
            continue
        box = _bbox(ann.get("bbox"), f"{where}.bbox", report, images[image_id][2])
        if box is None:
            continue
        crowd = _flag(ann, "iscrowd", where, report)
        ignored = None if crowd is None else _flag(ann, "ignore", where, report)
        if ignored is None:
            continue
        boxes[image_id].append(box)
        ignore[image_id].append(crowd or ignored)
    return boxes, ignore


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _listed_categories(categories: list) -> frozenset:
    """The category ids the file lists (empty: the file names no categories)."""
    return frozenset(c["id"] for c in categories if isinstance(c, dict) and _is_id(c.get("id")))


def _some(ids: frozenset, shown: int = 5) -> str:
    listed = sorted(ids, key=lambda v: (isinstance(v, str), v))
    text = ", ".join(repr(v) for v in listed[:shown])
    return f"ids: {text}" + (f" and {len(listed) - shown} more" if len(listed) > shown else "")


def _flag(ann: dict, key: str, where: str, report: LoadReport):
    """A 0 / 1 field (absent: False); None (reported) if anything else."""
    value = ann.get(key, 0)
    if is_number(value) and value in (0, 1) or isinstance(value, bool):
        return bool(value)
    report.problem(f"{where}.{key}: {_json(value)} is not 0 or 1")
    return None


def _json(value) -> str:
    return shown_text(json.dumps(value))


def _reason(error: ImageError) -> str:
    """An ImageError's message without its leading `path: ` (the caller names the file)."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def _load(json_path: str) -> dict:
    try:
        data = load_json(json_path)
    except FileNotFoundError:
        raise DatasetError(f"{json_path}: COCO annotation file not found") from None
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


def _bbox(bbox, where: str, report: LoadReport, size):
    """[x, y, w, h] floats, or None (reported) if malformed, of non-positive size or not
    sane in the image of `size` (width, height)."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        report.problem(f"{where}: expected [x, y, w, h] numbers, got {_json(bbox)}")
        return None
    x, y, w, h = (float(v) for v in bbox)  # load_json bounds integers: no OverflowError
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        report.problem(f"{where}: not finite numbers: {_json(bbox)}")
        return None
    for key, value in (("w", w), ("h", h)):
        if value < 0:
            report.problem(f"{where}: {key}={value:g}: negative size")
            return None
        if value == 0:
            report.problem(f"{where}: {key}=0: zero size")
            return None
    problem = box_problem(x, y, w, h, size)
    if problem:
        report.problem(f"{where}: {problem}")
        return None
    return [x, y, w, h]
