"""Readers for the annotation formats people label their own photos in.

Each reader turns one format into the project's only record type, `ImageRecord`
(data/records.py), exactly as the WIDER reader does, so everything downstream (the
generator, statistics, conversion, evaluation) has one pipeline:

    data/formats/labelme.py   one labelme .json per image, rectangle shapes
    data/formats/yolo.py      one `class cx cy w h` .txt per image (normalised)
    data/formats/coco.py      one COCO .json (images, annotations, categories)
    data/formats/voc.py       one Pascal VOC .xml per image (annotations/ + images/)
    data/formats/retinaface.py  one RetinaFace / SCRFD label.txt (`# relpath`, box + 5 points)

Readers are forgiving in one precise way: a bad entry (malformed file, out-of-range
value, box of non-positive size, image missing on disk) is reported with its file and
field, counted in a `LoadReport`, and left out, while the rest of the dataset loads.
The report is emitted as one warning. Readers never write to the dataset folder.

Every box a reader keeps is sane (`box_problem`): finite, within MAX_COORDINATE pixels,
and overlapping its image when the image size is known. A box only partly outside its
image is kept as it is; the data generator clips it, as it does WIDER boxes. Each reader
turns its format's boxes into the project's one working format, pixel corners x1, y1,
x2, y2 (data/boxes.py), once, as it reads them.
Image paths an annotation names must resolve inside the dataset's image folder
(`escapes_folder`, `path_inside`): an absolute or `..` path (`/etc/passwd`,
`../../x.jpg`), or a symlink leading out, is refused with its file and entry, counted,
and never opened, so no reader (nor convert.py after it) reads, links or copies a file
outside the dataset.
JSON files are parsed by `load_json`, which turns what Python's json module raises on
hostile input (deep nesting, integers of thousands of digits) into one-line errors.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

from data.records import ImageRecord
from common.errors import AnnotationError

# Messages a report keeps verbatim; the rest are only counted.
MAX_MESSAGES = 10
# Pixel coordinates beyond this belong to no photo (JPEG stops at 65,535 px): a value past
# it is a typo or corruption, not a face. It also keeps boxes far inside float32's range,
# so a box that passes converts to finite float32 values.
MAX_COORDINATE = 100_000.0
# Boxes narrower or lower than this (pixels) are no face, and collapse to zero size in
# float32 corners (the spacing of float32 at MAX_COORDINATE is 0.0078 px): convert.py
# would write them with width 0. A hundredth of a pixel stays above that spacing.
MIN_BOX_SIZE = 0.01
# Integers longer than this (2**64 has 20 digits) are no id or pixel value: `load_json` reads
# them as floats (inf beyond 1e308), so value checks report them instead of int() failing
# past 4,300 digits or float() overflowing later.
_MAX_INT_DIGITS = 20


class AnnotationWarning(UserWarning):
    """Bad entries were left out of a dataset that otherwise loaded."""


@dataclass
class LoadReport:
    """What a reader found, beyond the records themselves.

    Attributes:
        source: the folder or file read.
        fmt: the format name ('labelme', 'yolo', 'coco', 'voc', 'retinaface').
        images: records produced.
        faces: boxes kept (ignored ones included).
        ignored: boxes kept with ignore=True (COCO crowd, labelme `ignore` flag, VOC
            `difficult`).
        problems: bad entries left out (malformed files, bad values, missing images).
        missing_images: the part of `problems` that are annotations whose image is missing.
        skipped_shapes: shapes of a kind the reader does not use (labelme polygons...).
        filtered: boxes whose label or class the label filter rejected.
        unlabelled: images in the folder without an annotation file (labelme, VOC: not used;
            YOLO: used as background, the YOLO convention).
        messages: the first MAX_MESSAGES problems, one line each, `file:line: what`.
    """

    source: str
    fmt: str
    images: int = 0
    faces: int = 0
    ignored: int = 0
    problems: int = 0
    missing_images: int = 0
    skipped_shapes: int = 0
    filtered: int = 0
    unlabelled: int = 0
    messages: List[str] = field(default_factory=list)

    def problem(self, message: str, missing_image: bool = False) -> None:
        """Count a bad entry (left out) and keep its one-line message if there is room."""
        self.problems += 1
        self.missing_images += int(missing_image)
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)

    def count(self, records: List[ImageRecord]) -> None:
        """Set the image and face totals from the records produced."""
        self.images = len(records)
        self.faces = sum(len(r.boxes) for r in records)
        self.ignored = sum(int(r.ignore.sum()) for r in records)

    @property
    def notable(self) -> bool:
        """Whether anything was left out or treated specially, i.e. worth a warning."""
        return bool(self.problems or self.skipped_shapes or self.unlabelled)

    def summary(self) -> str:
        """First line: totals and what was left out; then the kept messages, indented."""
        parts = [f"{self.source} ({self.fmt}): {self.images} images, {self.faces} faces"
                 + (f" ({self.ignored} ignored)" if self.ignored else "")]
        if self.problems:
            bad = self.problems - self.missing_images
            detail = ", ".join(
                f"{n} {text}"
                for n, text in ((self.missing_images, "missing image"), (bad, "bad annotation"))
                if n
            )
            parts.append(f"{self.problems} problems left out ({detail})")
        if self.skipped_shapes:
            parts.append(f"{self.skipped_shapes} non-rectangle shapes skipped")
        if self.filtered:
            parts.append(f"{self.filtered} boxes of other labels skipped")
        if self.unlabelled:
            what = "used as background" if self.fmt == "yolo" else "not used"
            parts.append(f"{self.unlabelled} images without annotation file ({what})")
        lines = ["; ".join(parts)]
        lines.extend(f"  {m}" for m in self.messages)
        if self.problems > len(self.messages):
            lines.append(f"  ... and {self.problems - len(self.messages)} more")
        return "\n".join(lines)

    def emit(self) -> None:
        """Emit the summary as one AnnotationWarning when something was left out.

        The warning is attributed to the first caller outside the `data` package (e.g. the
        training code asking for records), not to the reader's internals.
        """
        if self.notable:
            warnings.warn(self.summary(), AnnotationWarning, stacklevel=caller_level())


def caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside the `data` package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class LoadResult(NamedTuple):
    records: List[ImageRecord]
    report: LoadReport


def is_number(value) -> bool:
    """A JSON number (int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(v: float) -> str:
    return f"{v:g}"


def box_problem(x: float, y: float, w: float, h: float,
                size: Optional[Tuple[float, float]] = None) -> Optional[str]:
    """Why an xywh pixel box of positive size cannot be used, or None if it is sane.

    Sane: every value finite and within MAX_COORDINATE px, w and h at least MIN_BOX_SIZE, and, when the image `size`
    (width, height) is known, the box overlaps the image (a box wholly outside it is no
    face of that image; one partly outside is clipped later).
    """
    for key, value in (("x", x), ("y", y), ("w", w), ("h", h)):
        if not math.isfinite(value):
            return f"{key}={value} is not a finite number"
        if abs(value) > MAX_COORDINATE:
            return (f"{key}={_number(value)} is beyond {MAX_COORDINATE:.0f} px "
                    f"(no image is that large)")
    for key, value in (("w", w), ("h", h)):
        if value < MIN_BOX_SIZE:
            return f"{key}={_number(value)} px is under {MIN_BOX_SIZE:g} px (no face is that small)"
    if size is not None:
        width, height = size
        if x + w <= 0 or y + h <= 0 or x >= width or y >= height:
            return (f"box x={_number(x)} y={_number(y)} w={_number(w)} h={_number(h)} lies wholly "
                    f"outside the {_number(width)}x{_number(height)} image")
    return None


def valid_size(width, height) -> Optional[Tuple[float, float]]:
    """(width, height) when both are numbers in (0, MAX_COORDINATE], else None."""
    if not (is_number(width) and is_number(height)):
        return None
    if not (0 < width <= MAX_COORDINATE and 0 < height <= MAX_COORDINATE):
        return None  # also rejects NaN
    return float(width), float(height)


def _parse_int(text: str):
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else float(text)


def decode_utf8(raw: bytes, shown: str) -> str:
    """An annotation file's bytes as text (UTF-8, a BOM dropped); AnnotationError
    `SHOWN:LINE: not UTF-8 text (byte 0xNN)` naming the first bad byte's line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise AnnotationError(f"{shown}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None


def load_json(path: str, shown: Optional[str] = None):
    """The parsed JSON of `path`; AnnotationError `SHOWN[:LINE]: why` if it cannot be read.

    `shown` is the file's name in messages (default `path`). Besides invalid JSON and
    non-UTF-8 text, this rejects nesting deeper than Python's recursion limit (json's
    RecursionError); huge integers become floats (see _MAX_INT_DIGITS). NaN / Infinity
    literals are kept: readers report them per entry as not finite.
    """
    shown = shown or path
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise  # the caller knows what kind of file is missing (COCO: a DatasetError)
    except OSError as e:
        raise AnnotationError(f"{shown}: cannot read the file ({e.strerror})") from None
    text = decode_utf8(raw, shown)
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{shown}:{e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise AnnotationError(
            f"{shown}: not usable JSON (nested deeper than {sys.getrecursionlimit()} levels)"
        ) from None


def shown_text(value, limit: int = 60) -> str:
    """A string from a file fit for a one-line message: as it is when printable, else its
    repr (newlines and control characters escaped); cut at `limit` characters."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def lies_inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (give both as real paths)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives (Windows), or one path relative and one absolute
        return False


def escapes_folder(name: str) -> bool:
    """Whether an image name from an annotation file leaves the folder it is relative to,
    judged from its text alone (no file-system access): absolute (`/etc/passwd`, `C:/x`,
    `\\\\server\\x`) or climbing out with `..` (`../../etc/passwd`, `a/../../b.jpg`)."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return True
    depth = 0
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def path_inside(folder: str, name: str) -> Optional[str]:
    """`folder/name` when it is an existing file whose real path (symlinks followed)
    lies inside `folder`'s, else None. `name` must not escape (`escapes_folder`); check
    that first, so an outside path is never even looked at."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    if not lies_inside(os.path.realpath(path), os.path.realpath(folder)):
        return None
    return path


def outside_message(where: str, name: str, folder: str) -> str:
    """The problem line of an image name that leads outside the image folder."""
    return (f"{where}: {shown_text(name)} lies outside the image folder {folder}; "
            f"refused (image paths must stay inside the dataset)")


def display_path(path: str, root: str) -> str:
    """`path` relative to the dataset `root` when inside it (messages stay short)."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


def record_name(image_path: str, root: str) -> str:
    """An image's name inside its dataset: its path below `root`, '/'-separated.

    Images outside `root` (a labelme imagePath like ../photos/a.jpg) keep their base name.
    """
    rel = os.path.relpath(image_path, root)
    if rel.startswith(".."):
        rel = os.path.basename(image_path)
    return rel.replace(os.sep, "/")


def parse_label_filter(labels) -> Optional[frozenset]:
    """None (accept all) or a set of label strings, from None, '', 'a,b' or an iterable."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = labels.split(",")
    chosen = frozenset(str(x).strip() for x in labels if str(x).strip())
    return chosen or None
