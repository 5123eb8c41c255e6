"""Readers for the annotation formats people label their own photos in.

Each reader turns one format into the project's only record type, `ImageRecord`
(data/records.py), exactly as the WIDER reader does, so everything downstream (the
generator, statistics, conversion, evaluation) has one pipeline:

    data/formats/labelme.py   one labelme .json per image, rectangle shapes
    data/formats/yolo.py      one `class cx cy w h` .txt per image (normalised)
    data/formats/coco.py      one COCO .json (images, annotations, categories)
    data/formats/voc.py       one Pascal VOC .xml per image (annotations/ + images/)

Readers are forgiving in one precise way: a bad entry (malformed file, out-of-range
value, box of non-positive size, image missing on disk) is reported with its file and
field, counted in a `LoadReport`, and left out, while the rest of the dataset loads.
The report is emitted as one warning. Readers never write to the dataset folder.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional

from data.records import ImageRecord

# Messages a report keeps verbatim; the rest are only counted.
MAX_MESSAGES = 10


class AnnotationWarning(UserWarning):
    """Bad entries were left out of a dataset that otherwise loaded."""


@dataclass
class LoadReport:
    """What a reader found, beyond the records themselves.

    Attributes:
        source: the folder or file read.
        fmt: the format name ('labelme', 'yolo', 'coco', 'voc').
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
            warnings.warn(self.summary(), AnnotationWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside the `data` package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class LoadResult(NamedTuple):
    records: List[ImageRecord]
    report: LoadReport


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
