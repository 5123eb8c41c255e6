"""Landmark files beside a WIDER-layout set: points attached to the boxes the WIDER file has.

A set in the WIDER layout holds its boxes and ignore regions in
`wider_face_split/wider_face_*_bbx_gt.txt`; some also ship points for those faces in a
file of their own beside `wider_face_split/`. `load_wider_split` (data/wider.py) looks
for these known files in the set's root and attaches what they hold:

    retinaface_labels.txt      RetinaFace / SCRFD labels (data/formats/retinaface.py):
                               five points a face (the shared SCUT set: YuNet's points)
    WebFaces_GroundThruth.txt  Caltech WebFaces' own file: `picNNNNN.jpg` then left eye,
                               right eye, nose, mouth centre x y (human-labelled)

The WIDER file stays the one authority on which boxes exist and which are ignored; a
landmark file only adds points to boxes it can pin down, and a face it cannot pin down
keeps NaN points (masked out of a loss), so a doubtful match costs a label, never gives a
face another face's points:

- RetinaFace file: a face line goes to the box of the same image (relpath = the record's
  name) with IDENTICAL corners (its x y w h turned into corners as the WIDER reader does);
  none, or several such boxes, leave it unmatched. Lines without points attach nothing.
- Caltech file: a face goes to the one not-ignored box of the image (matched by file name)
  that contains all four of its points; none or several such boxes, or a box two faces
  claim, leave it unmatched. Caltech's "left eye" is the VIEWER's left: its x is smaller
  than the right eye's on every line of the file, i.e. it is the subject's right eye
  (`data.landmarks.RIGHT_EYE`). Its mouth centre goes to `ImageRecord.mouth_centres`; the
  two mouth corners stay NaN (data/landmarks.py says why).

Every record of a set with a landmark file gets `landmarks` (N, 5, 2) (NaN rows where no
point was attached), and with the Caltech file `mouth_centres` (N, 2) too. What matched is
counted in a `LandmarkMatch`; unmatched or bad entries are shown in one AnnotationWarning.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from data.boxes import xywh_to_xyxy
from data.formats import MAX_COORDINATE, MAX_MESSAGES, AnnotationWarning, caller_level, decode_utf8
from data.formats.retinaface import ABSENT, parse_retinaface
from data.landmarks import LEFT_EYE, NOSE_TIP, NUM_LANDMARKS, RIGHT_EYE, empty_landmarks
from data.records import ImageRecord
from common.errors import AnnotationError

RETINAFACE_FILE = "retinaface_labels.txt"
CALTECH_FILE = "WebFaces_GroundThruth.txt"
LANDMARK_FILES = (RETINAFACE_FILE, CALTECH_FILE)
# Caltech's columns after the file name: left eye (the viewer's), right eye, nose, mouth.
_CALTECH_VALUES = 8


@dataclass
class LandmarkMatch:
    """What one landmark file gave a split's records.

    Attributes:
        source: the landmark file.
        entries: faces with at least one point in the file.
        matched: of those, faces attached to a box.
        unmatched: entries of images in the split that could not be pinned to one box.
        other_images: entries of images not in the split (another split's, or images left
            out), not attached and not a problem.
        problems: malformed entries (bad line, value out of range), left out.
        messages: the first MAX_MESSAGES unmatched or bad entries, `file:line: why`.
    """

    source: str
    entries: int = 0
    matched: int = 0
    unmatched: int = 0
    other_images: int = 0
    problems: int = 0
    messages: List[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)

    def summary(self) -> str:
        lines = [f"{self.source}: points attached to {self.matched} of {self.entries} faces "
                 f"({self.unmatched} unmatched, {self.problems} bad entries left out; "
                 f"{self.other_images} of images not in this split)"]
        lines.extend(f"  {m}" for m in self.messages)
        return "\n".join(lines)


def attach_landmark_files(records: Sequence[ImageRecord], root: str) -> List[LandmarkMatch]:
    """Attach the points of every known landmark file in `root` (module doc) to `records`,
    in place; one AnnotationWarning per file with unmatched or bad entries."""
    matches = []
    for name in LANDMARK_FILES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            continue
        attach = attach_retinaface if name == RETINAFACE_FILE else attach_caltech
        match = attach(records, path)
        if match.unmatched or match.problems:
            warnings.warn(match.summary(), AnnotationWarning, stacklevel=caller_level())
        matches.append(match)
    return matches


def _give_points(records: Sequence[ImageRecord], mouth_centres: bool) -> None:
    """Every record gets NaN landmark rows (and mouth centres) where it has none yet."""
    for record in records:
        if record.landmarks is None:
            record.landmarks = empty_landmarks(len(record.boxes))
        if mouth_centres and record.mouth_centres is None:
            record.mouth_centres = np.full((len(record.boxes), 2), np.nan, np.float32)


def attach_retinaface(records: Sequence[ImageRecord], path: str) -> LandmarkMatch:
    """Points of a RetinaFace label file onto the records' boxes of identical corners."""
    match = LandmarkMatch(path)
    shown = os.path.basename(path)
    _give_points(records, mouth_centres=False)
    by_name = {r.name: r for r in records}
    for block in parse_retinaface(path):
        if block.problem:
            match.problems += 1
            match.note(f"{shown}:{block.line}: {block.problem}")
            continue
        record = by_name.get(block.name)
        for number, values in block.faces:
            where = f"{shown}:{number}"
            if isinstance(values, str):
                match.problems += 1
                match.note(f"{where}: {values}")
                continue
            if len(values) == 4:
                continue  # a box without points
            xy = np.asarray(values[4:4 + 3 * NUM_LANDMARKS], np.float64).reshape(-1, 3)[:, :2]
            present = ~(xy == ABSENT).all(axis=1)
            if not present.any():
                continue
            match.entries += 1
            if np.abs(xy[present]).max() > MAX_COORDINATE:
                match.problems += 1
                match.note(f"{where}: a point beyond {MAX_COORDINATE:.0f} px (no image is that large)")
                continue
            if record is None:
                match.other_images += 1
                continue
            box = xywh_to_xyxy(np.asarray(values[:4], np.float64))[0]
            same = np.flatnonzero((record.boxes == box).all(axis=1))
            if len(same) != 1:
                match.unmatched += 1
                what = "no box" if not len(same) else f"{len(same)} boxes"
                match.note(f"{where}: {what} of {block.name} with these corners in the WIDER file")
                continue
            points = np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
            points[present] = xy[present]
            record.landmarks[same[0]] = points
            match.matched += 1
    return match


def read_caltech_points(path: str) -> List[tuple]:
    """Caltech WebFaces' ground truth: [(line, file name, (4, 2) float64 points in the
    file's order: left eye, right eye, nose, mouth, the viewer's left and right), ...];
    a malformed line is (line, None, why)."""
    try:
        with open(path, "rb") as f:
            text = decode_utf8(f.read(), path)
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read the file ({e.strerror})") from None
    faces = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        values = None
        if len(fields) == 1 + _CALTECH_VALUES and line.isascii() and "_" not in line:
            try:
                values = np.array(fields[1:], np.float64)
            except ValueError:
                pass
        if values is None or not np.isfinite(values).all() or np.abs(values).max() > MAX_COORDINATE:
            faces.append((number, None, "expected 'picNNNNN.jpg' and 8 numbers (left eye, right "
                          "eye, nose, mouth x y, pixels)"))
            continue
        faces.append((number, fields[0], values.reshape(4, 2)))
    return faces


def attach_caltech(records: Sequence[ImageRecord], path: str) -> LandmarkMatch:
    """Caltech's four points onto the one not-ignored box holding all four (module doc)."""
    match = LandmarkMatch(path)
    shown = os.path.basename(path)
    _give_points(records, mouth_centres=True)
    by_file: Dict[str, List[ImageRecord]] = defaultdict(list)
    for record in records:
        by_file[os.path.basename(record.name)].append(record)
    claims = defaultdict(list)  # (record id, box index) -> [(where, points)]
    owners = {}
    for number, name, points in read_caltech_points(path):
        where = f"{shown}:{number}"
        if name is None:
            match.problems += 1
            match.note(f"{where}: {points}")
            continue
        match.entries += 1
        candidates = by_file.get(name, [])
        if not candidates:
            match.other_images += 1
            continue
        if len(candidates) > 1:
            match.unmatched += 1
            match.note(f"{where}: {name} is the name of {len(candidates)} images of the split")
            continue
        record = candidates[0]
        boxes = record.boxes.astype(np.float64)
        inside = ((points[None, :, 0] >= boxes[:, None, 0]) & (points[None, :, 0] <= boxes[:, None, 2])
                  & (points[None, :, 1] >= boxes[:, None, 1]) & (points[None, :, 1] <= boxes[:, None, 3]))
        holding = np.flatnonzero(inside.all(axis=1) & ~record.ignore)
        if len(holding) != 1:
            match.unmatched += 1
            what = "no face box" if not len(holding) else f"{len(holding)} face boxes"
            match.note(f"{where}: {what} of {record.name} holding all four points")
            continue
        claims[(id(record), int(holding[0]))].append((where, points))
        owners[id(record)] = record
    for (record_id, k), claimed in claims.items():
        if len(claimed) > 1:
            match.unmatched += len(claimed)
            match.note(f"{claimed[0][0]}: {len(claimed)} faces hold their points in the same box")
            continue
        record, points = owners[record_id], claimed[0][1]
        # The viewer's left eye is the subject's right eye.
        record.landmarks[k, RIGHT_EYE] = points[0]
        record.landmarks[k, LEFT_EYE] = points[1]
        record.landmarks[k, NOSE_TIP] = points[2]
        record.mouth_centres[k] = points[3]
        match.matched += 1
    return match
