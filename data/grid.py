"""The grid encoding and its inverse: the one place that maps faces to cells and back.

A grid is a (G, G, 5) array whose cell (row, col) holds, in this channel order:

    h, w    the face's height and width as fractions of the network input side
    yc, xc  the face centre's offset from the cell's top-left corner, in cells: in [0, 1)
            for the cell holding the centre; in [-0.5, 1.5) for a neighbour cell
    class   1 for a cell that predicts a face, 0 for background,
            -1 for a cell that holds only ignored faces (neither learned nor penalised)

By default one cell predicts each face: the one holding its centre. With `neighbours`
(YOLOv5's assignment, FCOS' centre sampling) up to three more do: the cells beside and
diagonal to it on the sides nearer the centre (so the centre is less than half a cell away
from them), when their own centre lies inside the face. More positives per face give the
network more to learn from each photo and detections that do not hinge on one cell; the
network's offsets must then reach [-0.5, 1.5) (`model.network`, `neighbour_cells`).

With `centre_radius` r > 0 (FCOS / YOLOX centre sampling, YuNet's r = 2.5) every cell
whose centre lies inside the face AND within r cells of the face centre on both axes is
positive, besides the centre cell: a large face gets up to (2r + 1)^2 cells, a face under
a cell keeps its one. A cell two faces want goes to the smaller (FCOS's rule: the larger
face has other cells); centre cells keep the largest-face rule above. Offsets then reach
[0.5 - r, 0.5 + r] cells (`offset_range`); neighbour cells are the r = 1 range.

The network predicts the same layout (class as a score in [0, 1]), so `decode_grid`
serves targets and predictions alike, and `grid_box_corners` lets the loss and the
validation metrics use the same geometry on tensors.

Several levels (`Config.grid_levels`; YuNet's and SCRFD's strides 8, 16, 32): one grid
per level, each next level with cells twice as large, finest first (`level_grid_sizes`).
Each face, and each ignore region, goes to the one level on which it spans nearest
FACE_CELLS cells (`assign_levels`) and is encoded there by `encode_grid`, with the same
assignment rule on every level. The levels travel as one (N, 5) array of cells, each
level's grid flattened row by row, finest first (`flatten_levels`, `split_levels`), so a
network has one output and a loss one sum over every level's cells; `encode_levels`,
`decode_levels` and `cell_box_corners` are the several-level forms of `encode_grid`,
`decode_grid` and `grid_box_corners`, and with one level they ARE those functions, on the
(G, G, 5) grid.

Landmarks (`GridSpec.landmarks`, `Config.landmarks`). A network that also predicts the
five points of `data.landmarks` (LANDMARK_NAMES order) has LANDMARK_CHANNELS more channels
per cell after the five above, x then y of each point (`point_channels`):

    lx = (px - (col + 0.5) cell) / w,   ly = (py - (row + 0.5) cell) / h

the point's offset from the centre of the cell, divided by the face's width and height
(px, py, cell, w, h in input pixels): a scale-free number, about [-0.5, 0.5] for a point
inside a face whose centre is in the cell, the same for a face of any size. Decoding is
its exact inverse with the cell's own box: px = (col + 0.5) cell + lx * w, w = W * S.
Every positive cell of a face (its centre cell, neighbour cells, centre sampling) holds
its points. The network predicts 5 + 10 = 15 channels (`GridSpec.channels`).

Targets carry one point more, the mouth centre (POINT_NAMES: the sample's (N, 6, 2)
points), encoded the same way in two more channels: target cells are 5 + 12 = 17 wide
(`GridSpec.target_channels`), the first 15 laid out as the outputs. Caltech labels the
mouth centre without the corners; the loss compares it with the mean of the two predicted
corners, which, the encoding being linear with the same cell and face size for both
corners, is the encoded mean of the corners. A point absent from the labels, and every
point of a cell that is not a positive one, is NaN in the targets: the loss learns only
from finite points.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import numpy as np

from common.checks import check_type
from common.errors import ConfigError
from data.boxes import BAND_ALIGN, band_top
from data.image import CHANNEL_ORDER, INPUT_DTYPE
from data.landmarks import NUM_LANDMARKS, POINT_NAMES

H, W, YC, XC, CLASS = range(5)
# The cell sizes a grid level can have, in input pixels: the strides of the backbone's
# feature maps (model.network.FEATURE_LAYERS); Config checks grids against them.
CELL_SIZES = (8, 16, 32)
NUM_CHANNELS = 5
IGNORE = -1.0
# Landmark channels (module doc): x, y of each point after the five above.
LANDMARK_CHANNELS = 2 * NUM_LANDMARKS
LANDMARK_OUTPUT_CHANNELS = NUM_CHANNELS + LANDMARK_CHANNELS  # a network's 15
LANDMARK_TARGET_CHANNELS = NUM_CHANNELS + 2 * len(POINT_NAMES)  # its targets' 17 (+ mouth centre)


def point_channels(point: int):
    """(x channel, y channel) of point `point` (POINT_NAMES index) in a landmark cell."""
    return NUM_CHANNELS + 2 * point, NUM_CHANNELS + 2 * point + 1


def output_has_landmarks(channels: int) -> bool:
    """Whether a network output's last dimension, `channels`, is that of a landmark model
    (LANDMARK_OUTPUT_CHANNELS) or a box-only one (NUM_CHANNELS); ValueError otherwise."""
    if channels not in (NUM_CHANNELS, LANDMARK_OUTPUT_CHANNELS):
        raise ValueError(f"{channels} channels per cell: a grid network outputs "
                         f"{NUM_CHANNELS} (boxes) or {LANDMARK_OUTPUT_CHANNELS} (boxes and "
                         "landmarks)")
    return channels == LANDMARK_OUTPUT_CHANNELS


def offset_range(neighbours: bool = False, centre_radius: float = 0.0):
    """(low, high) of the centre offsets yc, xc a cell may hold, in cells: [0, 1) for the
    centre cell alone, [0.5 - r, 0.5 + r] with centre sampling of radius r (neighbour
    cells: r = 1). The network's output maps its sigmoid onto this range."""
    radius = float(centre_radius) if centre_radius > 0 else (1.0 if neighbours else 0.5)
    return 0.5 - radius, 0.5 + radius


@dataclass(frozen=True)
class GridSpec:
    """What a grid detector's input and output are: the one record the grid codec, the
    network, the post-processing, the model's contract and every runtime read.

    Built from the configuration (`Config.grid_spec()`, the same field names), or from a
    model's contract; it checks its own values (ConfigError naming the field), so no
    other module restates what a valid grid is.

    Attributes:
        input_size: S, side of the square (S, S, 3) network input, pixels (a multiple of 32).
        grid_size: G, cells per side of the finest level's grid; its cells (S / G px) must
            be one of CELL_SIZES.
        grid_levels: L levels, finest first, each with half the cells per side of the one
            before (`level_grid_sizes`); the coarsest's cells must be in CELL_SIZES too.
        letterbox: images are resized keeping their aspect ratio and padded (True) or
            stretched to S x S (False) (`data.boxes.InputMapping`).
        neighbour_cells, centre_radius: the assignment rule (module doc); they also set
            the range of the offsets the network predicts (`offset_range`).
        landmarks: every cell also holds five landmarks (module doc), `channels` 15
            instead of 5.
        input_height: 0, or the rows of a band input: the network sees only that band of
            the S x S square (`data.boxes.band_top`: centred, 32-aligned), which a
            landscape photo fills, and its outputs are the band's cells of the square's
            grid (`embed_band` places them there), so everything after the network is
            the square's. A detection shape only (`at_input_size`): networks train square.
        channel_order, input_dtype: the input's form (`data.image`): RGB uint8 pixels.
    """

    input_size: int
    grid_size: int
    grid_levels: int = 1
    letterbox: bool = True
    neighbour_cells: bool = False
    centre_radius: float = 0.0
    landmarks: bool = False
    input_height: int = 0
    channel_order: str = CHANNEL_ORDER
    input_dtype: str = INPUT_DTYPE

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_type(f.name, str(f.type), getattr(self, f.name))
        if not (self.input_size > 0 and self.input_size % 32 == 0):
            raise ConfigError(f"input_size={self.input_size!r}: must be a positive multiple of 32")
        for name in ("grid_size", "grid_levels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be >= 1")
        if not (self.centre_radius == 0 or 0.5 <= self.centre_radius <= 8):
            raise ConfigError(f"centre_radius={self.centre_radius!r}: must be 0 (off) or in "
                              "[0.5, 8]")
        if self.input_size % self.grid_size:
            raise ConfigError(
                f"grid_size={self.grid_size}: must divide input_size={self.input_size}")
        cells = ", ".join(map(str, CELL_SIZES[:-1])) + f" or {CELL_SIZES[-1]}"
        if self.cell_size not in CELL_SIZES:
            raise ConfigError(
                f"grid_size={self.grid_size}: cell size {self.cell_size} px at input_size="
                f"{self.input_size}; the backbone gives cells of {cells} px")
        coarsest = self.cell_size * 2 ** (self.grid_levels - 1)
        if coarsest not in CELL_SIZES:
            raise ConfigError(
                f"grid_levels={self.grid_levels}: from {self.cell_size}-px cells the coarsest "
                f"level would have {coarsest}-px cells; the backbone gives cells of {cells} px")
        if self.input_height and not (0 < self.input_height <= self.input_size
                                      and self.input_height % BAND_ALIGN == 0):
            raise ConfigError(
                f"input_height={self.input_height!r}: must be 0 (the square) or a multiple "
                f"of {BAND_ALIGN} up to input_size={self.input_size}")
        if self.channel_order != CHANNEL_ORDER or self.input_dtype != INPUT_DTYPE:
            raise ConfigError(
                f"channel_order={self.channel_order!r}, input_dtype={self.input_dtype!r}: "
                f"this project's networks take {CHANNEL_ORDER} {INPUT_DTYPE} pixels")

    @classmethod
    def config_fields(cls) -> Tuple[str, ...]:
        """The fields that are also Config fields (all but the input's fixed form and the
        band, a detection shape)."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.name not in ("channel_order", "input_dtype", "input_height"))

    @classmethod
    def from_config(cls, config) -> "GridSpec":
        """The grid of a network built with `config` (a Config, or any object with its
        fields)."""
        return cls(**{name: getattr(config, name) for name in cls.config_fields()})

    def replace(self, **changes) -> "GridSpec":
        return dataclasses.replace(self, **changes)

    def at_input_size(self, input_size: int, input_height: int = 0) -> "GridSpec":
        """The same cells (and levels) for another input size: input_size / cell_size
        cells per side (a network run at another size, `model.network.at_input_size`),
        on the square or on its band of `input_height` rows."""
        return self.replace(input_size=int(input_size),
                            grid_size=int(input_size) // self.cell_size,
                            input_height=0 if int(input_height) == int(input_size)
                            else int(input_height))

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """The network input of one image: (S, S, 3), or (input_height, S, 3) for a band."""
        return (self.input_height or self.input_size, self.input_size, 3)

    @property
    def band_shapes(self) -> Tuple[Tuple[int, int], ...]:
        """(rows, cols) of each level's cells the network outputs, finest first: the whole
        grid (G_l, G_l), or the band's rows of it."""
        rows = self.input_shape[0]
        return tuple((rows // s, g) for s, g in zip(self.strides, self.grid_sizes))

    @property
    def network_shape(self) -> tuple:
        """One image's network output: `cells_shape`, or for a band input its cells alone,
        (R, G, C) for one level or (sum R_l G_l, C) (`embed_band` makes `cells_shape`)."""
        if not self.input_height:
            return self.cells_shape
        if len(self.band_shapes) == 1:
            return self.band_shapes[0] + (self.channels,)
        return (sum(r * g for r, g in self.band_shapes), self.channels)

    @property
    def cell_size(self) -> int:
        """Side of one cell of the finest level, input pixels."""
        return self.input_size // self.grid_size

    @property
    def grid_sizes(self) -> Tuple[int, ...]:
        """Cells per side of each level, finest first."""
        return level_grid_sizes(self.grid_size, self.grid_levels)

    @property
    def strides(self) -> Tuple[int, ...]:
        """Cell side of each level in input pixels, finest first (8, 16, 32)."""
        return tuple(self.cell_size * 2**level for level in range(self.grid_levels))

    @property
    def offsets(self) -> Tuple[float, float]:
        """(low, high) of the centre offsets a cell holds (`offset_range`)."""
        return offset_range(self.neighbour_cells, self.centre_radius)

    @property
    def channels(self) -> int:
        """Channels of an output cell: NUM_CHANNELS, or LANDMARK_OUTPUT_CHANNELS (15) with
        landmarks."""
        return LANDMARK_OUTPUT_CHANNELS if self.landmarks else NUM_CHANNELS

    @property
    def target_channels(self) -> int:
        """Channels of a target cell: NUM_CHANNELS, or LANDMARK_TARGET_CHANNELS (17: the
        outputs' and the mouth centre) with landmarks."""
        return LANDMARK_TARGET_CHANNELS if self.landmarks else NUM_CHANNELS

    @property
    def cells_shape(self) -> tuple:
        """One image's output shape: (G, G, C), or (N, C) for several levels, C =
        `channels`."""
        return cells_shape(self.grid_sizes, self.channels)

    @property
    def target_shape(self) -> tuple:
        """One image's target shape: `cells_shape` with `target_channels`."""
        return cells_shape(self.grid_sizes, self.target_channels)

    def describe(self) -> str:
        """'40x40' or '40x40 + 20x20 + 10x10' (what CLIs print)."""
        return levels_text(self.grid_sizes)


class GridTargets(NamedTuple):
    grid: np.ndarray  # (G, G, 5) float32; (G, G, 17) with points
    collisions: int  # faces dropped because a larger face's centre shared their cell


def encode_grid(
    boxes: np.ndarray,
    ignore: np.ndarray,
    image_size: int,
    grid_size: int,
    neighbours: bool = False,
    centre_radius: float = 0.0,
    points: Optional[np.ndarray] = None,
) -> GridTargets:
    """Encode faces into a grid target.

    Args:
        boxes: (N, 4) face boxes x1, y1, x2, y2 in network-input pixels.
        ignore: (N,) bool, True for faces to mark as ignore rather than as faces.
        image_size: side of the square network input, pixels.
        grid_size: G, cells per side.
        neighbours: also assign each face to up to 3 neighbouring cells (module doc).
        centre_radius: > 0: centre sampling instead, every cell of the face within this
            many cells of its centre (module doc); overrides `neighbours`.
        points: None, or (N, 6, 2) x, y points of each face in network-input pixels
            (POINT_NAMES: five landmarks and the mouth centre), NaN where absent: a
            landmark target (module doc), written on every positive cell of its face.

    Returns:
        GridTargets(grid (G, G, 5) float32, or (G, G, 17) with `points`, collisions). When several face centres fall in
        one cell the largest face is kept and the others are counted as collisions.
        A neighbour cell goes to a face only when no face centre lies in it; among faces
        wanting the same neighbour cell the largest wins.
        Boxes whose centre lies outside the input, or with a non-positive size, are skipped.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    grid, points = _empty_targets(grid_size, len(boxes), points)
    if len(boxes) == 0:
        return GridTargets(grid, 0)

    cell = image_size / grid_size
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    valid = (w > 0) & (h > 0) & (cx >= 0) & (cx < image_size) & (cy >= 0) & (cy < image_size)
    area = w * h
    col = np.minimum((cx / cell).astype(np.int64), grid_size - 1)
    row = np.minimum((cy / cell).astype(np.int64), grid_size - 1)

    # Ignored faces first: a face centre in the same cell overrides the mark below.
    ignored = valid & ignore
    grid[row[ignored], col[ignored], CLASS] = IGNORE

    # Largest face first; np.unique's return_index gives each cell's first (largest) face.
    faces = np.flatnonzero(valid & ~ignore)
    faces = faces[np.argsort(-area[faces], kind="stable")]
    _, first = np.unique(row[faces] * grid_size + col[faces], return_index=True)
    kept = faces[first]
    collisions = len(faces) - len(kept)  # each lost to a larger face in its cell
    r, c = row[kept], col[kept]
    if centre_radius > 0:
        kept, r, c = _centre_sampling(kept, r, c, boxes, cx, cy, area, cell, grid_size,
                                      float(centre_radius))
    elif neighbours:
        kept, r, c = _neighbour_cells(kept, r, c, boxes, cx, cy, area, cell, grid_size)
    _write_faces(grid, r, c, (w[kept], h[kept]), (cx[kept], cy[kept]), cell, image_size,
                 None if points is None else points[kept])
    return GridTargets(grid, collisions)


def _empty_targets(grid_size: int, faces: int, points: Optional[np.ndarray]):
    """(a (G, G, 5) or, with `points`, (G, G, 17) grid of background cells whose point
    channels are NaN (no point to learn, module doc); `points` as float32, shape checked)."""
    channels = NUM_CHANNELS if points is None else LANDMARK_TARGET_CHANNELS
    grid = np.zeros((grid_size, grid_size, channels), dtype=np.float32)
    if points is not None:
        points = np.asarray(points, dtype=np.float32)
        if points.shape != (faces, len(POINT_NAMES), 2):
            raise ValueError(f"points must have shape ({faces}, {len(POINT_NAMES)}, 2), "
                             f"got {points.shape}")
        grid[..., NUM_CHANNELS:] = np.nan
    return grid, points


def _write_faces(grid: np.ndarray, r: np.ndarray, c: np.ndarray, sizes, centres,
                 cell: float, image_size: int, points: Optional[np.ndarray]) -> None:
    """Write face targets into `grid` in place: cell (r[i], c[i]) learns the face of
    sizes (w[i], h[i]) and centres (cx[i], cy[i]) (input pixels) and, with `points`
    ((K, 6, 2) input pixels), its points as offsets from the cell's centre in units of the
    face's size (module doc)."""
    (w, h), (cx, cy) = sizes, centres
    grid[r, c, H] = h / image_size
    grid[r, c, W] = w / image_size
    grid[r, c, YC] = cy / cell - r
    grid[r, c, XC] = cx / cell - c
    grid[r, c, CLASS] = 1.0
    if points is not None:
        x, y = point_channels(0)
        grid[r, c, x::2] = (points[:, :, 0] - (c[:, None] + 0.5) * cell) / w[:, None]
        grid[r, c, y::2] = (points[:, :, 1] - (r[:, None] + 0.5) * cell) / h[:, None]


def _neighbour_cells(kept, r, c, boxes, cx, cy, area, cell, grid_size):
    """(faces, rows, cols) of the centre cells plus up to 3 neighbour cells per face: those
    beside and diagonal to its centre cell on the sides nearer the centre, when free and
    their own centre lies inside the face; contested cells go to the larger face."""
    fy, fx = cy[kept] / cell - r, cx[kept] / cell - c
    dr = np.where(fy < 0.5, -1, 1)
    dc = np.where(fx < 0.5, -1, 1)
    n_face = np.concatenate([kept, kept, kept])
    n_row = np.concatenate([r + dr, r, r + dr])
    n_col = np.concatenate([c, c + dc, c + dc])
    inside = (n_row >= 0) & (n_row < grid_size) & (n_col >= 0) & (n_col < grid_size)
    n_face, n_row, n_col = n_face[inside], n_row[inside], n_col[inside]
    # The neighbour cell's centre must lie inside the face: a tiny face keeps one cell.
    x1, y1, x2, y2 = (boxes[n_face, k] for k in range(4))
    ccx, ccy = (n_col + 0.5) * cell, (n_row + 0.5) * cell
    covered = (ccx > x1) & (ccx < x2) & (ccy > y1) & (ccy < y2)
    taken = np.zeros((grid_size, grid_size), dtype=bool)
    taken[r, c] = True
    free = covered & ~taken[n_row, n_col]
    n_face, n_row, n_col = n_face[free], n_row[free], n_col[free]
    # `kept` is in descending size order, so the first claim of a cell is the largest.
    order = np.argsort(-area[n_face], kind="stable")
    _, first = np.unique((n_row * grid_size + n_col)[order], return_index=True)
    pick = order[first]
    return (np.concatenate([kept, n_face[pick]]), np.concatenate([r, n_row[pick]]),
            np.concatenate([c, n_col[pick]]))


def _centre_sampling(kept, r, c, boxes, cx, cy, area, cell, grid_size, radius):
    """(faces, rows, cols) of the centre cells plus every free cell whose centre lies
    inside its face and within `radius` cells of the face centre; contested cells go to
    the smaller face."""
    reach = int(np.ceil(radius))
    taken = np.zeros((grid_size, grid_size), dtype=bool)
    taken[r, c] = True
    d = np.arange(-reach, reach + 1)
    dr, dc = np.repeat(d, len(d)), np.tile(d, len(d))
    n_face = np.repeat(kept, len(dr))
    n_row = (r[:, None] + dr[None]).reshape(-1)
    n_col = (c[:, None] + dc[None]).reshape(-1)
    inside = (n_row >= 0) & (n_row < grid_size) & (n_col >= 0) & (n_col < grid_size)
    n_face, n_row, n_col = n_face[inside], n_row[inside], n_col[inside]
    ccx, ccy = (n_col + 0.5) * cell, (n_row + 0.5) * cell
    x1, y1, x2, y2 = (boxes[n_face, k] for k in range(4))
    near = (np.abs(ccx - cx[n_face]) <= radius * cell) & (np.abs(ccy - cy[n_face]) <= radius * cell)
    covered = (ccx > x1) & (ccx < x2) & (ccy > y1) & (ccy < y2)
    free = near & covered & ~taken[n_row, n_col]
    n_face, n_row, n_col = n_face[free], n_row[free], n_col[free]
    order = np.argsort(area[n_face], kind="stable")  # smallest first: it wins the cell
    _, first = np.unique((n_row * grid_size + n_col)[order], return_index=True)
    pick = order[first]
    return (np.concatenate([kept, n_face[pick]]), np.concatenate([r, n_row[pick]]),
            np.concatenate([c, n_col[pick]]))


def grid_box_corners(grid):
    """Per-cell boxes of a grid, as corners in fractions of the input side.

    Works on NumPy arrays and on backend tensors alike (only slicing and arithmetic).

    Args:
        grid: (..., G, G, 5) targets or predictions.

    Returns:
        (x1, y1, x2, y2), each (..., G, G).
    """
    g = grid.shape[-2]
    rows = np.arange(g, dtype=np.float32).reshape(g, 1)
    cols = np.arange(g, dtype=np.float32).reshape(1, g)
    cy = (grid[..., YC] + rows) / g
    cx = (grid[..., XC] + cols) / g
    half_h = grid[..., H] / 2
    half_w = grid[..., W] / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


_CELL_CHANNELS = (NUM_CHANNELS, LANDMARK_OUTPUT_CHANNELS, LANDMARK_TARGET_CHANNELS)


def decode_grid(grid: np.ndarray, image_size: int, score_threshold: float = 0.5,
                with_landmarks: bool = False, with_cells: bool = False):
    """Turn one grid (targets or predictions) into boxes: the inverse of `encode_grid`.

    Args:
        grid: (G, G, C) array, C = 5, or 15 / 17 with landmarks (module doc).
        image_size: side of the square network input, pixels.
        score_threshold: cells whose class channel is >= this become boxes
            (cells scoring 0, background, and -1, ignore, never do).
        with_landmarks: also decode each box's five points (the grid must have them).
        with_cells: also give each box's cell, its flat index in the grid row by row
            (`landmarks_of_cells` decodes the points of chosen cells alone).

    Returns:
        (boxes (N, 4) float32 x1, y1, x2, y2 in network-input pixels, scores (N,)
        float32), sorted by descending score; with `with_landmarks` then landmarks (N, 5, 2)
        float32 x, y in network-input pixels (LANDMARK_NAMES order; NaN where a target has
        none); with `with_cells` then the cells (N,) int64.
    """
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 3 or grid.shape[0] != grid.shape[1] or grid.shape[2] not in _CELL_CHANNELS:
        raise ValueError(f"decode_grid expects a (G, G, {NUM_CHANNELS}) grid (or "
                         f"{LANDMARK_OUTPUT_CHANNELS} / {LANDMARK_TARGET_CHANNELS} channels "
                         f"with landmarks), got {grid.shape}")
    if with_landmarks and grid.shape[2] == NUM_CHANNELS:
        raise ValueError(f"decode_grid: a (G, G, {NUM_CHANNELS}) grid has no landmarks")
    x1, y1, x2, y2 = grid_box_corners(grid)
    scores = grid[..., CLASS]
    keep = (scores >= score_threshold) & (scores > 0)
    boxes = np.stack([x1[keep], y1[keep], x2[keep], y2[keep]], axis=1) * np.float32(image_size)
    scores = scores[keep]
    order = np.argsort(-scores, kind="stable")
    decoded = (boxes[order].astype(np.float32), scores[order].astype(np.float32))
    if not (with_landmarks or with_cells):
        return decoded
    cells = np.flatnonzero(keep.reshape(-1))[order]
    if with_landmarks:
        decoded += (landmarks_of_cells(grid, image_size, (grid.shape[0],), cells),)
    if with_cells:
        decoded += (cells.astype(np.int64),)
    return decoded


def landmarks_of_cells(cells: np.ndarray, image_size: int, grid_sizes, index) -> np.ndarray:
    """The five landmarks of the cells at flat `index` alone (`decode_grid`'s and
    `decode_levels`' `with_cells`), as `cell_points` decodes them: detection decodes the
    points of the boxes NMS keeps, not of every candidate.

    Args:
        cells: (G, G, C) grid, or the (N, C) cells of `grid_sizes`' levels; C = 15 or 17.
        index: (K,) flat cell indices, row by row, finest level first.

    Returns:
        (K, 5, 2) float32 x, y input pixels (LANDMARK_NAMES order).
    """
    cells = np.asarray(cells, dtype=np.float32)
    flat = cells.reshape(-1, cells.shape[-1])
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    rows, cols, sides = _cell_positions(tuple(int(g) for g in grid_sizes))
    return _points_of_cells(flat[index], rows[index], cols[index], sides[index],
                            image_size)[:, :NUM_LANDMARKS]


def cell_points(cells: np.ndarray, image_size: int, grid_sizes=None) -> np.ndarray:
    """Every cell's points in input pixels, decoded with the cell's own box: the inverse
    of `encode_grid`'s points (module doc).

    Args:
        cells: (..., G, G, C) grid, or with several levels `grid_sizes` the (..., N, C)
            cells; C = 15 (outputs: five landmarks) or 17 (targets: and the mouth centre).
        image_size: side of the square network input, pixels.

    Returns:
        (..., G * G (or N), K, 2) float32 x, y input pixels, K = 5 or 6 points
        (POINT_NAMES order), the cells row by row (`flatten_levels`' order).
    """
    cells = np.asarray(cells, dtype=np.float32)
    channels = cells.shape[-1]
    if channels not in (LANDMARK_OUTPUT_CHANNELS, LANDMARK_TARGET_CHANNELS):
        raise ValueError(f"cell_points: cells of {channels} channels hold no landmarks")
    if grid_sizes is None or len(grid_sizes) == 1:
        g = cells.shape[-2]
        cells = cells.reshape(cells.shape[:-3] + (g * g, channels))
        grid_sizes = (g,)
    rows, cols, sides = _cell_positions(tuple(int(g) for g in grid_sizes))
    return _points_of_cells(cells, rows, cols, sides, image_size)


def _points_of_cells(cells: np.ndarray, rows, cols, sides, image_size: int) -> np.ndarray:
    """`cell_points` of (..., N, C) cells whose row, column and level side are `rows`,
    `cols`, `sides` (each (N,)): (..., N, K, 2) input pixels."""
    cell = np.float32(image_size) / sides[:, None]
    end = cells.shape[-1]  # the offsets of every point the cells hold
    x, y = point_channels(0)
    width = cells[..., W:W + 1] * np.float32(image_size)
    height = cells[..., H:H + 1] * np.float32(image_size)
    px = (cols[:, None] + 0.5) * cell + cells[..., x:end:2] * width
    py = (rows[:, None] + 0.5) * cell + cells[..., y:end:2] * height
    return np.stack([px, py], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------------------
# Several grid levels
# --------------------------------------------------------------------------------------
# A face goes to the level on which its size sqrt(w h) is nearest this many cells, on a
# log scale: with cells of 8, 16 and 32 px, faces under 45 px to the first level, 45 to
# 91 px to the second, larger ones to the third (FCOS' P3-P5 ranges: 64 and 128 px). A
# face is then a few cells wide on its level, so centre sampling has cells to give it and
# the offsets stay within the cells' reach.
FACE_CELLS = 4.0


def level_grid_sizes(grid_size: int, levels: int = 1) -> tuple:
    """Cells per side of each level, finest first: (G, G / 2, G / 4, ...)."""
    sizes = tuple(int(grid_size) // 2**level for level in range(int(levels)))
    if any(g * 2**level != grid_size or g < 1 for level, g in enumerate(sizes)):
        raise ValueError(f"{levels} levels need a grid size divisible by {2 ** (levels - 1)}, "
                         f"got {grid_size}")
    return sizes


def cells_shape(grid_sizes, channels: int = NUM_CHANNELS) -> tuple:
    """The shape of one image's targets or outputs for these levels: (G, G, C) for one
    grid, (N, C) with N = sum G_l^2 for several (`flatten_levels`); C = `channels`, 5, or
    15 / 17 with landmarks (module doc)."""
    if len(grid_sizes) == 1:
        return (grid_sizes[0], grid_sizes[0], channels)
    return (sum(g * g for g in grid_sizes), channels)


def levels_of_cells(input_size: int, num_cells: int, input_height: int = 0):
    """(finest grid size G, levels L) of a several-level output of `num_cells` cells for an
    S-px input (or its band of `input_height` rows), or None: the one choice of finest
    cell (8, 16 or 32 px, the backbone's) and L >= 2 whose levels' cells add up to it.
    The counts of these few choices all differ (N / (S R) = 1.25 / 64, 1.3125 / 64 and
    1.25 / 256), so a network's output shape alone says its levels."""
    rows = input_height or input_size
    for cell in CELL_SIZES:
        grid, levels = input_size // cell, 2
        while (cell * 2 ** (levels - 1) in CELL_SIZES
               and input_size % (cell * 2 ** (levels - 1)) == 0
               and rows % (cell * 2 ** (levels - 1)) == 0):
            strides = [cell * 2**level for level in range(levels)]
            if sum((rows // s) * (input_size // s) for s in strides) == num_cells:
                return grid, levels
            levels += 1
    return None


def levels_text(grid_sizes) -> str:
    """'40x40', or '40x40 + 20x20 + 10x10' for several levels (what CLIs print)."""
    return " + ".join(f"{g}x{g}" for g in grid_sizes)


def assign_levels(boxes: np.ndarray, image_size: int, grid_sizes) -> np.ndarray:
    """(N,) index of the level each face is encoded on: the one whose cells
    (image_size / G px) make its size sqrt(w h) nearest FACE_CELLS cells, on a log scale;
    faces smaller than the finest level's range take the finest, larger the coarsest."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    finest_cell = image_size / grid_sizes[0]
    size = np.maximum(np.sqrt(w * h), 1e-6)  # a degenerate box is skipped by encode_grid
    level = np.round(np.log2(size / (FACE_CELLS * finest_cell)))
    return np.clip(level, 0, len(grid_sizes) - 1).astype(np.int64)


def flatten_levels(grids) -> np.ndarray:
    """[(..., G_l, G_l, C) per level] -> (..., N, C), each grid row by row, finest first
    (C = 5, or 15 / 17 with landmarks)."""
    return np.concatenate([g.reshape(g.shape[:-3] + (-1, g.shape[-1])) for g in grids],
                          axis=-2)


def split_levels(cells: np.ndarray, grid_sizes) -> list:
    """The inverse of `flatten_levels`: (..., N, C) -> [(..., G_l, G_l, C) per level].
    With one level and a (..., G, G, C) grid, [that grid]."""
    cells = np.asarray(cells)
    if len(grid_sizes) == 1 and cells.ndim >= 3:
        return [cells]  # one level's grid as it is (decode_grid checks its shape)
    channels = cells.shape[-1] if cells.ndim >= 2 else NUM_CHANNELS
    if channels not in _CELL_CHANNELS:  # 5, or 15 / 17 with landmarks
        channels = NUM_CHANNELS
    expected = cells_shape(grid_sizes, channels)
    if cells.ndim < 2 or cells.shape[-2:] != expected:
        raise ValueError(f"levels {tuple(grid_sizes)} have (..., {expected[0]}, "
                         f"{channels}) cells, got {cells.shape}")
    ends = np.cumsum([g * g for g in grid_sizes])[:-1]
    return [part.reshape(cells.shape[:-2] + (g, g, channels))
            for part, g in zip(np.split(cells, ends, axis=-2), grid_sizes)]


def encode_levels(boxes: np.ndarray, ignore: np.ndarray, spec: GridSpec,
                  points: Optional[np.ndarray] = None) -> GridTargets:
    """Encode faces on the levels of `spec`: each face and ignore region on the level of
    its size (`assign_levels`), by `encode_grid` with the spec's assignment rule on every
    level.

    Args:
        boxes: (N, 4) face boxes x1, y1, x2, y2 in network-input pixels.
        ignore: (N,) bool, True for faces to mark as ignore rather than as faces.
        spec: the input size, levels and assignment rule (`GridSpec`).
        points: (N, 6, 2) points of the faces in network-input pixels (POINT_NAMES, NaN
            where absent), for a spec with landmarks; None: all absent. A spec without
            landmarks takes none (ValueError).

    Returns:
        GridTargets(cells, collisions summed over the levels): with one level `encode_grid`'s
        (G, G, C) grid itself; with several, (N, C) (`flatten_levels`), N = sum G_l^2,
        C = `spec.target_channels` (5, or 17 with landmarks).
    """
    rule = dict(neighbours=spec.neighbour_cells, centre_radius=spec.centre_radius)
    grid_sizes = spec.grid_sizes
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if points is not None and not spec.landmarks:
        raise ValueError("encode_levels: points given for a grid without landmarks")
    if spec.landmarks and points is None:
        points = np.full((len(boxes), len(POINT_NAMES), 2), np.nan, np.float32)
    if len(grid_sizes) == 1:
        return encode_grid(boxes, ignore, spec.input_size, grid_sizes[0], points=points, **rule)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    level = assign_levels(boxes, spec.input_size, grid_sizes)
    grids, collisions = [], 0
    for index, grid_size in enumerate(grid_sizes):
        on = level == index
        encoded = encode_grid(boxes[on], ignore[on], spec.input_size, grid_size,
                              points=None if points is None else np.asarray(points)[on],
                              **rule)
        grids.append(encoded.grid)
        collisions += encoded.collisions
    return GridTargets(flatten_levels(grids), collisions)


def decode_levels(cells: np.ndarray, image_size: int, grid_sizes,
                  score_threshold: float = 0.5, with_landmarks: bool = False,
                  with_cells: bool = False):
    """The inverse of `encode_levels`: every level's boxes (`decode_grid`), together.

    Args:
        cells: (N, C) cells of `grid_sizes`' levels, or with one level the (G, G, C) grid.
        image_size, score_threshold, with_landmarks: as `decode_grid`.
        with_cells: also give each box's cell, its flat index in `cells` (row by row,
            finest level first; `landmarks_of_cells`).

    Returns:
        (boxes (N, 4), scores (N,)[, landmarks (N, 5, 2)][, cells (N,)]) as `decode_grid`,
        over all levels, by descending score.
    """
    if len(grid_sizes) == 1:
        grid = split_levels(cells, grid_sizes)[0]
        return decode_grid(grid, image_size, score_threshold, with_landmarks, with_cells)
    decoded = [decode_grid(grid, image_size, score_threshold, with_landmarks, with_cells)
               for grid in split_levels(cells, grid_sizes)]
    if with_cells:  # each level's flat indices, after the levels before it
        starts = np.cumsum([0] + [g * g for g in grid_sizes[:-1]])
        decoded = [part[:-1] + (part[-1] + start,) for part, start in zip(decoded, starts)]
    parts = [np.concatenate(arrays) for arrays in zip(*decoded)]
    order = np.argsort(-parts[1], kind="stable")
    return tuple(part[order] for part in parts)


def embed_band(cells: np.ndarray, spec: GridSpec) -> np.ndarray:
    """A band network's outputs as the cells of the whole square (`GridSpec.input_height`):
    each level's band rows placed at their rows of its grid, background (all 0, which
    decodes to no box) elsewhere; a square network's outputs unchanged.

    Args:
        cells: (..., *spec.network_shape) network outputs.

    Returns:
        (..., *spec.cells_shape) cells, as a square network's of the same photo would be
        laid out (`split_levels`, `decode_levels`).
    """
    cells = np.asarray(cells, dtype=np.float32)
    if not spec.input_height:
        return cells
    channels = cells.shape[-1]  # the outputs' (5 or 15), or a target's (17)
    lead = cells.shape[:-3] if len(spec.grid_sizes) == 1 else cells.shape[:-2]
    if len(spec.grid_sizes) == 1:
        parts = [cells]
    else:
        ends = np.cumsum([r * g for r, g in spec.band_shapes])[:-1]
        parts = [part.reshape(lead + (r, g, channels)) for part, (r, g)
                 in zip(np.split(cells, ends, axis=-2), spec.band_shapes)]
    top = band_top(spec.input_size, spec.input_height)
    grids = []
    for part, (rows, g), stride in zip(parts, spec.band_shapes, spec.strides):
        grid = np.zeros(lead + (g, g, channels), np.float32)
        grid[..., top // stride: top // stride + rows, :, :] = part
        grids.append(grid)
    return grids[0] if len(grids) == 1 else flatten_levels(grids)


def band_of(cells: np.ndarray, spec: GridSpec) -> np.ndarray:
    """The inverse of `embed_band`: the band's cells of the square's (..., *cells_shape)
    cells, (..., *spec.network_shape)."""
    cells = np.asarray(cells, dtype=np.float32)
    if not spec.input_height:
        return cells
    top = band_top(spec.input_size, spec.input_height)
    grids = split_levels(cells, spec.grid_sizes)
    bands = [grid[..., top // s: top // s + rows, :, :]
             for grid, (rows, _), s in zip(grids, spec.band_shapes, spec.strides)]
    return bands[0] if len(bands) == 1 else flatten_levels(bands)


@functools.lru_cache(maxsize=32)
def _cell_positions(grid_sizes: tuple):
    """(rows, cols, sides), each (N,) float32: the row, column and level side of every cell
    of `flatten_levels`' layout."""
    rows = [np.repeat(np.arange(g, dtype=np.float32), g) for g in grid_sizes]
    cols = [np.tile(np.arange(g, dtype=np.float32), g) for g in grid_sizes]
    sides = [np.full(g * g, g, dtype=np.float32) for g in grid_sizes]
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sides)


def cell_box_corners(cells, grid_sizes=None):
    """`grid_box_corners` for several levels, on NumPy arrays and backend tensors alike.

    Args:
        cells: (..., N, 5) cells of `grid_sizes`' levels; with `grid_sizes` None or one
            level, a (..., G, G, 5) grid (passed to `grid_box_corners`).

    Returns:
        (x1, y1, x2, y2), each (..., N) (or (..., G, G)), fractions of the input side.
    """
    if grid_sizes is None or len(grid_sizes) == 1:
        return grid_box_corners(cells)
    rows, cols, sides = _cell_positions(tuple(int(g) for g in grid_sizes))
    cy = (cells[..., YC] + rows) / sides
    cx = (cells[..., XC] + cols) / sides
    half_h = cells[..., H] / 2
    half_w = cells[..., W] / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h
