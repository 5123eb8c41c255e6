"""The bundled demo dataset: drawn faces in cluttered scenes, in the official WIDER FACE layout.

    ROOT/WIDER_train/images/<event>/<name>.jpg
    ROOT/WIDER_val/images/<event>/<name>.jpg
    ROOT/wider_face_split/wider_face_train_bbx_gt.txt, wider_face_val_bbx_gt.txt
    ROOT/.complete          parameters and counts as JSON, written last

so every WIDER reader reads it unchanged. Each image is drawn with OpenCV from its own random
stream `(seed, split, index)`: the same seed gives byte-identical files, and val is a fresh
draw, not a resample of train. `python tools/make_demo.py` writes it (`make_demo_dataset`);
`python train.py --demo` makes it on first use (`ensure_demo_dataset`).

What an image holds (the facts the tests check):
- 0 to `MAX_FACES` faces (about 1 image in 10 has none; it is written as `0` plus the dummy
  line `0 0 0 0 0 0 0 0 0 0`, as the official train file does). A face is a skin ellipse
  with a hair cap (or hat), eyebrows, eyes with whites and pupils, nose and mouth, over a
  neck and shoulders; skin tones from pale to dark; slight roll and yaw.
- The box is the tight box of the head ellipse (forehead to chin, side to side), in integer
  pixels, always inside the image. Most faces (91 %) are `BULK_FACE_FRACTION` of the
  longer side wide (20 px in a 400 px image, 11 px after the resize to 224) up to about a
  quarter of the shorter side (median about 50 px); images with one or two faces show them
  up to half the shorter side (`MAX_FACE_FRACTION`); about 6 % are small (`MIN_VALID_FACE`
  px up to the bulk), and about 3 % are tiny (< `TINY_FACE` px, marked invalid).
- Flags per face: blur 0/1/2 (clear / normal / heavy Gaussian blur), expression 1 for an open
  mouth, illumination 1 for an extreme darkening or glare, occlusion 0/1/2 by the visible
  fraction of the head ellipse (hands, objects, other faces: < 5 %, < 35 %, more), pose 1
  for a strong roll or yaw, invalid 1 for faces smaller than `TINY_FACE` px or more than
  60 % occluded.
- Face centres are kept more than 1.2 grid cells apart and in different cells of the
  default 7x7 grid after the letterbox resize (see config.py), so a grid detector can learn
  every face; about 3 % of faces may overlap an earlier one.
- Distractors: plain skin ellipses, backs of heads, eye-like dot pairs, balls, clocks, wheels.
- Image widths 320-640 px, aspect 0.6-1.6, JPEG quality 90.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from config import DEMO_ROOT, SEED_MAX, Config
from data.boxes import InputMapping
from data.records import ImageRecord
from data.wider import wider_split_paths, write_wider_annotations
from common.errors import ConfigError, DatasetError, ImageError
from common.files import atomic_write_text

# Bump when the drawing changes, so `ensure_demo_dataset` regenerates an old set.
GENERATOR_VERSION = 1
MARKER = ".complete"
SPLITS = ("train", "val")
# One event per background style, named like WIDER's `0--Parade`.
EVENTS = ("0--Gradient", "1--Clutter", "2--Texture", "3--Indoor", "4--Street")
JPEG_QUALITY = 90

# The bundled set: 3,000 training scenes, because a network trained from scratch for the
# demo's ~900 steps generalised better from them than from 800 (docs/benchmarks.md).
DEMO_TRAIN_IMAGES = 3000
DEMO_VAL_IMAGES = 200

MAX_FACES = 8
TINY_FACE = 8  # faces with a box side below this (pixels) are marked invalid
MIN_VALID_FACE = 12  # smallest face width drawn apart from the deliberately tiny ones
BULK_FACE_FRACTION = 0.05  # of the longer side: where the bulk of face widths starts
MAX_FACE_FRACTION = 0.5  # of the image's shorter side
INVALID_OCCLUSION = 0.6  # occluded fraction above which a face is marked invalid
# P(number of faces = 0..MAX_FACES) before placement (a face that finds no room is dropped).
_COUNT_P = np.array([0.10, 0.19, 0.17, 0.14, 0.12, 0.10, 0.08, 0.055, 0.045])
# Largest face width, as a fraction of the shorter side, by number of faces in the image.
_MAX_FRACTION_BY_COUNT = (0.5, 0.5, 0.4, 0.33, 0.28, 0.25, 0.22, 0.22, 0.22)
_MIN_CELL_DISTANCE = 1.2  # face centres at least this many grid cells apart

_SHIFT = 4  # OpenCV fixed-point bits: sub-pixel drawing keeps small faces crisp
_ONE = 1 << _SHIFT

# Realistic skin tones, pale to dark (RGB); a face mixes two neighbours.
_SKIN_RGB = np.array(
    [(255, 224, 196), (246, 206, 176), (234, 192, 160), (224, 172, 130), (205, 150, 110),
     (188, 128, 90), (160, 105, 70), (130, 85, 55), (100, 65, 42), (75, 50, 35)],
    np.float32,
)
_HAIR_RGB = np.array(
    [(25, 22, 20), (45, 32, 25), (70, 45, 30), (105, 70, 45), (150, 110, 70), (215, 185, 120),
     (140, 60, 30), (170, 165, 160), (225, 225, 220), (40, 70, 160), (200, 90, 140)],
    np.float32,
)
_HAIR_P = np.array([0.26, 0.18, 0.14, 0.1, 0.07, 0.08, 0.05, 0.05, 0.03, 0.02, 0.02])
_IRIS_RGB = np.array([(90, 60, 40), (40, 30, 25), (80, 120, 170), (80, 120, 80), (120, 100, 60)],
                     np.float32)


class SyntheticImage(NamedTuple):
    """One drawn image and its faces."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray  # (N, 4) int32 x1, y1, x2, y2, the tight boxes of the head ellipses
    attributes: np.ndarray  # (N, 6) int32 WIDER flags (blur, expression, illumination,
    #                          invalid, occlusion, pose)
    event: str  # one of EVENTS


# --- drawing helpers ---------------------------------------------------------------------


def _fx(v: float) -> int:
    return int(round(v * _ONE))


def _bgr(rgb) -> Tuple[float, float, float]:
    r, g, b = (float(c) for c in rgb)
    return (min(b, 255.0), min(g, 255.0), min(r, 255.0))


def _scale(colour, k: float) -> Tuple[float, float, float]:
    return tuple(min(255.0, float(c) * k) for c in colour)


def _random_colour(rng, low: int = 20, high: int = 235) -> Tuple[float, float, float]:
    return tuple(float(c) for c in rng.integers(low, high, 3))


def _ellipse_points(cx, cy, ax, ay, angle_deg, n=28) -> np.ndarray:
    """(n, 2) float points on a rotated ellipse, for polygons drawn on image and labels alike."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    u, v = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + u * c - v * s, cy + u * s + v * c], axis=1)


def _fill(targets, polygons: Sequence[np.ndarray], colour) -> None:
    """Fill float polygons on (image, label) pairs: the image in `colour`, the label map in 0."""
    pts = [np.round(p * _ONE).astype(np.int32) for p in polygons]
    image, label = targets
    cv2.fillPoly(image, pts, colour, cv2.LINE_AA, _SHIFT)
    if label is not None:
        cv2.fillPoly(label, pts, 0, cv2.LINE_8, _SHIFT)


class _Painter:
    """Draws in a face's own frame (u right, v down, pixels), rolled by `angle` about (cx, cy)."""

    def __init__(self, image, cx, cy, angle_deg, line_type=cv2.LINE_AA):
        self.image, self.cx, self.cy, self.angle = image, cx, cy, angle_deg
        self.c, self.s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        self.line_type = line_type

    def point(self, u, v):
        return (self.cx + u * self.c - v * self.s, self.cy + u * self.s + v * self.c)

    def ellipse(self, u, v, au, av, colour, angle=0.0, start=0, end=360, thickness=-1):
        x, y = self.point(u, v)
        cv2.ellipse(self.image, (_fx(x), _fx(y)), (max(0, _fx(au)), max(0, _fx(av))),
                    self.angle + angle, start, end, colour, thickness, self.line_type, _SHIFT)

    def polygon(self, uv, colour):
        pts = np.array([self.point(u, v) for u, v in uv])
        cv2.fillPoly(self.image, [np.round(pts * _ONE).astype(np.int32)], colour,
                     self.line_type, _SHIFT)

    def polyline(self, uv, colour, thickness):
        pts = np.array([self.point(u, v) for u, v in uv])
        cv2.polylines(self.image, [np.round(pts * _ONE).astype(np.int32)], False, colour,
                      thickness, self.line_type, _SHIFT)


# --- backgrounds -------------------------------------------------------------------------


def _low_frequency(rng, h, w, cells, base, spread) -> np.ndarray:
    """Smooth colour blotches: a few random cells upsampled with bicubic interpolation."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    small = np.asarray(base, np.float32) + rng.uniform(-spread, spread, (gh, gw, 3))
    return _upsample(small.astype(np.float32), h, w)


def _upsample(small, h, w) -> np.ndarray:
    """Smooth upsampling, fast: bicubic to at most 64 px, then bilinear to (h, w)."""
    mid = (min(w, 64), min(h, 64))
    smooth = cv2.resize(small, mid, interpolation=cv2.INTER_CUBIC)
    return cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR)


def _gradient(rng, h, w) -> np.ndarray:
    c1, c2 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    # A linear ramp survives bilinear resizing, so compute it on a 16x16 grid only.
    t = (np.linspace(0, w, 16, dtype=np.float32)[None, :] * math.cos(theta)
         + np.linspace(0, h, 16, dtype=np.float32)[:, None] * math.sin(theta))
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    return cv2.resize(c1 + t[..., None] * (c2 - c1), (w, h), interpolation=cv2.INTER_LINEAR)


def _texture(rng, h, w) -> np.ndarray:
    c1, c2 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        t = (np.arange(w, dtype=np.float32)[None, :] * math.cos(theta)
             + np.arange(h, dtype=np.float32)[:, None] * math.sin(theta))
        m = 0.5 + 0.5 * np.sin(t * (2 * np.pi / period))
        img = c1 + m[..., None] * (c2 - c1)
    else:  # one tile of bricks or dots, repeated (drawing each would be slow)
        step = int(rng.integers(14, 48))
        tile = np.empty((2 * step, 2 * step, 3), np.float32)
        tile[:] = c1
        if kind == 1:
            for y, x in ((0, 0), (step, -step), (step, step)):
                cv2.rectangle(tile, (x + 1, y + 1), (x + 2 * step - 2, y + step - 2),
                              _scale(c2, rng.uniform(0.85, 1.15)), -1)
        else:
            r = max(2, int(step * rng.uniform(0.15, 0.35)))
            for y in (step // 2, step // 2 + step):
                for x in (step // 2, step // 2 + step):
                    cv2.circle(tile, (x, y), r, tuple(float(c) for c in c2), -1, cv2.LINE_AA)
        img = np.tile(tile, (h // (2 * step) + 1, w // (2 * step) + 1, 1))[:h, :w]
    return img * _low_frequency(rng, h, w, 4, 1.0, 0.25)


def _indoor(rng, h, w) -> np.ndarray:
    wall = _low_frequency(rng, h, w, 3, _random_colour(rng, 80), 30)
    img = _gradient(rng, h, w) * 0.5 + wall * 0.5
    floor = int(h * rng.uniform(0.6, 0.85))
    img[floor:] = _low_frequency(rng, h - floor, w, 4, _random_colour(rng, 30, 180), 25)
    for _ in range(rng.integers(1, 5)):  # windows, pictures, doors, shelves
        x, y = int(rng.integers(0, w)), int(rng.integers(0, max(1, floor - 20)))
        rw, rh = int(rng.integers(30, max(31, w // 3))), int(rng.integers(30, max(31, h // 2)))
        cv2.rectangle(img, (x, y), (x + rw, y + rh), _random_colour(rng), -1)
        cv2.rectangle(img, (x, y), (x + rw, y + rh), _random_colour(rng, 10, 120),
                      int(rng.integers(2, 7)))
        if rng.random() < 0.5:  # window cross
            cv2.line(img, (x + rw // 2, y), (x + rw // 2, y + rh), (60.0, 60.0, 60.0), 3)
            cv2.line(img, (x, y + rh // 2), (x + rw, y + rh // 2), (60.0, 60.0, 60.0), 3)
    return img


def _street(rng, h, w) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    sky = np.array(_bgr((rng.uniform(120, 200), rng.uniform(160, 220), rng.uniform(200, 255))))
    ramp = np.linspace(0.75, 1.05, h, dtype=np.float32)[:, None, None]
    img[:] = np.minimum(255.0, sky * ramp)
    horizon = int(h * rng.uniform(0.5, 0.8))
    x = int(rng.integers(-30, 0))
    while x < w:  # buildings with window grids
        bw, top = int(rng.integers(40, 160)), int(rng.integers(0, horizon - 10))
        colour = _random_colour(rng, 50, 200)
        cv2.rectangle(img, (x, top), (x + bw, horizon), colour, -1)
        win = _scale(colour, rng.uniform(0.4, 0.7))
        step = int(rng.integers(14, 26))
        for wy in range(top + 8, horizon - 10, step):
            for wx in range(x + 6, x + bw - 10, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), win, -1)
        x += bw + int(rng.integers(0, 20))
    img[horizon:] = _low_frequency(rng, h - horizon, w, 5, (95, 95, 100), 20)
    for xs in range(int(rng.integers(0, 40)), w, 80):  # lane marks
        y = horizon + (h - horizon) // 2
        cv2.line(img, (xs, y), (xs + 40, y), (220.0, 220.0, 220.0), 3)
    return img


def _scatter_shapes(rng, img, n) -> None:
    """Clutter: random lines, rectangles, circles and zigzags over the background."""
    h, w = img.shape[:2]
    for _ in range(n):
        colour, kind = _random_colour(rng, 0, 256), rng.integers(5)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(8, max(9, min(h, w) // 3)))
        thick = int(rng.choice([-1, 1, 2, 3])) if kind in (1, 2) else int(rng.integers(1, 5))
        if kind == 0:
            cv2.line(img, (x, y), (x + int(rng.integers(-size, size)),
                                   y + int(rng.integers(-size, size))), colour, thick, cv2.LINE_AA)
        elif kind == 1:
            corner = (x + size, y + int(size * rng.uniform(0.3, 2)))
            cv2.rectangle(img, (x, y), corner, colour, thick)
        elif kind == 2:
            cv2.circle(img, (x, y), size // 2, colour, thick, cv2.LINE_AA)
        elif kind == 3:
            pts = np.stack([x + np.arange(6) * size // 5,
                            y + rng.integers(-size // 4 - 1, size // 4 + 1, 6)], 1)
            cv2.polylines(img, [pts.astype(np.int32)], False, colour, thick, cv2.LINE_AA)
        else:
            cv2.ellipse(img, (x, y), (size // 2, size // 4), float(rng.uniform(0, 180)),
                        0, float(rng.uniform(90, 360)), colour, thick, cv2.LINE_AA)


def _background(rng, h, w, event) -> np.ndarray:
    kind = event.split("--")[1]
    if kind == "Gradient":
        img = _gradient(rng, h, w) * 0.7 + _low_frequency(rng, h, w, 4, (128, 128, 128), 60) * 0.3
        shapes = rng.integers(4, 15)
    elif kind == "Clutter":
        img = _low_frequency(rng, h, w, 6, _random_colour(rng, 60, 200), 70)
        shapes = rng.integers(25, 60)
    elif kind == "Texture":
        img = _texture(rng, h, w)
        shapes = rng.integers(0, 10)
    elif kind == "Indoor":
        img = _indoor(rng, h, w)
        shapes = rng.integers(3, 12)
    else:
        img = _street(rng, h, w)
        shapes = rng.integers(2, 10)
    _scatter_shapes(rng, img, int(shapes))
    return img


# --- faces ------------------------------------------------------------------------------


class _Face(NamedTuple):
    cx: float
    cy: float
    a: float  # half width of the head ellipse before roll
    b: float  # half height
    angle: float  # roll, degrees
    box: Tuple[int, int, int, int]  # x1, y1, x2, y2 of the rolled ellipse

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of `box`."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


def _face_box(cx, cy, a, b, angle) -> Tuple[int, int, int, int]:
    t = math.radians(angle)
    hw = math.sqrt((a * math.cos(t)) ** 2 + (b * math.sin(t)) ** 2)
    hh = math.sqrt((a * math.sin(t)) ** 2 + (b * math.cos(t)) ** 2)
    return (int(round(cx - hw)), int(round(cy - hh)), int(round(cx + hw)), int(round(cy + hh)))


def _plan_faces(rng, h, w) -> List[_Face]:
    """Sizes and places for this image's faces, spread so a grid detector can learn each."""
    count = int(rng.choice(len(_COUNT_P), p=_COUNT_P / _COUNT_P.sum()))
    # Sizes follow the longer side, which the letterbox resize maps onto the input side: the
    # bulk starts at BULK_FACE_FRACTION of it (about 11 px of a 224 input) whatever the image.
    smallest = max(MIN_VALID_FACE + 1.0, BULK_FACE_FRACTION * max(h, w))
    largest = max(smallest * 1.2, _MAX_FRACTION_BY_COUNT[count] * min(h, w))
    widths = []
    for _ in range(count):
        u = rng.random()
        if u < 0.03:
            widths.append(rng.uniform(4.0, 7.5))  # tiny: marked invalid
        elif u < 0.09:
            widths.append(rng.uniform(MIN_VALID_FACE, smallest))
        else:
            widths.append(math.exp(rng.uniform(math.log(smallest), math.log(largest))))
    # Grid geometry of the default network input after the letterbox resize.
    config = Config()
    letterbox = InputMapping.fit(w, h, config.input_size)
    cell = config.input_size / config.grid_size
    min_distance = _MIN_CELL_DISTANCE * cell / letterbox.scale_x

    faces: List[_Face] = []
    cells = set()
    for width in sorted(widths, reverse=True):  # big faces first: they are hardest to fit
        a = width / 2
        b = a * rng.uniform(1.18, 1.38)
        roll = float(np.clip(rng.normal(0, 7), -18, 18))
        if rng.random() < 0.05:
            roll = float(rng.choice([-1, 1]) * rng.uniform(22, 35))
        may_overlap = rng.random() < 0.03
        for _ in range(40):
            cx, cy = rng.uniform(a + 2, w - a - 2), rng.uniform(b + 2, h - b - 2)
            box = _face_box(cx, cy, a, b, roll)
            if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
                continue
            ix, iy, _, _ = letterbox.to_input(np.array([[cx, cy, cx, cy]]))[0]
            grid_cell = (int(iy // cell), int(ix // cell))
            if grid_cell in cells:
                continue
            if any(math.hypot(cx - f.cx, cy - f.cy) < min_distance for f in faces):
                continue
            if not may_overlap and any(_overlaps(box, f.box, 4) for f in faces):
                continue
            faces.append(_Face(cx, cy, a, b, roll, box))
            cells.add(grid_cell)
            break
    # Draw from the top of the image down: lower (nearer) people stand in front.
    return sorted(faces, key=lambda f: f.cy)


def _overlaps(b1, b2, margin) -> bool:
    """Whether corner boxes b1 and b2 come closer than `margin` pixels."""
    return not (b1[2] + margin <= b2[0] or b2[2] + margin <= b1[0]
                or b1[3] + margin <= b2[1] or b2[3] + margin <= b1[1])


def _skin(rng) -> Tuple[float, float, float]:
    i = rng.integers(len(_SKIN_RGB) - 1)
    rgb = _SKIN_RGB[i] + rng.random() * (_SKIN_RGB[i + 1] - _SKIN_RGB[i]) + rng.uniform(-6, 6, 3)
    return _bgr(np.clip(rgb, 0, 255))


def _draw_person(img, label, face: _Face, index: int, rng) -> dict:
    """Draw body, head and features of one face; returns its attribute flags so far.

    `label` is a uint8 map of which face owns each pixel (index + 1; 0 for nothing or an
    occluder): the occluded fraction of each face is read from it at the end. The parts
    draw from `rng` in a fixed order (the demo dataset is a function of its seed).
    """
    a, b = face.a, face.b
    p = _Painter(img, face.cx, face.cy, face.angle)
    lp = _Painter(label, face.cx, face.cy, face.angle, cv2.LINE_8)
    skin = _skin(rng)
    hair = _bgr(_HAIR_RGB[rng.choice(len(_HAIR_RGB), p=_HAIR_P)] * rng.uniform(0.85, 1.1))
    style = rng.choice(["short", "long", "bald", "hat"], p=[0.5, 0.3, 0.08, 0.12])
    yaw = float(np.clip(rng.normal(0, 0.08), -0.3, 0.3))
    flags = {"expression": 0, "pose": int(abs(face.angle) > 25 or abs(yaw) > 0.22)}
    _draw_behind_head(p, lp, a, b, skin, hair, style, rng)
    _draw_head(p, lp, a, b, skin, hair, style, index, rng)
    shift = yaw * a  # features move sideways with the yaw
    eye_y = _draw_eyes(p, a, b, skin, hair, style, shift, yaw, rng)
    flags["expression"] = _draw_nose_and_mouth(p, a, b, skin, hair, style, shift, eye_y, rng)
    return flags


def _draw_behind_head(p, lp, a, b, skin, hair, style, rng) -> None:
    """Back hair, neck and shoulders: everything behind the face hides earlier faces too
    (drawn 0 into the label map)."""
    if style == "long":
        p.ellipse(0, 0.12 * b, 1.12 * a, 1.0 * b, hair)
        lp.ellipse(0, 0.12 * b, 1.12 * a, 1.0 * b, 0)
    if style in ("short", "long"):
        p.ellipse(0, -0.12 * b, 1.06 * a, 0.98 * b, hair)
        lp.ellipse(0, -0.12 * b, 1.06 * a, 0.98 * b, 0)
    if rng.random() < 0.85:
        neck = [(-0.36 * a, 0.6 * b), (0.36 * a, 0.6 * b), (0.4 * a, b + 0.6 * a),
                (-0.4 * a, b + 0.6 * a)]
        p.polygon(neck, _scale(skin, 0.85))
        lp.polygon(neck, 0)
        clothes = _random_colour(rng, 15, 230)
        p.ellipse(0, b + 1.35 * a, 2.0 * a, 0.95 * a, clothes)
        lp.ellipse(0, b + 1.35 * a, 2.0 * a, 0.95 * a, 0)
        if rng.random() < 0.5:  # collar
            p.polygon([(-0.4 * a, b + 0.42 * a), (0.4 * a, b + 0.42 * a), (0, b + 0.9 * a)],
                      _scale(skin, 0.85))


def _draw_head(p, lp, a, b, skin, hair, style, index: int, rng) -> None:
    """The head, the ellipse whose tight box is the annotation (face `index` + 1 in the
    label map), then the hat or the hair over it."""
    p.ellipse(0, 0, a, b, skin)
    if rng.random() < 0.6:  # side shading gives the head some volume
        side = rng.choice([-1, 1])
        p.ellipse(side * 0.55 * a, 0.1 * b, 0.45 * a, 0.85 * b, _scale(skin, 0.9))
        p.ellipse(-side * 0.08 * a, 0, 0.9 * a, 0.98 * b, skin)
    lp.ellipse(0, 0, a, b, index + 1)

    if style == "hat":
        hat = _random_colour(rng, 10, 220)
        p.ellipse(0, -0.62 * b, 0.95 * a, 0.6 * b, hat, start=180, end=360)
        p.ellipse(0, -0.62 * b, 1.25 * a, 0.13 * b, _scale(hat, 0.8))
    elif style != "bald":
        hairline = rng.uniform(0.38, 0.62)
        p.ellipse(0, -hairline * b, 1.02 * a * math.sqrt(1 - hairline ** 2),
                  (1.04 - hairline) * b, hair, angle=float(rng.uniform(-12, 12)),
                  start=180, end=360)
        if style == "long":
            for side in (-1, 1):
                p.ellipse(side * 0.9 * a, -0.15 * b, 0.2 * a, 0.55 * b, hair)


def _draw_eyes(p, a, b, skin, hair, style, shift: float, yaw: float, rng) -> float:
    """Brows, eyes (open or closed; the far one narrower) and sometimes glasses; returns
    the eyes' height (head frame)."""
    eye_y = rng.uniform(-0.16, -0.02) * b
    eye_dx = rng.uniform(0.34, 0.42) * a
    dark = _scale(skin, 0.6)
    brow = _scale(hair, 0.8) if style != "bald" else _scale(skin, 0.5)
    iris = _bgr(_IRIS_RGB[rng.integers(len(_IRIS_RGB))])
    line = _line_width(a)
    closed = rng.random() < 0.05
    for side in (-1, 1):
        ex = side * eye_dx + shift
        narrow = 1.0 - 0.8 * max(0.0, side * -yaw)  # the far eye looks narrower
        p.ellipse(ex, eye_y - 0.2 * b, 0.21 * a * narrow, 0.08 * a, brow, start=200, end=340,
                  thickness=max(1, int(round(0.07 * a))))
        if closed:
            p.ellipse(ex, eye_y, 0.17 * a * narrow, 0.06 * a, dark, start=0, end=180,
                      thickness=line)
            continue
        p.ellipse(ex, eye_y, 0.19 * a * narrow, 0.105 * a, (238.0, 240.0, 242.0))
        gaze = ex + 0.4 * shift
        p.ellipse(gaze, eye_y, 0.085 * a * narrow, 0.085 * a, iris)
        p.ellipse(gaze, eye_y, 0.042 * a * narrow, 0.042 * a, (15.0, 15.0, 15.0))
        if a > 14:
            p.ellipse(gaze + 0.025 * a, eye_y - 0.025 * a, 0.018 * a, 0.018 * a,
                      (250.0, 250.0, 250.0))
        p.ellipse(ex, eye_y, 0.2 * a * narrow, 0.11 * a, dark, start=190, end=350,
                  thickness=line)
    if rng.random() < 0.1:  # glasses
        frame = _random_colour(rng, 0, 120)
        for side in (-1, 1):
            p.ellipse(side * eye_dx + shift, eye_y, 0.24 * a, 0.17 * a, frame, thickness=line)
        p.polyline([(-eye_dx + 0.24 * a + shift, eye_y), (eye_dx - 0.24 * a + shift, eye_y)],
                   frame, line)
    return eye_y


def _draw_nose_and_mouth(p, a, b, skin, hair, style, shift: float, eye_y: float, rng) -> int:
    """Nose, sometimes a beard, the mouth (open, smiling or closed) and sometimes cheeks;
    returns WIDER's expression flag (1 for the open mouth)."""
    line = _line_width(a)
    nose_x = 1.3 * shift
    p.polyline([(nose_x, eye_y + 0.06 * b), (nose_x + 0.07 * a, 0.27 * b),
                (nose_x - 0.06 * a, 0.3 * b)], _scale(skin, 0.72), line)
    mouth_y = rng.uniform(0.5, 0.6) * b
    if rng.random() < 0.1 and style != "hat":  # beard
        p.ellipse(shift * 0.5, 0.38 * b, 0.94 * a, 0.62 * b, _scale(hair, 0.95), start=0, end=180)
    lips = _bgr(np.array(skin[::-1]) * np.array([0.85, 0.5, 0.5]))
    mouth = rng.random()
    expression = 0
    if mouth < 0.08:  # open mouth: exaggerated expression
        p.ellipse(shift, mouth_y + 0.03 * b, 0.22 * a, 0.16 * a, (40.0, 30.0, 90.0))
        p.ellipse(shift, mouth_y - 0.02 * b, 0.18 * a, 0.05 * a, (235.0, 235.0, 235.0))
        p.ellipse(shift, mouth_y + 0.03 * b, 0.23 * a, 0.17 * a, lips, thickness=line)
        expression = 1
    elif mouth < 0.6:  # smile
        p.ellipse(shift, mouth_y - 0.06 * a, 0.28 * a, 0.13 * a, lips, start=15, end=165,
                  thickness=max(1, int(round(0.07 * a))))
    else:  # closed lips
        p.ellipse(shift, mouth_y, 0.25 * a, 0.06 * a, lips)
    if rng.random() < 0.3:  # cheeks
        blush = _bgr(np.array(skin[::-1]) * np.array([1.0, 0.85, 0.85]))
        for side in (-1, 1):
            p.ellipse(side * 0.52 * a + shift, 0.22 * b, 0.13 * a, 0.08 * a, blush)
    return expression


def _line_width(a: float) -> int:
    """The features' line width, pixels, for a head of half-width `a`."""
    return max(1, int(round(0.05 * a)))


def _occlude(img, label, face: _Face, rng) -> None:
    """Put a hand, an object or a pole in front of part of the face."""
    (x, y), (w, h) = face.box[:2], face.size
    kind = rng.choice(["hand", "object", "pole"], p=[0.45, 0.35, 0.2])
    cover = rng.uniform(0.15, 0.85)  # rough fraction of the face to hide
    targets = (img, label)
    if kind == "hand":
        direction = rng.uniform(0, 2 * np.pi)
        reach = (1.0 - cover) * 0.9 * w
        hx, hy = face.cx + reach * math.cos(direction), face.cy + reach * math.sin(direction)
        pw = w * rng.uniform(0.32, 0.45)
        tilt = float(rng.uniform(-40, 40))
        skin = _skin(rng)
        shapes = [_ellipse_points(hx, hy, pw * 0.8, pw, tilt)]
        up = math.radians(tilt - 90)
        for k, offset in enumerate((-0.54, -0.18, 0.18, 0.54)):  # fingers point "up"
            fx = hx + offset * pw * math.cos(math.radians(tilt)) + 1.2 * pw * math.cos(up)
            fy = hy + offset * pw * math.sin(math.radians(tilt)) + 1.2 * pw * math.sin(up)
            length = pw * (0.55 if k in (0, 3) else 0.65)
            shapes.append(_ellipse_points(fx, fy, 0.17 * pw, length, tilt))
        tx = hx + 0.85 * pw * math.cos(math.radians(tilt + 150))
        ty = hy + 0.85 * pw * math.sin(math.radians(tilt + 150))
        shapes.append(_ellipse_points(tx, ty, 0.5 * pw, 0.18 * pw, tilt - 30))  # thumb
        _fill(targets, shapes, skin)
        cv2.polylines(img, [np.round(s * _ONE).astype(np.int32) for s in shapes[1:]], True,
                      _scale(skin, 0.7), 1, cv2.LINE_AA, _SHIFT)
    elif kind == "object":
        side = rng.choice(["left", "right", "bottom", "top"], p=[0.3, 0.3, 0.3, 0.1])
        ext = rng.uniform(0.2, 0.6)
        if side == "left":
            x1, x2, y1, y2 = x - ext * w, x + cover * w, y - ext * h, y + h * (1 + ext)
        elif side == "right":
            x1, x2, y1, y2 = x + (1 - cover) * w, x + w * (1 + ext), y - ext * h, y + h * (1 + ext)
        elif side == "bottom":
            x1, x2, y1, y2 = x - ext * w, x + w * (1 + ext), y + (1 - cover) * h, y + h * (1 + ext)
        else:
            x1, x2, y1, y2 = x - ext * w, x + w * (1 + ext), y - ext * h, y + cover * h
        corners = np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], np.float64)
        t = math.radians(rng.uniform(-15, 15))
        centre = corners.mean(0)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        corners = (corners - centre) @ rot.T + centre
        colour = _random_colour(rng)
        _fill(targets, [corners], colour)
        cv2.polylines(img, [np.round(corners * _ONE).astype(np.int32)], True,
                      _scale(colour, 0.6), 1, cv2.LINE_AA, _SHIFT)
    else:
        half = cover * w * 0.35
        px = face.cx + rng.uniform(-0.4, 0.4) * w
        t = math.radians(rng.uniform(-20, 20))
        dx, dy = math.sin(t) * 2 * h, math.cos(t) * 2 * h
        corners = np.array([(px - half - dx, face.cy - dy), (px + half - dx, face.cy - dy),
                            (px + half + dx, face.cy + dy), (px - half + dx, face.cy + dy)])
        _fill(targets, [corners], _random_colour(rng, 20, 200))


def _soft_mask(shape, face: _Face, x0, y0, feather) -> np.ndarray:
    """(h, w, 1) float32 mask of the head and hair inside a crop at (x0, y0), feathered."""
    mask = np.zeros(shape[:2], np.float32)
    c = (_fx(face.cx - x0), _fx(face.cy - y0 - 0.1 * face.b))
    cv2.ellipse(mask, c, (_fx(1.15 * face.a), _fx(1.2 * face.b)), face.angle, 0, 360, 1.0, -1,
                cv2.LINE_AA, _SHIFT)
    return cv2.GaussianBlur(mask, (0, 0), feather)[..., None]


def _crop(img, face: _Face, margin: float):
    (x, y), (w, h) = face.box[:2], face.size
    x0, y0 = max(0, int(x - margin * w)), max(0, int(y - margin * h))
    x1 = min(img.shape[1], int(x + w * (1 + margin)) + 1)
    y1 = min(img.shape[0], int(y + h * (1 + margin)) + 1)
    return x0, y0, x1, y1


def _blur_face(img, face: _Face, level: int) -> None:
    sigma = (0.03 * face.a * 2 + 0.6) if level == 1 else (0.07 * face.a * 2 + 1.2)
    x0, y0, x1, y1 = _crop(img, face, 0.4)
    roi = img[y0:y1, x0:x1]
    mask = _soft_mask(roi.shape, face, x0, y0, max(1.0, sigma))
    blurred = cv2.GaussianBlur(roi, (0, 0), sigma)
    roi[:] = roi * (1 - mask) + blurred * mask


def _light_face(img, face: _Face, gain: float) -> None:
    x0, y0, x1, y1 = _crop(img, face, 0.3)
    roi = img[y0:y1, x0:x1]
    mask = _soft_mask(roi.shape, face, x0, y0, max(1.0, 0.2 * face.a))
    roi[:] = np.minimum(255.0, roi * (1 + (gain - 1) * mask))


# --- distractors -------------------------------------------------------------------------


def _draw_distractor(img, rng, x, y, size) -> None:
    """Things a detector must learn are not faces."""
    kind = rng.choice(["skin", "head_back", "eyes", "ball", "clock", "wheel"],
                      p=[0.25, 0.12, 0.2, 0.18, 0.13, 0.12])
    p = _Painter(img, x, y, float(rng.uniform(-30, 30)))
    r = size / 2
    if kind == "skin":  # a face without features
        p.ellipse(0, 0, r, r * rng.uniform(1.0, 1.4), _skin(rng))
    elif kind == "head_back":  # a head seen from behind: hair, no face
        hair = _bgr(_HAIR_RGB[rng.integers(7)])
        p.ellipse(0, r * 1.2 + r * 0.9, r * 2, r * 0.9, _random_colour(rng))
        p.ellipse(0, 0, r, r * 1.25, hair)
    elif kind == "eyes":  # an eye-like pair without a head
        for side in (-1, 1):
            p.ellipse(side * r * 0.5, 0, r * 0.3, r * 0.17, (235.0, 238.0, 240.0))
            p.ellipse(side * r * 0.5, 0, r * 0.13, r * 0.13, (20.0, 20.0, 20.0))
    elif kind == "ball":
        colour = _random_colour(rng)
        p.ellipse(0, 0, r, r, colour)
        p.ellipse(-0.35 * r, -0.35 * r, 0.25 * r, 0.2 * r, _scale(colour, 1.5))
    elif kind == "clock":
        p.ellipse(0, 0, r, r, (240.0, 240.0, 240.0))
        p.ellipse(0, 0, r, r, (30.0, 30.0, 30.0), thickness=max(1, int(r * 0.1)))
        p.polyline([(0, -0.7 * r), (0, 0), (0.5 * r, 0.2 * r)], (20.0, 20.0, 20.0),
                   max(1, int(r * 0.07)))
    else:
        p.ellipse(0, 0, r, r, (30.0, 30.0, 30.0), thickness=max(2, int(r * 0.3)))
        p.ellipse(0, 0, r * 0.3, r * 0.3, (170.0, 170.0, 175.0))


# --- one image ---------------------------------------------------------------------------


def synthesize_image(rng: np.random.Generator) -> SyntheticImage:
    """Draw one scene with faces from the random stream `rng` (see the module docstring)."""
    w = int(rng.integers(320, 641))
    h = int(np.clip(round(w / math.exp(rng.uniform(math.log(0.6), math.log(1.6)))), 200, 720))
    event = EVENTS[rng.integers(len(EVENTS))]
    img = _background(rng, h, w, event)
    faces = _plan_faces(rng, h, w)

    # Distractors go where no face is, so they never hide one.
    for _ in range(min(4, int(rng.poisson(1.3)))):
        size = math.exp(rng.uniform(math.log(14), math.log(max(15, 0.3 * min(h, w)))))
        for _ in range(20):
            x, y = rng.uniform(size, w - size), rng.uniform(size, h - size)
            x1, y1, side = int(x - size), int(y - size), int(2 * size)
            if not any(_overlaps((x1, y1, x1 + side, y1 + side), f.box, 4) for f in faces):
                _draw_distractor(img, rng, x, y, size)
                break

    label = np.zeros((h, w), np.uint8)
    areas, flags = [], []
    for i, face in enumerate(faces):
        f = _draw_person(img, label, face, i, rng)
        x1, y1, x2, y2 = face.box
        areas.append(max(1, int(np.count_nonzero(label[y1:y2 + 1, x1:x2 + 1] == i + 1))))
        f["blur"] = int(rng.choice(3, p=[0.7, 0.2, 0.1]))
        if f["blur"]:
            _blur_face(img, face, f["blur"])
        f["illumination"] = int(rng.random() < 0.05)
        if f["illumination"]:
            _light_face(img, face, rng.choice([rng.uniform(0.3, 0.5), rng.uniform(1.5, 1.9)]))
        if rng.random() < 0.18:
            _occlude(img, label, face, rng)
        flags.append(f)

    # Whole-image camera response: gain, offset (saturating; every value drawn is >= 0, so
    # the absolute value convertScaleAbs takes changes nothing) and sensor noise.
    image = cv2.convertScaleAbs(img, alpha=rng.uniform(0.8, 1.1), beta=rng.uniform(0, 20))
    amplitude = int(rng.integers(2, 8))
    noise = rng.integers(-amplitude, amplitude + 1, (h, w), dtype=np.int16)
    image = cv2.add(image, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)

    boxes = np.array([f.box for f in faces], np.int32).reshape(-1, 4)
    attributes = np.zeros((len(faces), 6), np.int32)
    for i, (face, f) in enumerate(zip(faces, flags)):
        (x1, y1, x2, y2), (bw, bh) = face.box, face.size
        visible = np.count_nonzero(label[y1:y2 + 1, x1:x2 + 1] == i + 1) / areas[i]
        occluded = 1.0 - visible
        occlusion = 0 if occluded < 0.05 else (1 if occluded < 0.35 else 2)
        invalid = int(min(bw, bh) < TINY_FACE or occluded > INVALID_OCCLUSION)
        attributes[i] = (f["blur"], f["expression"], f["illumination"], invalid, occlusion,
                         f["pose"])
    return SyntheticImage(image, boxes, attributes, event)


# --- the dataset -------------------------------------------------------------------------


_DEMO_NAME = re.compile(r"^\d+_[A-Za-z]+_demo_\d+\.jpg$")


def _remove_stale_images(directory: str, keep: set) -> None:
    """Delete demo images of an earlier, larger generation that the new lists do not name."""
    for event in EVENTS:
        folder = os.path.join(directory, event)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if _DEMO_NAME.match(name) and f"{event}/{name}" not in keep:
                os.remove(os.path.join(folder, name))


def _parameters(num_train: int, num_val: int, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "num_train": num_train,
            "num_val": num_val, "seed": seed}


def demo_folder_problem(root: str) -> Optional[str]:
    """Why `root` is not a folder the demo generator may write into, or None: it is
    missing, empty, a complete demo set (its marker) or holds only files a demo
    generation writes (an interrupted one). Else the first other file, which a new
    generation could replace or delete (a user's photo named like a demo image was)."""
    if not os.path.exists(root):
        return None
    if not os.path.isdir(root):
        return f"{root}: is a file, not a folder"
    if read_marker(root) is not None:
        return None
    annotations = {os.path.basename(wider_split_paths(root, s)[1]) for s in SPLITS}
    for folder, _, files in os.walk(root):
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in files:
            if name.startswith("."):
                continue  # the marker and the temporaries of atomic writes
            demo = (
                (rel == "wider_face_split" and name in annotations)
                or (any(rel == f"WIDER_{s}/images/{e}" for s in SPLITS for e in EVENTS)
                    and _DEMO_NAME.match(name))
            )
            if not demo:
                return (f"{root}: not empty and not a demo set (it holds "
                        f"{os.path.join(folder, name)}); the demo would replace its images: "
                        f"choose an empty folder, or overwrite=True (make_demo.py --overwrite)")
    return None


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name}={value!r}: must be a non-negative integer")
    return int(value)


def make_demo_dataset(
    root: str = DEMO_ROOT,
    num_train: int = DEMO_TRAIN_IMAGES,
    num_val: int = DEMO_VAL_IMAGES,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write the demo dataset under `root` (WIDER layout) and return its counts.

    A `root` holding anything but a demo set is refused (DatasetError) unless
    `overwrite`: the generator replaces and deletes demo-named images
    (`demo_folder_problem`).

    The marker `root/.complete` is removed first and written last, so an interrupted run is
    never taken for a complete set. Images of an earlier, larger run are removed.

    Returns:
        {"train": {"images", "faces", "invalid"}, "val": {...}}: images written, faces
        annotated, and how many of those faces are marked invalid.
    """
    sizes = {"train": _check_count("num_train", num_train), "val": _check_count("num_val", num_val)}
    seed = _check_count("seed", seed)
    if seed > SEED_MAX:  # the range train.py accepts (Config.seed): one seed works in both
        raise ConfigError(f"seed={seed}: must be in [0, {SEED_MAX}]")
    if not str(root).strip():
        raise ConfigError(f"root={root!r}: empty; it would write into the current folder")
    problem = None if overwrite else demo_folder_problem(root)
    if problem:
        raise DatasetError(problem)
    marker = os.path.join(root, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    counts = {}
    with tqdm(total=sum(sizes.values()), desc="demo dataset", unit="img",
              disable=not progress) as bar:
        for split_code, split in enumerate(SPLITS):
            directory, annotations = wider_split_paths(root, split)
            records = []
            for index in range(sizes[split]):
                sample = synthesize_image(np.random.default_rng([seed, split_code, index]))
                number, kind = sample.event.split("--")
                name = f"{sample.event}/{number}_{kind}_demo_{index}.jpg"
                path = os.path.join(directory, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                ok, data = cv2.imencode(".jpg", sample.image,
                                        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise ImageError(f"{path}: OpenCV could not encode the image as JPEG")
                # A plain write: the marker, written last, is what vouches for the set.
                with open(path, "wb") as f:
                    f.write(data.tobytes())
                records.append(ImageRecord(
                    path=path, name=name, boxes=sample.boxes, ignore=sample.attributes[:, 3] > 0,
                    attributes=sample.attributes,
                ))
                bar.update(1)
            # Grouped by event, as the official lists are.
            records.sort(key=lambda r: (r.name.split("/")[0], int(r.name[:-4].rsplit("_", 1)[1])))
            write_wider_annotations(records, annotations)
            _remove_stale_images(directory, {r.name for r in records})
            counts[split] = {
                "images": len(records),
                "faces": int(sum(len(r.boxes) for r in records)),
                "invalid": int(sum(int(r.ignore.sum()) for r in records)),
            }
    atomic_write_text(marker, json.dumps({**_parameters(sizes["train"], sizes["val"], seed),
                                          "counts": counts}, indent=2, sort_keys=True) + "\n")
    return counts


def read_marker(root: str) -> Optional[dict]:
    """The marker of a complete demo set under `root`, or None if missing or unreadable."""
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def ensure_demo_dataset(
    root: str = DEMO_ROOT,
    num_train: int = DEMO_TRAIN_IMAGES,
    num_val: int = DEMO_VAL_IMAGES,
    seed: int = 0,
    progress: bool = True,
) -> str:
    """Generate the demo set unless a complete one with these parameters is there; return root."""
    wanted = _parameters(_check_count("num_train", num_train), _check_count("num_val", num_val),
                         _check_count("seed", seed))
    marker = read_marker(root)
    complete = (
        marker is not None
        and all(marker.get(k) == v for k, v in wanted.items())
        and all(os.path.isfile(wider_split_paths(root, s)[1]) for s in SPLITS)
    )
    if not complete:
        make_demo_dataset(root, num_train, num_val, seed, progress)
    return root
