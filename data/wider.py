"""WIDER FACE: the official layout, the `wider_face_*_bbx_gt.txt` reader and writer.

The annotation format repeats one block per image:

    0--Parade/0_Parade_marchingband_1_465.jpg       <- image path, relative to WIDER_*/images
    126                                              <- number of face lines that follow
    345 211 4 4 2 0 0 0 2 0                          <- x y w h blur expression illumination
    ...                                                 invalid occlusion pose (pixels, flags)

Quirks of the real files, all handled here:
- an image without faces is written `0` followed by the dummy line `0 0 0 0 0 0 0 0 0 0`
  (train file); the dummy line is consumed, it is not a face;
- a few faces have w or h <= 0 (the val file lists 11, among them 4 images whose only
  "face" is the all-zero dummy line under a count of 1): they, and any box under
  MIN_BOX_SIZE (0.01 px, which float32 corners would turn into size 0), are dropped, counted in
  `WiderAnnotations.dropped_boxes` (their lines in `dropped_lines`) and shown in one
  AnnotationWarning naming the file, the count and the first lines;
- CRLF line ends, trailing spaces, blank trailing lines.

Anything else that is not the official format raises AnnotationError `FILE:LINE: ...`:
a file listing no image at all, a face count or numbers that are not plain ASCII
decimals (Python would read '1_0' as 10), non-finite values, attribute flags outside their
official ranges (ATTRIBUTE_MAX: blur 0-2, expression 0-1, illumination 0-1, invalid 0-1,
occlusion 0-2, pose 0-1, integers), x / y / w / h beyond +-MAX_COORDINATE px (absurd for
any photo; this also keeps float32 conversion finite), and a kept box lying wholly left
of or above the image (x + w <= 0 or y + h <= 0). A box partly outside (x < 0 < x + w)
is kept: converted custom sets may hold such boxes.

`load_wider_split` (training, conversion) also reads each image's header and drops, with
one warning naming the lines, boxes wholly right of or below their image, and refuses an
image that resolves (through a symlink) outside the images folder.
Clipping to the image and the minimum-face-size ignore rule need the image size, so they
happen later, in the data generator; records hold the file's boxes unclipped, turned
into the project's corners (x1 = x, x2 = x + w; `data.boxes`) and nothing else. (Reading
3,226 image headers to check right / bottom borders would double the reader's time, and
the reader must work without the images, e.g. for evaluation ground truth.)
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from data.boxes import xywh_to_xyxy, xyxy_to_xywh
from data.formats import (
    MAX_COORDINATE,
    MIN_BOX_SIZE,
    AnnotationWarning,
    box_problem,
    caller_level,
    decode_utf8,
    escapes_folder,
    lies_inside,
)
from data.image import IMAGE_EXTENSIONS, read_image_size
from data.landmark_files import attach_landmark_files
from data.records import ImageRecord
from common.errors import AnnotationError, ConfigError, DatasetError, ImageError
from common.files import atomic_write_text

SPLITS = ("train", "val", "test")
# Columns of a face line after x y w h; `invalid` is the one that makes a face ignored.
ATTRIBUTE_NAMES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
INVALID = ATTRIBUTE_NAMES.index("invalid")
# The official range of each attribute flag is 0..max (WIDER FACE readme).
ATTRIBUTE_MAX = (2, 1, 1, 1, 2, 1)
_COLUMNS = ("x", "y", "w", "h") + ATTRIBUTE_NAMES
_ATTRIBUTE_MAX = np.asarray(ATTRIBUTE_MAX, np.float64)
FACE_LINE = "10 numbers 'x y w h blur expression illumination invalid occlusion pose'"
DUMMY_LINE = "0 0 0 0 0 0 0 0 0 0"
_NUMBERS_PER_LINE = 10
_MAX_SHOWN = 80  # characters of an offending line quoted in an error
_SHOWN_LINES = 5  # line numbers of dropped boxes quoted in the warning


@dataclass
class WiderAnnotations:
    """The records of one annotation file.

    Attributes:
        records: one ImageRecord per listed image, in file order. boxes (N, 4) float32
            x1, y1, x2, y2 pixels (the file's x y w h turned into corners), ignore (N,)
            bool = the `invalid` flag, attributes (N, 6) int32 (blur, expression,
            illumination, invalid, occlusion, pose).
        dropped_boxes: face lines of the whole file with w or h under MIN_BOX_SIZE (<= 0
            included), not in `records`.
        source: the annotation file read.
        skipped_images: listed images left out because they are missing on disk.
        dropped_lines: the 1-based lines of the dropped boxes, in file order.
        landmark_matches: one `data.landmark_files.LandmarkMatch` per landmark file found
            beside the split (what its points were attached to); empty when none.
    """

    records: list = field(default_factory=list)
    dropped_boxes: int = 0
    source: str = ""
    skipped_images: int = 0
    dropped_lines: list = field(default_factory=list)
    landmark_matches: list = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.records)

    @property
    def num_boxes(self) -> int:
        """Boxes kept in the records (ignored faces included)."""
        return sum(len(r.boxes) for r in self.records)

    @property
    def num_ignored(self) -> int:
        """Boxes flagged `invalid`, kept so that training neither learns nor penalises them."""
        return sum(int(r.ignore.sum()) for r in self.records)

    @property
    def num_faces(self) -> int:
        """Faces to learn: kept boxes not ignored (as `ImageRecord.num_faces`)."""
        return self.num_boxes - self.num_ignored

    @property
    def num_listed(self) -> int:
        """Face lines the file lists: kept boxes plus dropped ones."""
        return self.num_boxes + self.dropped_boxes


def wider_split_paths(root: str, split: str) -> tuple:
    """(images dir, annotation file) of a split in the official layout under `root`.

    train / val: `root/WIDER_{split}/images`, `root/wider_face_split/wider_face_{split}_bbx_gt.txt`;
    test: `root/WIDER_test/images`, `root/wider_face_split/wider_face_test_filelist.txt`.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: must be one of {', '.join(SPLITS)}")
    images_dir = os.path.join(root, f"WIDER_{split}", "images")
    name = "wider_face_test_filelist.txt" if split == "test" else f"wider_face_{split}_bbx_gt.txt"
    return images_dir, os.path.join(root, "wider_face_split", name)


def _read_lines(path: str) -> list:
    """The file's lines without line ends (LF or CRLF), trailing blank lines removed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, expected an annotation file") from None
    lines = decode_utf8(data, path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _error(path: str, line: int, expected: str, got) -> AnnotationError:
    """AnnotationError `FILE:LINE: expected ..., got '...'` (got=None: end of file)."""
    if got is None:
        shown = "end of file"
    else:
        got = got.strip()
        shown = repr(got if len(got) <= _MAX_SHOWN else got[:_MAX_SHOWN] + "...")
    return AnnotationError(f"{path}:{line}: expected {expected}, got {shown}")


def _is_image_path(line: str) -> bool:
    return line.lower().endswith(IMAGE_EXTENSIONS)


def read_wider_annotations(path: str, images_dir: str) -> WiderAnnotations:
    """Parse a `wider_face_{train,val}_bbx_gt.txt` file into ImageRecords.

    Record paths are `os.path.join(images_dir, name)`; `line` is the 1-based line of the
    image's path line. Any malformed block raises AnnotationError naming file and line
    (module doc). Boxes with w or h under MIN_BOX_SIZE are dropped and shown in one AnnotationWarning.
    The face lines are parsed and checked in a few numpy operations, so the full val file
    (46k lines) takes a fraction of a second.
    """
    lines = _read_lines(path)
    names, path_lines, starts, counts = _image_blocks(path, lines)
    face_lines = []
    for start, count in zip(starts, counts):
        face_lines.extend(lines[start:start + count])
    values = _parse_face_lines(path, face_lines, names, starts, counts)
    # Sizes under MIN_BOX_SIZE (0 and negative ones included) are no face: dropped, counted.
    keep = (values[:, 2] >= MIN_BOX_SIZE) & (values[:, 3] >= MIN_BOX_SIZE)
    _check_values(path, values, keep, face_lines, names, starts, counts)
    records = _records(values, keep, names, path_lines, counts, images_dir)
    dropped = np.flatnonzero(~keep)
    dropped_lines = [] if not len(dropped) else _line_numbers(dropped, starts, counts).tolist()
    if dropped_lines:
        _warn_dropped(path, dropped_lines)
    return WiderAnnotations(records, dropped_boxes=len(dropped), source=path,
                            dropped_lines=dropped_lines)


def _image_blocks(path: str, lines: list) -> tuple:
    """Walk the file's image blocks, skipping their face lines (parsed in bulk later):
    (names, path_lines (1-based), starts (0-based index of each block's first face line),
    counts (face lines per block)). AnnotationError naming the line of a malformed block."""
    n = len(lines)
    names, path_lines, starts, counts = [], [], [], []
    first_line = {}  # image name -> the line of its block, to refuse a second block
    i = 0
    while i < n:
        name = lines[i].strip()
        if not name:  # tolerate blank lines between blocks
            i += 1
            continue
        if not _is_image_path(name):
            expected = "an image path like '0--Parade/0_Parade_Parade_0_194.jpg'"
            if names and len(name.split()) == _NUMBERS_PER_LINE:
                expected = f"an image path after the {counts[-1]} face lines of {names[-1]}"
            raise _error(path, i + 1, expected, name)
        if escapes_folder(name):  # never joined to images_dir: the outside file is not read
            raise _error(path, i + 1, "an image path inside the images folder (no absolute or "
                         "'..' path)", name)
        if name in first_line:
            raise _error(path, i + 1, f"a new image path ({name} is listed twice: its first "
                         f"block starts at line {first_line[name]})", name)
        first_line[name] = i + 1
        names.append(name)
        path_lines.append(i + 1)
        i += 1
        if i >= n:
            raise _error(path, i + 1, f"the face count of {name}", None)
        text = lines[i].strip()
        # ASCII digits only: int() would take '1_0', '+3' or '١'; 18 digits bound int().
        count = int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1
        if count < 0:
            raise _error(path, i + 1, f"the face count of {name} (an integer >= 0)", lines[i])
        i += 1
        if count == 0 and i < n and lines[i].split() == DUMMY_LINE.split():
            i += 1  # the official `0` + dummy-line form of an image without faces
        elif i + count > n:
            raise _error(path, n + 1, f"{count} face lines for {name} (line {i - 1}; {n - i} found)", None)
        starts.append(i)
        counts.append(count)
        i += count
    if not names:
        raise _error(path, 1, "an image path like '0--Parade/0_Parade_Parade_0_194.jpg' "
                     "(the file lists no images)", None)
    return names, path_lines, starts, counts


def _records(values: np.ndarray, keep: np.ndarray, names: list, path_lines: list,
             counts: list, images_dir: str) -> list:
    """One ImageRecord per image block from the parsed (F, 10) face values (x y w h and
    the six attributes) and the (F,) mask of faces kept; boxes become corners here, once."""
    owner = np.repeat(np.arange(len(names)), np.asarray(counts, np.int64))
    boxes = xywh_to_xyxy(values[keep, :4])  # the file's xywh -> corners, once, here
    attributes = values[keep, 4:].astype(np.int32)
    ends = np.cumsum(np.bincount(owner[keep], minlength=len(names)))
    records, begin = [], 0
    for k, name in enumerate(names):
        end = int(ends[k])
        attrs = attributes[begin:end]
        records.append(ImageRecord(
            path=os.path.join(images_dir, name),
            name=name,
            boxes=boxes[begin:end],
            ignore=attrs[:, INVALID] != 0,
            attributes=attrs,
            line=path_lines[k],
        ))
        begin = end
    return records


def _warn_dropped(path: str, dropped_lines: list) -> None:
    """One AnnotationWarning naming the first face lines left out for a size under
    MIN_BOX_SIZE."""
    shown = ", ".join(map(str, dropped_lines[:_SHOWN_LINES]))
    extra = len(dropped_lines) - _SHOWN_LINES
    more = f" and {extra} more" if extra > 0 else ""
    lines_word = "lines" if len(dropped_lines) > 1 else "line"
    warnings.warn(
        f"{path}: {len(dropped_lines)} face {lines_word} with w or h under "
        f"{MIN_BOX_SIZE:g} px left out "
        f"({lines_word} {shown}{more})",
        AnnotationWarning, stacklevel=caller_level(),
    )


def _line_numbers(faces: np.ndarray, starts, counts) -> np.ndarray:
    """1-based file lines of face lines given by their flat indices."""
    ends = np.cumsum(counts)
    blocks = np.searchsorted(ends, faces, side="right")
    first_face = ends[blocks] - np.asarray(counts)[blocks]  # flat index of each block's first face
    return np.asarray(starts, np.int64)[blocks] + faces - first_face + 1


def _face_error(path, bad: int, what: str, face_lines, names, starts, counts) -> AnnotationError:
    """The AnnotationError of face line `bad` (flat index): its file line, block and text."""
    ends = np.cumsum(counts)
    block = int(np.searchsorted(ends, bad, side="right"))
    within = bad - (int(ends[block]) - counts[block])
    expected = f"{what} (face {within + 1} of {counts[block]} of {names[block]})"
    return _error(path, starts[block] + within + 1, expected, face_lines[bad])


def _parse_face_lines(path, face_lines, names, starts, counts) -> np.ndarray:
    """(M, 10) float64 values of all face lines; AnnotationError at the first bad one."""
    if not face_lines:
        return np.zeros((0, _NUMBERS_PER_LINE), np.float64)
    bad = None
    widths = np.fromiter(map(len, map(str.split, face_lines)), np.int64, len(face_lines))
    wrong = np.flatnonzero(widths != _NUMBERS_PER_LINE)
    if len(wrong):
        bad = int(wrong[0])
    else:
        joined = " ".join(face_lines)
        values = None
        # numpy's conversion, like float(), reads '1_0' as 10 and non-ASCII digits; plain
        # ASCII decimals only (two C-speed scans of the text).
        if joined.isascii() and "_" not in joined:
            try:
                values = np.array(joined.split(), dtype=np.float64)
            except ValueError:
                pass
        if values is not None and np.isfinite(values).all():
            return values.reshape(-1, _NUMBERS_PER_LINE)
        bad = _first_non_numeric(face_lines)
    raise _face_error(path, bad, FACE_LINE, face_lines, names, starts, counts)


def _first_non_numeric(face_lines) -> int:
    """Index of the first line with a token the bulk conversion rejected (or inf / nan)."""
    for k, line in enumerate(face_lines):
        if not line.isascii() or "_" in line:
            return k
        try:
            if not np.isfinite(np.array(line.split(), dtype=np.float64)).all():
                return k
        except ValueError:
            return k
    raise AssertionError("the bulk conversion failed but every line converts")  # unreachable


def _check_values(path, values: np.ndarray, keep: np.ndarray, face_lines, names, starts,
                  counts) -> None:
    """AnnotationError at the first face line whose values are out of range (module doc)."""
    if not len(values):
        return
    # Fast path, the official files: values within +-MAX_COORDINATE, x, y and flags >= 0 (so
    # no kept box lies left of or above the image), integer flags in range. About 1 ms for
    # the val file (whole-array reductions are the fast ones).
    attributes = values[:, 4:]
    low = values.min()
    if (low >= -MAX_COORDINATE and values.max() <= MAX_COORDINATE
            and (low >= 0 or (values[:, :2].min() >= 0 and attributes.min() >= 0))
            and not (attributes > _ATTRIBUTE_MAX).any()
            and np.array_equal(np.floor(attributes), attributes)):
        return
    absurd = np.abs(values[:, :4]) > MAX_COORDINATE
    flags = ((attributes < 0) | (attributes > _ATTRIBUTE_MAX)
             | (attributes != np.floor(attributes)))
    x, y, w, h = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    outside = keep & ((x + w <= 0) | (y + h <= 0))
    bad = absurd.any(axis=1) | flags.any(axis=1) | outside
    if not bad.any():
        return
    k = int(np.argmax(bad))
    if absurd[k].any():
        column = int(np.argmax(absurd[k]))
        what = (f"{_COLUMNS[column]} (column {column + 1}) within +-{MAX_COORDINATE:.0f} px "
                f"(no image is that large)")
    elif flags[k].any():
        column = int(np.argmax(flags[k]))
        what = (f"{ATTRIBUTE_NAMES[column]} (column {column + 5}) an integer "
                f"0-{ATTRIBUTE_MAX[column]}")
    else:
        what = "a box reaching into the image (x + w > 0 and y + h > 0)"
    raise _face_error(path, k, what, face_lines, names, starts, counts)


def read_wider_test_filelist(path: str, images_dir: str) -> list:
    """Records (no boxes, attributes None) of `wider_face_test_filelist.txt`, one path a line."""
    records = []
    for i, line in enumerate(_read_lines(path)):
        name = line.strip().lstrip("/")
        if not name:
            continue
        if not _is_image_path(name):
            raise _error(path, i + 1, "an image path like '0--Parade/0_Parade_marchingband_1_737.jpg'", line)
        if escapes_folder(name):
            raise _error(path, i + 1, "an image path inside the images folder (no '..' path)", line)
        records.append(ImageRecord(path=os.path.join(images_dir, name), name=name, line=i + 1))
    if not records:
        raise _error(path, 1, "an image path like '0--Parade/0_Parade_marchingband_1_737.jpg' "
                     "(the file lists no images)", None)
    return records


def _start_text(value) -> str:
    """A box's x or y: an integer as an integer, else the shortest decimal that reads back
    to the same float32."""
    value = np.float32(value)
    if float(value).is_integer():
        return str(int(value))
    return np.format_float_positional(value, unique=True, trim="-")


def _size_text(start_text: str, end) -> str:
    """A box's w or h, from its corners: the shortest decimal that the reader, adding it to
    the written start (x + w in float64, then float32: `xywh_to_xyxy`), turns back into
    exactly `end`, so a written box reads back to the same corners."""
    start, end = float(start_text), np.float32(end)
    exact = float(end) - start

    def text(digits: int) -> str:
        return np.format_float_positional(exact, precision=digits, unique=False,
                                          fractional=False, trim="-")

    def fits(digits: int) -> bool:
        return np.float32(start + float(text(digits))) == end

    # Start from the digits float32's spacing at `end` asks for (a few format calls
    # instead of up to 17), then go down while a shorter decimal still reads back (a COCO
    # width 77.71), or up until one does.
    spacing = float(np.spacing(end))
    digits = math.floor(math.log10(max(abs(exact), spacing))) - math.floor(math.log10(spacing))
    digits = min(max(digits, 1), 17)
    if fits(digits):
        while digits > 1 and fits(digits - 1):
            digits -= 1
        return text(digits)
    while digits < 17:
        digits += 1
        if fits(digits):
            return text(digits)
    return repr(exact)


def _xywh_texts(box: np.ndarray) -> list:
    """The x y w h numbers of a fractional corner box (module doc of the writer)."""
    x, y = _start_text(box[0]), _start_text(box[1])
    return [x, y, _size_text(x, box[2]), _size_text(y, box[3])]


def write_wider_annotations(records: Iterable[ImageRecord], path: str) -> None:
    """Write records in the official `wider_face_*_bbx_gt.txt` format, atomically.

    Boxes (the records' corners) are written as the format's x y w h: integer values as
    integers (the official files hold only those); fractional x, y as the shortest
    decimal that reads back to the same float32, and w, h as the shortest decimal that the
    reader turns back into the same x2, y2, so `read_wider_annotations(write(x))` gives
    back the same boxes exactly, whatever they are (third-party readers that call int()
    on WIDER numbers need integer boxes).
    Attributes come from `record.attributes` (0 where it is None) with the invalid column
    taken from `record.ignore`, so ignored faces read back as ignored. An image without
    faces is written `0` plus the dummy line, as the official train file does.
    """
    out = []
    for record in records:
        name = record.name
        if "\n" in name or "\r" in name or not _is_image_path(name.strip()):
            raise AnnotationError(f"{path}: cannot write record {name!r}: its name must be an image path")
        boxes = np.asarray(record.boxes, np.float32).reshape(-1, 4)
        count = len(boxes)
        if record.attributes is None:
            attributes = np.zeros((count, len(ATTRIBUTE_NAMES)), np.int64)
        else:
            attributes = np.asarray(record.attributes, np.int64).reshape(-1, len(ATTRIBUTE_NAMES)).copy()
            if len(attributes) != count:
                raise AnnotationError(
                    f"{path}: cannot write record {name!r}: {count} boxes but {len(attributes)} attribute rows"
                )
        attributes[:, INVALID] = record.ignore.astype(np.int64)
        out.append(name.strip())
        out.append(str(count))
        if count == 0:
            out.append(DUMMY_LINE)
            continue
        integer = bool(np.all(boxes == np.round(boxes)))
        xywh = xyxy_to_xywh(boxes)  # exact for integer corners
        for box, box_xywh, attrs in zip(boxes, xywh, attributes):
            numbers = [str(int(v)) for v in box_xywh] if integer else _xywh_texts(box)
            out.append(" ".join(numbers + [str(int(a)) for a in attrs]))
    atomic_write_text(path, "\n".join(out) + "\n")


def find_missing_images(records: Sequence[ImageRecord]) -> list:
    """The records whose image file does not exist."""
    return [r for r in records if not os.path.isfile(r.path)]


def check_images(records: Sequence[ImageRecord], skip_missing: bool, source: str) -> list:
    """The records whose image exists; missing ones raise DatasetError, or warn and are left out.

    `skip_missing` is Config.skip_missing_images (flag --skip-missing-images).
    """
    missing = find_missing_images(records)
    if not missing:
        return list(records)
    examples = ", ".join(r.path for r in missing[:3])
    if not skip_missing:
        raise DatasetError(
            f"{source}: {len(missing)} of {len(records)} listed images are missing, e.g. {examples} "
            f"(set skip_missing_images=True to train without them)"
        )
    warnings.warn(
        f"{source}: skipping {len(missing)} of {len(records)} listed images that are missing, "
        f"e.g. {examples}",
        stacklevel=2,
    )
    gone = {id(r) for r in missing}
    return [r for r in records if id(r) not in gone]


def load_wider_split(root: str, split: str, skip_missing: bool = False) -> WiderAnnotations:
    """Read a split of the official layout under `root` and check its images exist.

    Points of a known landmark file in `root` (data/landmark_files.py: the SCUT set's
    retinaface_labels.txt, Caltech's WebFaces_GroundThruth.txt) are attached to the
    records' boxes (`ImageRecord.landmarks`, `mouth_centres`), counted in
    `landmark_matches`.

    Raises DatasetError when the layout is missing (saying how to get it) or when listed
    images are missing and `skip_missing` is False.
    """
    images_dir, annotation_path = wider_split_paths(root, split)
    for needed in (annotation_path, images_dir):
        if not os.path.exists(needed):
            raise DatasetError(
                f"{needed}: not found, the WIDER FACE {split} split is not under {root}; "
                f"run `python tools/download.py --root {root}` to fetch it, "
                f"or train on the demo data with `python train.py --demo`"
            )
    if split == "test":
        annotations = WiderAnnotations(read_wider_test_filelist(annotation_path, images_dir),
                                       source=annotation_path)
    else:
        annotations = read_wider_annotations(annotation_path, images_dir)
        # Before any box is dropped: a landmark file lists the boxes as the WIDER file does.
        annotations.landmark_matches = attach_landmark_files(annotations.records, root)
    refuse_outside_images(annotations.records, images_dir, annotation_path)
    listed = len(annotations.records)
    annotations.records = check_images(annotations.records, skip_missing, annotation_path)
    annotations.skipped_images = listed - len(annotations.records)
    if split != "test":
        drop_boxes_outside_images(annotations)
    return annotations


def refuse_outside_images(records: Sequence[ImageRecord], images_dir: str, source: str) -> None:
    """DatasetError `SOURCE:LINE: ...` for the first record whose image, symlinks followed,
    resolves outside `images_dir`: the reader refuses outside names by their text already;
    this catches a link inside the folder that leads out. Nothing is opened."""
    root = os.path.realpath(images_dir)
    for record in records:
        real = os.path.realpath(record.path)
        if not lies_inside(real, root):
            raise DatasetError(
                f"{source}:{record.line}: {record.name} resolves to {real}, outside the "
                f"images folder {images_dir}; refused (image paths must stay inside the dataset)")


def drop_boxes_outside_images(annotations: WiderAnnotations) -> None:
    """Drop the boxes lying wholly right of or below their image (the reader, which reads
    no image, refuses those left of or above it), counted in `dropped_boxes` /
    `dropped_lines` and shown in one AnnotationWarning naming the file and lines.

    Sizes come from the image headers (microseconds a JPEG / PNG); an image whose header
    cannot be read is left for the decoder to report, with its boxes as they are.
    """
    dropped = set(annotations.dropped_lines)
    bad_lines, messages = [], []
    for record in annotations.records:
        if not len(record.boxes):
            continue
        try:
            size = read_image_size(record.path)
        except ImageError:
            continue
        boxes = record.boxes.astype(np.float64)
        keep = (boxes[:, 0] < size[0]) & (boxes[:, 1] < size[1])
        if not keep.all():
            lines = _face_lines_of(record, dropped)
            for k in np.flatnonzero(~keep):
                x1, y1, x2, y2 = boxes[k]
                bad_lines.append(lines[k])
                messages.append(f"line {lines[k]}: {box_problem(x1, y1, x2 - x1, y2 - y1, size)}")
            record.select(keep)
    if not bad_lines:
        return
    annotations.dropped_boxes += len(bad_lines)
    annotations.dropped_lines = sorted(annotations.dropped_lines + bad_lines)
    extra = len(messages) - _SHOWN_LINES
    more = f"; and {extra} more" if extra > 0 else ""
    word = "boxes" if len(bad_lines) > 1 else "box"
    warnings.warn(
        f"{annotations.source}: {len(bad_lines)} face {word} wholly outside the image left "
        f"out ({'; '.join(messages[:_SHOWN_LINES])}{more})",
        AnnotationWarning, stacklevel=caller_level(),
    )


def _face_lines_of(record: ImageRecord, dropped: set) -> list:
    """The file lines of a record's kept boxes: the lines after its count line, skipping
    the lines of boxes the reader dropped."""
    lines, line = [], record.line + 2
    while len(lines) < len(record.boxes):
        if line not in dropped:
            lines.append(line)
        line += 1
    return lines
