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
    """

    path: str
    name: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    attributes: Optional[np.ndarray] = None
    line: int = 0

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.ignore = np.asarray(self.ignore, dtype=bool).reshape(-1)
        if len(self.ignore) != len(self.boxes):
            raise ValueError(
                f"{self.name}: {len(self.boxes)} boxes but {len(self.ignore)} ignore flags"
            )

    @property
    def num_faces(self) -> int:
        """Faces to learn (not ignored)."""
        return int((~self.ignore).sum())
