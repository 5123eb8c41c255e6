"""RetinaFace / SCRFD labels: one text file of `# relpath` blocks, a box and five points a face.

The form in which WIDER FACE's landmark annotations are published (RetinaFace's
`train/label.txt`) and SCRFD trains from:

    # 0--Parade/0_Parade_marchingband_1_849.jpg          <- image path [W H]
    449 330 122 149 488.9 373.6 0.0 542.1 376.4 0.0 515.0 412.8 0.0 485.2 425.9 0.0 538.4 431.5 0.0 0.82
    78 221 7 8                                           <- a box without points
    ...

- A header is `# relpath` or `# relpath W H` (the image's size in pixels; without it the
  size is read from the image file's header). Every header is a record, so an image
  without face lines is background.
- A face line is `x y w h` (top-left corner, width, height in pixels; turned into the
  project's corners x1, y1, x2, y2 here, once, `data.boxes.xywh_to_xyxy`), optionally
  followed by five points `lx ly v` in the order of `data.landmarks.LANDMARK_NAMES`
  and a last value (a score, or WIDER's blur): 4 or 20 numbers, nothing between (a line
  of 19 would be one that lost a value, its points shifted). `v` (0 visible, 1
  occluded in WIDER's file) is not used. A point `-1 -1` is absent (NaN in the record).
- Ignore regions. A line whose five points are all absent AND whose last value is -1 is
  an ignore region (`ignore=True`: neither learned nor penalised), not a face. That is what
  such a line is in the shared SCUT set (`scut_head_faces/retinaface_labels.txt`: heads
  YuNet was not sure of, faces under 4 px), and for a file that marks real faces that way
  (WIDER FACE's own label.txt writes its tiny faces so) it is the safe reading: a face
  made ignore is only not learned, an ignore region made a face would be learned wrong.
  Read such a set through its WIDER layout, where `invalid` says which boxes are ignored,
  and the label file beside it attaches the points (data/wider.py); a 4-number line, or
  one whose points are absent but that has a score, is a face without points.
- Values are plain ASCII numbers; boxes must be sane (`data.formats.box_problem`); a point
  must be finite and within MAX_COORDINATE px. A bad line is reported with its file and
  line and left out; so is a bad header with its face lines.
- `relpath` is looked up under, in order: the images folder given, the file's folder's
  `images/` (RetinaFace's `train/label.txt` + `train/images/`), the file's folder, and
  its `WIDER_train/images/` and `WIDER_val/images/` (a label file beside a WIDER layout,
  as the SCUT set's). It must stay inside the folder it is found in (`escapes_folder`,
  `path_inside`); a missing image is reported and its block left out.
A file that is not UTF-8 text or holds no `# relpath` header raises AnnotationError.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional

import numpy as np

from data.boxes import xywh_to_xyxy
from data.formats import (
    MAX_COORDINATE,
    LoadReport,
    LoadResult,
    box_problem,
    decode_utf8,
    escapes_folder,
    outside_message,
    path_inside,
    shown_text,
    valid_size,
)
from data.image import IMAGE_EXTENSIONS, read_image_size
from data.landmarks import NUM_LANDMARKS
from data.records import ImageRecord
from common.errors import AnnotationError, DatasetError, ImageError

FACE_LINE = "4 or 20 numbers 'x y w h [5 x (lx ly v) score]'"
_BOX_ONLY, _WITH_POINTS = 4, 5 + 3 * NUM_LANDMARKS
ABSENT = -1.0  # the format's value of an absent point's x and y, and of an ignore region's score
# Bytes read to tell a RetinaFace label file by its first header (format detection).
_SNIFF_BYTES = 4096


def is_retinaface_file(path: str) -> bool:
    """Whether `path` is a text file whose first non-blank line is a `# relpath[ W H]`
    header naming an image (read from its first few KiB only)."""
    if not path.lower().endswith(".txt") or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES).decode("utf-8-sig", "replace")
    except OSError:
        return False
    for line in head.splitlines():
        if line.strip():
            return _header(line) is not None
    return False


def retinaface_files(folder: str) -> list:
    """The RetinaFace label files directly in `folder` (not deeper), sorted."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if is_retinaface_file(os.path.join(folder, f))]


def image_folders(label_path: str, images_dir: Optional[str] = None) -> list:
    """The existing folders where a label file's relpaths are looked up, in order."""
    here = os.path.dirname(os.path.abspath(label_path))
    folders = [images_dir] if images_dir else []
    folders += [os.path.join(here, "images"), here,
                os.path.join(here, "WIDER_train", "images"), os.path.join(here, "WIDER_val", "images")]
    unique = []
    for folder in folders:
        if folder not in unique and os.path.isdir(folder):
            unique.append(folder)
    return unique


def read_retinaface(label_path: str, images_dir: Optional[str] = None) -> LoadResult:
    """Read a RetinaFace / SCRFD label file into ImageRecords with landmarks.

    Args:
        label_path: the label file.
        images_dir: folder of the images; None looks in the usual places (module doc).

    Returns:
        LoadResult(records in file order, report). Each record: boxes (N, 4) float32
        x1, y1, x2, y2 pixels, ignore (N,) (ignore regions, module doc), landmarks
        (N, 5, 2) float32 pixels, NaN where absent; name = the relpath, '/'-separated;
        line = its header's line. Bad lines and missing images are in the report.
    """
    blocks = parse_retinaface(label_path)
    shown = os.path.basename(label_path)
    report = LoadReport(label_path, "retinaface")
    folders = image_folders(label_path, images_dir)
    records, seen = [], {}
    for block in blocks:
        where = f"{shown}:{block.line}"
        if block.problem:
            report.problem(f"{where}: {block.problem}")
            continue
        if block.name in seen:
            report.problem(f"{where}: {shown_text(block.name)} is listed twice (first at line "
                           f"{seen[block.name]}); this block left out")
            continue
        seen[block.name] = block.line
        if escapes_folder(block.name):  # judged on the text: the outside file is never looked at
            report.problem(outside_message(where, block.name, folders[0] if folders else
                                           os.path.dirname(label_path)))
            continue
        path = next((p for p in (path_inside(f, block.name) for f in folders) if p), None)
        if path is None:
            report.problem(f"{where}: {shown_text(block.name)} not found", missing_image=True)
            continue
        size = block.size
        if size is None and block.faces:
            try:
                size = read_image_size(path)
            except ImageError as e:
                report.problem(f"{where}: {shown_text(block.name)}: {str(e).split(': ', 1)[-1]}")
                continue
        records.append(_record(path, block, size, shown, report))
    report.count(records)
    return LoadResult(records, report)


class _Block:
    """One `# relpath` header and its face lines as parsed: [(line, values), ...]."""

    def __init__(self, line: int, name: str, size, problem: Optional[str] = None):
        self.line, self.name, self.size, self.problem = line, name, size, problem
        self.faces: List[tuple] = []


def parse_retinaface(label_path: str) -> List[_Block]:
    """The file's blocks; a face line's values are floats, or the line's problem text."""
    try:
        with open(label_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{label_path}: label file not found") from None
    except OSError as e:
        raise AnnotationError(f"{label_path}: cannot read the file ({e.strerror})") from None
    text = decode_utf8(raw, label_path)
    blocks: List[_Block] = []
    orphans = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            header = _header(stripped)
            if header is None:
                blocks.append(_Block(number, "", None, "expected a header '# relpath' or "
                                     f"'# relpath W H' naming an image, got "
                                     f"{shown_text(repr(stripped), 80)}"))
            else:
                blocks.append(_Block(number, *header))
            continue
        if not blocks:
            orphans.append(number)
            continue
        blocks[-1].faces.append((number, _face_values(stripped)))
    if not any(b.name for b in blocks):
        raise AnnotationError(f"{label_path}:1: not a RetinaFace label file (no '# relpath' "
                              f"header line naming an image)")
    if orphans:
        blocks.insert(0, _Block(orphans[0], "", None,
                                f"{len(orphans)} face line(s) before the first '# relpath' header"))
    return blocks


def _header(line: str):
    """(relpath, (W, H) or None, problem or None) of a `# relpath[ W H]` line; None when the
    line names no image."""
    fields = line.lstrip("#").split()
    if not fields or not fields[0].lower().endswith(IMAGE_EXTENSIONS):
        return None
    name = fields[0].replace("\\", "/")
    if len(fields) == 1:
        return name, None, None
    size = None
    if len(fields) == 3 and _plain(fields[1]) and _plain(fields[2]):
        size = valid_size(float(fields[1]), float(fields[2]))
    if size is None:
        return name, None, (f"expected '# relpath W H' with W and H positive pixel sizes, "
                            f"got {shown_text(repr(line), 80)}")
    return name, size, None


def _plain(text: str) -> bool:
    """A plain ASCII number: float() also reads '1_0' as 10, '١' as 1, and 'nan'."""
    if not text.isascii() or "_" in text:
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _face_values(line: str):
    """A face line's numbers (a list of floats) or why it is no face line (a str)."""
    fields = line.split()
    if len(fields) not in (_BOX_ONLY, _WITH_POINTS):
        return f"expected {FACE_LINE}, got {len(fields)} values"
    if not all(_plain(v) for v in fields):
        return f"expected {FACE_LINE}, got {shown_text(repr(line), 80)}"
    return [float(v) for v in fields]


def _point_problem(values: list) -> Optional[str]:
    """Why a line's points cannot be used, or None."""
    for k in range(NUM_LANDMARKS):
        x, y = values[4 + 3 * k], values[5 + 3 * k]
        if (x, y) == (ABSENT, ABSENT):
            continue
        for key, value in (("x", x), ("y", y)):
            if abs(value) > MAX_COORDINATE:
                return (f"point {k + 1} l{key}={value:g} is beyond {MAX_COORDINATE:.0f} px "
                        f"(no image is that large)")
    return None


def _record(path: str, block: _Block, size, shown: str, report: LoadReport) -> ImageRecord:
    boxes, ignore, landmarks = [], [], []
    for number, values in block.faces:
        where = f"{shown}:{number}"
        if isinstance(values, str):
            report.problem(f"{where}: {values}")
            continue
        problem = box_problem(*values[:4], size) or (
            _point_problem(values) if len(values) > _BOX_ONLY else None)
        if problem:
            report.problem(f"{where}: {problem}")
            continue
        points = np.full((NUM_LANDMARKS, 2), np.nan, np.float64)
        if len(values) > _BOX_ONLY:
            xy = np.asarray(values[4:4 + 3 * NUM_LANDMARKS], np.float64).reshape(NUM_LANDMARKS, 3)[:, :2]
            present = ~(xy == ABSENT).all(axis=1)
            points[present] = xy[present]
        unscored = len(values) == _WITH_POINTS and values[-1] == ABSENT
        boxes.append(values[:4])
        ignore.append(bool(np.isnan(points).all() and unscored))
        landmarks.append(points)
    return ImageRecord(
        path=path, name=block.name,
        boxes=xywh_to_xyxy(np.asarray(boxes, np.float64).reshape(-1, 4)),  # pixel corners
        ignore=np.asarray(ignore, bool),
        landmarks=np.asarray(landmarks, np.float32).reshape(-1, NUM_LANDMARKS, 2),
        line=block.line,
    )
