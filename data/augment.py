"""Box-exact augmentation of one image, loaded at reduced JPEG size where that loses nothing.

One training sample goes, in `load_training_sample`:

    JPEG header (size only) -> plan: crop window, flip, photometric jitter
    -> decode at 1/2, 1/4 or 1/8 when the crop will be shrunk at least that much anyway
    -> crop -> flip -> ONE letterbox resize of the crop to the (S, S) input -> jitter
    -> boxes mapped by the same arithmetic into input pixels.

Face rules, the same in every mode:
- boxes are clipped to the image (WIDER boxes may reach outside it); zero-size boxes are
  dropped.
- a crop keeps the faces whose centre lies inside it; a face cut by the crop is clipped
  to it, and marked ignore when it keeps less than `spec.min_visible_fraction` of its
  area (a half face is neither a face to learn nor background to penalise).
- a face whose SMALLER side is under `spec.min_face_size` input pixels is marked
  ignore: both sides must reach the minimum for a face to be learned, because a face a
  few pixels wide carries no signal whatever its height.
Validation (and training with `spec.augment` off) is deterministic: the whole image,
no flip, no jitter; only the clipping, the letterbox and the min-size rule.

Landmarks. Asked for (`with_points`, `points=`), each face's points (N, 6, 2): its five
landmarks and mouth centre (`data.landmarks.face_points`, POINT_NAMES; NaN where absent)
go through every geometric step with their box, by the boxes' arithmetic: the crop's
offset, the reduced decode's scale, the flip (which also swaps right and left points,
`data.landmarks.flip_points`), the letterbox or stretch resize, the mosaic's tile scale
and offset. Points are never clipped: a point outside the crop or input keeps its
coordinates (the face's box alone decides whether the face is kept), and the points of a
dropped face are dropped with it. Without the request the functions return what they
always did, (image, boxes, ignore).

The augmentation strengths (crop, flip and jitter chances, jitter ranges) and the face
rules are `AugmentSpec`, derived from Config's fields of the same names in config.py's
data section, so every one is a flag of train.py; the input size and letterbox or
stretch are the grid's (`data.grid.GridSpec`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from config import Config
from data.boxes import InputMapping, box_sizes, clip_boxes, content_size
from data.grid import GridSpec
from data.image import MAX_IMAGE_PIXELS, resize_to_input, read_image, read_image_size
from data.landmarks import face_points, flip_points
from data.records import ImageRecord

REDUCTIONS = (8, 4, 2)  # JPEG DCT-domain reductions OpenCV offers
# Only JPEGs decode faster at reduced size; OpenCV decodes other formats in full and
# then resizes, which would only add a second, coarser resize.
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")


@dataclass(frozen=True)
class AugmentPlan:
    """What to do to one image, decided before it is decoded.

    The crop window is in the pixels of the image file (it may be fractional). Jitter
    values at their defaults leave the image unchanged.
    """

    x: float
    y: float
    width: float
    height: float
    flip: bool = False
    brightness: float = 0.0  # added to every channel, 0-255 scale
    contrast: float = 1.0  # factor around mid-grey
    saturation: float = 1.0  # factor on HSV saturation
    hue: int = 0  # shift in OpenCV hue units (2 degrees)

    @classmethod
    def whole(cls, width: float, height: float) -> "AugmentPlan":
        """The identity plan: the whole image, no flip, no jitter (validation)."""
        return cls(0.0, 0.0, float(width), float(height))


@dataclass(frozen=True)
class AugmentSpec:
    """The augmentation's part of the configuration: how a training sample is varied and
    which faces it learns. The same names and defaults as Config's fields (config.py's
    data section, where each is a flag of train.py and has its rule); derive it from a
    checked Config with `from_config`.

    Attributes:
        augment: vary training samples at all (crop, flip, jitter, mosaic).
        crop_prob, crop_min_scale, crop_max_scale, face_centred_prob: the square crop
            (`plan_augmentation`).
        min_visible_fraction: a face cut by the crop keeping less of its area is ignored.
        min_face_size: a face whose smaller side is under this many input pixels is ignored.
        mosaic_prob, mosaic_tiles: the n x n mosaic (`mosaic`).
        flip_prob, jitter_prob, brightness_delta, contrast_min, contrast_max,
            saturation_min, saturation_max, hue_delta: flip and colour jitter.
    """

    augment: bool = Config.augment
    crop_prob: float = Config.crop_prob
    crop_min_scale: float = Config.crop_min_scale
    crop_max_scale: float = Config.crop_max_scale
    face_centred_prob: float = Config.face_centred_prob
    min_visible_fraction: float = Config.min_visible_fraction
    min_face_size: float = Config.min_face_size
    mosaic_prob: float = Config.mosaic_prob
    mosaic_tiles: int = Config.mosaic_tiles
    flip_prob: float = Config.flip_prob
    jitter_prob: float = Config.jitter_prob
    brightness_delta: float = Config.brightness_delta
    contrast_min: float = Config.contrast_min
    contrast_max: float = Config.contrast_max
    saturation_min: float = Config.saturation_min
    saturation_max: float = Config.saturation_max
    hue_delta: int = Config.hue_delta

    @classmethod
    def from_config(cls, config: Config) -> "AugmentSpec":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def replace(self, **changes) -> "AugmentSpec":
        return dataclasses.replace(self, **changes)


def faces_in_image(record: ImageRecord, width: int, height: int, with_points: bool = False):
    """The record's faces clipped to a (width, height) image, zero-size ones dropped.

    Returns:
        (boxes (N, 4) float32 x1, y1, x2, y2 image pixels, ignore (N,) bool), and with
        `with_points` a third element, points (N, 6, 2) float32 image pixels (module doc;
        not clipped).
    """
    boxes = clip_boxes(record.boxes, width, height)
    keep = (box_sizes(boxes) > 0).all(axis=1)
    if with_points:
        return boxes[keep], record.ignore[keep], face_points(record)[keep]
    return boxes[keep], record.ignore[keep]


def _window_start(face_start, face_size, window, limit, rng) -> float:
    """Start of a window of `window` px inside [0, limit] holding the face (whole if it
    fits, else its centre), uniformly among the possible starts."""
    lo = max(0.0, face_start + face_size - window)
    hi = min(limit - window, face_start)
    if lo > hi:
        centre = face_start + face_size / 2
        lo, hi = max(0.0, centre - window), min(limit - window, centre)
    return float(rng.uniform(lo, hi)) if hi > lo else float(max(0.0, min(lo, limit - window)))


def plan_augmentation(
    width: int,
    height: int,
    boxes: np.ndarray,
    ignore: np.ndarray,
    rng: Optional[np.random.Generator],
    augment: bool,
    spec: AugmentSpec,
) -> AugmentPlan:
    """Choose the crop window, flip and jitter for an image of (width, height) pixels.

    Args:
        width, height: size of the image file, pixels.
        boxes: (N, 4) x1, y1, x2, y2 faces in image pixels, already clipped
            (`faces_in_image`).
        ignore: (N,) bool.
        rng: the sample's random generator (unused when `augment` is False).
        augment: False gives `AugmentPlan.whole` (validation).
        spec: the augmentation strengths. crop_prob: chance of a random crop, otherwise
            the whole image (still flipped and jittered). crop_min_scale, crop_max_scale:
            range of the square crop's side, as a fraction of the image's shorter side;
            above 1 the window reaches past the image, which then shrinks inside grey
            padding: a zoom out, so large faces are also seen small (SCRFD trains with 0.3
            to 2). face_centred_prob, flip_prob, jitter_prob and the jitter ranges
            (brightness_delta, contrast_*, saturation_*, hue_delta).
    """
    if not augment:
        return AugmentPlan.whole(width, height)
    flip = bool(rng.random() < spec.flip_prob)
    if rng.random() >= spec.crop_prob:
        x, y, w, h = 0.0, 0.0, float(width), float(height)
    else:
        short = float(min(width, height))
        side = float(rng.uniform(spec.crop_min_scale, spec.crop_max_scale)) * short
        faces = np.flatnonzero(~np.asarray(ignore, dtype=bool))
        if side > short:
            # Zoom out: the image lies somewhere inside the larger window.
            x = float(rng.uniform(min(0.0, width - side), max(0.0, width - side)))
            y = float(rng.uniform(min(0.0, height - side), max(0.0, height - side)))
        elif faces.size and rng.random() < spec.face_centred_prob:
            face = boxes[rng.choice(faces)]
            fx, fy = face[:2].tolist()
            fw, fh = box_sizes(face)[0].tolist()
            # Scale jitter, but never so tight that the chosen face is cut.
            side = min(max(side, fw, fh), short)
            x = _window_start(fx, fw, side, width, rng)
            y = _window_start(fy, fh, side, height, rng)
        else:
            x = float(rng.uniform(0.0, width - side))
            y = float(rng.uniform(0.0, height - side))
        w = h = side

    def maybe(draw):
        return draw() if rng.random() < spec.jitter_prob else None

    brightness = maybe(lambda: rng.uniform(-spec.brightness_delta, spec.brightness_delta))
    contrast = maybe(lambda: rng.uniform(spec.contrast_min, spec.contrast_max))
    saturation = maybe(lambda: rng.uniform(spec.saturation_min, spec.saturation_max))
    hue = maybe(lambda: rng.integers(-spec.hue_delta, spec.hue_delta + 1))
    return AugmentPlan(
        x, y, w, h, flip,
        brightness=float(brightness) if brightness is not None else 0.0,
        contrast=float(contrast) if contrast is not None else 1.0,
        saturation=float(saturation) if saturation is not None else 1.0,
        hue=int(hue) if hue is not None else 0,
    )


def choose_reduction(crop_width: float, crop_height: float, input_size: int, letterbox: bool) -> int:
    """Largest JPEG decode reduction (8, 4, 2, else 1) that still leaves the crop at least
    as many pixels as it gets in the network input, so reduced decoding loses nothing."""
    content_w, content_h = content_size(
        max(1, round(crop_width)), max(1, round(crop_height)), input_size, letterbox
    )
    for k in REDUCTIONS:
        if crop_width / k >= content_w and crop_height / k >= content_h:
            return k
    return 1


def photometric_jitter(image: np.ndarray, plan: AugmentPlan) -> np.ndarray:
    """Brightness / contrast / saturation / hue of a (H, W, 3) BGR uint8 image, as the
    plan says, through 256-entry lookup tables (cheap). Returns a new image, or `image`
    itself when the plan changes nothing. Grey pixels stay grey."""
    out = image
    if plan.hue or plan.saturation != 1.0:
        levels = np.arange(256, dtype=np.float32)
        lut = np.empty((1, 256, 3), dtype=np.uint8)
        lut[0, :, 0] = (np.arange(256) + plan.hue) % 180  # OpenCV 8-bit hue is 0..179
        lut[0, :, 1] = np.clip(np.rint(levels * plan.saturation), 0, 255)
        lut[0, :, 2] = np.arange(256)
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        out = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
    if plan.brightness or plan.contrast != 1.0:
        levels = np.arange(256, dtype=np.float32)
        lut = np.clip(np.rint((levels - 128.0) * plan.contrast + 128.0 + plan.brightness), 0, 255)
        out = cv2.LUT(out, lut.astype(np.uint8))
    return out


def augment_image(
    image: np.ndarray,
    boxes: np.ndarray,
    ignore: np.ndarray,
    plan: AugmentPlan,
    grid: GridSpec,
    spec: AugmentSpec,
    scale: float = 1.0,
    points: Optional[np.ndarray] = None,
):
    """Apply a plan to a decoded image: crop, flip, letterbox resize, jitter, min-size rule.

    Args:
        image: (H, W, 3) BGR uint8, possibly decoded at reduced size.
        boxes: (N, 4) x1, y1, x2, y2 faces in the pixels of the image FILE, clipped to it.
        ignore: (N,) bool.
        plan: from `plan_augmentation`, in the pixels of the image file.
        grid: the input size and letterbox or stretch (`data.grid.GridSpec`).
        spec: min_face_size and min_visible_fraction are used.
        scale: pixels of `image` per pixel of the file (1 / JPEG reduction).
        points: optional (N, K, 2) x, y points of each face in the pixels of the image
            file, K = 5 (landmarks) or 6 (with the mouth centre), NaN where absent.

    Returns:
        (image_input (S, S, 3) uint8 BGR, boxes_input (M, 4) float32 x1, y1, x2, y2
        input pixels, ignore (M,) bool), M <= N; with `points` a fourth element, the kept
        faces' points (M, K, 2) float32 in input pixels (flipped ones re-ordered).
    """
    x0, y0, x1, y1 = _crop_window(plan, scale, image.shape[1], image.shape[0])
    crop_w, crop_h = x1 - x0, y1 - y0
    crop = image[y0:y1, x0:x1]
    b, ign, p = _faces_in_crop(boxes, ignore, points, scale, x0, y0, crop_w, crop_h,
                               spec.min_visible_fraction)
    if plan.flip:
        crop = cv2.flip(crop, 1)
        b[:, [0, 2]] = crop_w - b[:, [2, 0]]
        if p is not None:
            p = flip_points(p, crop_w)  # the subject's right is now on the other side

    letterbox = _crop_mapping(plan, scale, x0, y0, crop_w, crop_h, grid)
    out = resize_to_input(crop, letterbox)
    _jitter_picture(out, letterbox, plan)
    if p is None:
        b, ign = faces_to_input(b, ign, letterbox, spec.min_face_size)
        return np.ascontiguousarray(out), b, ign
    b, ign, p = faces_to_input(b, ign, letterbox, spec.min_face_size, points=p)
    return np.ascontiguousarray(out), b, ign, p


def _crop_window(plan: AugmentPlan, scale: float, img_w: int, img_h: int):
    """The plan's crop as an integer window (x0, y0, x1, y1) of the decoded image, at least
    one pixel, inside it; boxes follow the same integer window, so they stay exact."""
    x0 = min(max(int(round(plan.x * scale)), 0), img_w - 1)
    y0 = min(max(int(round(plan.y * scale)), 0), img_h - 1)
    x1 = min(max(int(round((plan.x + plan.width) * scale)), x0 + 1), img_w)
    y1 = min(max(int(round((plan.y + plan.height) * scale)), y0 + 1), img_h)
    return x0, y0, x1, y1


def _faces_in_crop(boxes, ignore, points, scale: float, x0: int, y0: int, crop_w: int,
                   crop_h: int, min_visible_fraction: float):
    """The faces whose centre the crop holds, clipped to it, in its pixels: (boxes (M, 4)
    float32, ignore (M,) bool, points (M, K, 2) or None). A face with less than
    `min_visible_fraction` of its area inside becomes an ignore region."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32(scale)
    b -= np.array([x0, y0, x0, y0], dtype=np.float32)
    p = None
    if points is not None:
        p = np.asarray(points, dtype=np.float32)
        if p.ndim != 3 or len(p) != len(b):
            raise ValueError(f"points must be (N, K, 2) for the {len(b)} boxes, got shape {p.shape}")
        p = p * np.float32(scale) - np.array([x0, y0], dtype=np.float32)
    ign = np.asarray(ignore, dtype=bool).reshape(-1).copy()
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    inside = (cx >= 0) & (cx < crop_w) & (cy >= 0) & (cy < crop_h)
    visible = clip_boxes(b, crop_w, crop_h)
    area = box_sizes(b).prod(axis=1)
    visible_sizes = box_sizes(visible)
    kept_fraction = np.where(area > 0, visible_sizes.prod(axis=1) / np.maximum(area, 1e-12), 0)
    ign |= kept_fraction < min_visible_fraction
    keep = inside & (visible_sizes > 0).all(axis=1)
    return visible[keep], ign[keep], None if p is None else p[keep]


def _jitter_picture(out: np.ndarray, letterbox: InputMapping, plan: AugmentPlan) -> None:
    """Jitter the picture part of the resized input in place: the letterbox padding keeps
    its fixed grey."""
    px, py = int(letterbox.pad_x), int(letterbox.pad_y)
    content = out[py : py + letterbox.content_height, px : px + letterbox.content_width]
    jittered = photometric_jitter(content, plan)
    if jittered is not content:
        content[...] = jittered


def _crop_mapping(plan: AugmentPlan, scale: float, x0: int, y0: int, crop_w: int,
                    crop_h: int, grid: GridSpec) -> InputMapping:
    """How the crop maps onto the input: fitted to it, or, when the plan's window reaches
    past the image (a zoom out), shrunk to the window's scale and placed where the window
    puts it, the rest grey padding."""
    win_w, win_h = plan.width * scale, plan.height * scale
    if win_w <= crop_w + 1 and win_h <= crop_h + 1:
        return InputMapping.fit(crop_w, crop_h, grid.input_size, grid.letterbox)
    s = grid.input_size
    k = s / max(win_w, win_h)
    content_w = min(s, max(1, round(crop_w * k)))
    content_h = min(s, max(1, round(crop_h * k)))
    pad_x = min(max(int(round((x0 - plan.x * scale) * k)), 0), s - content_w)
    pad_y = min(max(int(round((y0 - plan.y * scale) * k)), 0), s - content_h)
    return InputMapping(content_w / crop_w, content_h / crop_h, float(pad_x), float(pad_y), s,
                     content_w, content_h, crop_w, crop_h)


def faces_to_input(boxes: np.ndarray, ignore: np.ndarray, mapping: InputMapping, min_face_size: float,
                   points: Optional[np.ndarray] = None):
    """Faces (N, 4) x1, y1, x2, y2 in the resized region's pixels -> network-input pixels.

    Clips to the input and applies the one minimum-size rule: a face whose smaller side is
    under `min_face_size` input pixels becomes ignore (not background).

    Returns:
        (boxes (N, 4) float32 x1, y1, x2, y2 input pixels, ignore (N,) bool), and with
        `points` ((N, K, 2) in the region's pixels) a third element, the points in input
        pixels (not clipped).
    """
    s = mapping.input_size
    boxes = clip_boxes(mapping.to_input(boxes), s, s)
    too_small = box_sizes(boxes).min(axis=1) < min_face_size
    faces = boxes.astype(np.float32), np.asarray(ignore, dtype=bool) | too_small
    if points is None:
        return faces
    return faces + (mapping.points_to_input(points),)


def load_training_sample(
    record: ImageRecord,
    grid: GridSpec,
    spec: AugmentSpec,
    rng: Optional[np.random.Generator],
    training: bool,
    max_pixels: int = MAX_IMAGE_PIXELS,
    with_points: bool = False,
):
    """Read one record's image and turn it into a network input and its faces.

    The crop is planned from the JPEG header's size (`data.image.read_image_size`) before
    decoding, so the JPEG can be decoded directly at 1/2, 1/4 or 1/8 size when the crop
    will be shrunk that much anyway (`choose_reduction`); other formats are decoded in
    full and planned on their pixels. Augmentation runs when `training` and
    `spec.augment`; otherwise the result is deterministic.

    Detection (`data.image.prepare_image`) decodes in full instead, on purpose: on the 200
    test photos at their original sizes the shipped model scored .507 / .291 / .100 from
    full decodes and .500 / .285 / .098 from these reduced ones (mostly 1/2;
    benchmarks/bench_input_paths.py, docs/benchmarks.md), so detection keeps the better
    path and training keeps the 2-3x cheaper decode, whose cost is under .01 AP.

    Args:
        record: the image and its faces (x1, y1, x2, y2 pixels of the file).
        grid: the input size and letterbox or stretch (`data.grid.GridSpec`).
        spec: the augmentation and the face rules (`AugmentSpec`).
        rng: the sample's random generator (may be None when not augmenting).
        training: True for the training pipeline.
        with_points: also return the faces' points (module doc).

    Returns:
        (image_input (S, S, 3) uint8 BGR, boxes_input (N, 4) float32 x1, y1, x2, y2
        input pixels, ignore (N,) bool), and with `with_points` a fourth element, points
        (N, 6, 2) float32 input pixels (`data.landmarks.POINT_NAMES`, NaN where absent).

    Raises:
        ImageError: the image is missing or cannot be decoded (the message names it).
    """
    augment = training and spec.augment
    if record.path.lower().endswith(JPEG_EXTENSIONS):
        # The size as the decoder will produce it (EXIF orientation applied), from the header.
        width, height = read_image_size(record.path)
        boxes, ignore, points = _faces(record, width, height, with_points)
        plan = plan_augmentation(width, height, boxes, ignore, rng, augment, spec)
        reduce = choose_reduction(plan.width, plan.height, grid.input_size, grid.letterbox)
        image = read_image(record.path, reduce, max_pixels=max_pixels)
        # libjpeg's scaled output is ceil(size / k), pixel i covering file pixels [k i, k i + k).
        if image.shape[:2] == (-(-height // reduce), -(-width // reduce)):
            return augment_image(image, boxes, ignore, plan, grid, spec, scale=1.0 / reduce,
                                 points=points)
        # Not what the header promised (not really a JPEG?): plan again on the real pixels.
        if reduce != 1:
            image = read_image(record.path, max_pixels=max_pixels)
    else:
        image = read_image(record.path, max_pixels=max_pixels)
    height, width = image.shape[:2]
    boxes, ignore, points = _faces(record, width, height, with_points)
    plan = plan_augmentation(width, height, boxes, ignore, rng, augment, spec)
    return augment_image(image, boxes, ignore, plan, grid, spec, points=points)


def _faces(record: ImageRecord, width: int, height: int, with_points: bool):
    """`faces_in_image` as (boxes, ignore, points or None)."""
    if with_points:
        return faces_in_image(record, width, height, with_points=True)
    return faces_in_image(record, width, height) + (None,)


def mosaic(tiles, input_size: int, min_face_size: float):
    """Compose n x n training samples into one input (YOLOv4's mosaic, on a regular grid).

    More faces per step, and each shrunk n times: a 2x2 mosaic shows the network faces at
    half the size its crops give, a 3x3 one at a third, the sizes of WIDER FACE's medium and
    hard faces. Tile (i, j) covers rows round(i S / n) .. round((i + 1) S / n) (likewise
    columns), so the tiles fill the input exactly whatever S / n is.

    Args:
        tiles: n * n samples in row-major order, each (image (S, S, 3) uint8, boxes (N, 4)
            float32 x1, y1, x2, y2 input pixels, ignore (N,) bool[, points (N, K, 2)
            input pixels]), as `load_training_sample` returns them; all with points or
            none.
        input_size: S.
        min_face_size: the one minimum-size rule, applied again after the shrink (a face
            under it in the mosaic is ignored, not background).

    Returns:
        (image (S, S, 3) uint8, boxes (M, 4) float32 input pixels, ignore (M,) bool): every
        tile's faces, in tile order, mapped by the tile's scale and offset; ignore regions
        stay ignore regions. With points, a fourth element: (M, K, 2) float32 input
        pixels, mapped likewise.
    """
    n = math.isqrt(len(tiles))
    if n < 2 or n * n != len(tiles):
        raise ValueError(f"mosaic: expected n * n tiles with n >= 2, got {len(tiles)}")
    with_points = len(tiles[0]) == 4
    if any(len(tile) != len(tiles[0]) for tile in tiles):
        raise ValueError("mosaic: tiles must all carry points or none")
    s = int(input_size)
    edges = [round(k * s / n) for k in range(n + 1)]
    canvas = np.empty((s, s, 3), dtype=np.uint8)
    all_boxes, all_ignore, all_points = [], [], []
    for index, tile in enumerate(tiles):
        image, boxes, ignore = tile[:3]
        i, j = divmod(index, n)
        y0, y1, x0, x1 = edges[i], edges[i + 1], edges[j], edges[j + 1]
        canvas[y0:y1, x0:x1] = cv2.resize(image, (x1 - x0, y1 - y0),
                                          interpolation=cv2.INTER_AREA)
        scale = np.float32([(x1 - x0) / s, (y1 - y0) / s] * 2)
        offset = np.float32([x0, y0] * 2)
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4) * scale + offset)
        all_ignore.append(np.asarray(ignore, bool).reshape(-1))
        if with_points:
            all_points.append(np.asarray(tile[3], np.float32) * scale[:2] + offset[:2])
    boxes = np.concatenate(all_boxes).astype(np.float32)
    ignore = np.concatenate(all_ignore)
    ignore = ignore | (box_sizes(boxes).min(axis=1) < min_face_size)
    if with_points:
        return canvas, boxes, ignore, np.concatenate(all_points).astype(np.float32)
    return canvas, boxes, ignore
