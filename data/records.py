"""The one in-memory record type every annotation reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class ImageRecord:
    """One image and its faces.

    Attributes:
        path: the image file on disk.
        name: the image's name inside its dataset, as the WIDER lists write it
            (`<event>/<file>.jpg`); evaluation output is laid out by it.
        boxes: (N, 4) float32 face boxes x1, y1, x2, y2 (corners, `data.boxes`) in the
            pixels of the image file.
        ignore: (N,) bool, True for faces to be neither learned nor penalised
            (WIDER `invalid`, too small, COCO crowd).
        attributes: optional (N, 6) int WIDER flags
            (blur, expression, illumination, invalid, occlusion, pose).
        line: the annotation line the record starts at (for error messages), 0 if none.
        landmarks: optional (N, 5, 2) float32 x, y pixel coordinates of each face's five
            points in the order of `data.landmarks.LANDMARK_NAMES`, NaN where a point is absent; None when the source has no points.
        mouth_centres: optional (N, 2) float32 x, y of each face's mouth centre (Caltech
            WebFaces labels it instead of the corners; `data.landmarks`), NaN where absent;
            None when the source has none.
    """

    path: str
    name: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    attributes: Optional[np.ndarray] = None
    line: int = 0
    landmarks: Optional[np.ndarray] = None
    mouth_centres: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.ignore = np.asarray(self.ignore, dtype=bool).reshape(-1)
        if len(self.ignore) != len(self.boxes):
            raise ValueError(
                f"{self.name}: {len(self.boxes)} boxes but {len(self.ignore)} ignore flags"
            )
        if self.landmarks is not None:
            self.landmarks = self._points("landmarks", self.landmarks, (len(self.boxes), 5, 2))
        if self.mouth_centres is not None:
            self.mouth_centres = self._points("mouth_centres", self.mouth_centres,
                                              (len(self.boxes), 2))

    def _points(self, what: str, points, shape: tuple) -> np.ndarray:
        """`points` as float32 of exactly `shape`, each point both coordinates finite or both
        NaN (absent); ValueError naming the record otherwise."""
        array = np.asarray(points, dtype=np.float32)
        if array.shape != shape:
            raise ValueError(f"{self.name}: {what} must have shape {shape} for "
                             f"{len(self.boxes)} boxes, got {array.shape}")
        nan = np.isnan(array)
        if (nan.any(axis=-1) != nan.all(axis=-1)).any():
            raise ValueError(f"{self.name}: {what} has a point with one coordinate NaN "
                             f"(an absent point is NaN in both)")
        if np.isinf(array).any():
            raise ValueError(f"{self.name}: {what} has an infinite coordinate")
        return array

    def select(self, keep: np.ndarray) -> None:
        """Keep only the faces `keep` ((N,) bool or indices) selects, in every per-face
        array (boxes, ignore, attributes, landmarks, mouth_centres) alike, in place."""
        self.boxes, self.ignore = self.boxes[keep], self.ignore[keep]
        for name in ("attributes", "landmarks", "mouth_centres"):
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, values[keep])

    @property
    def num_faces(self) -> int:
        """Faces to learn (not ignored)."""
        return int((~self.ignore).sum())
