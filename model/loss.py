"""The grid loss: focal objectness on every labelled cell, box regression on every face cell.

    y_true (B, G, G, 5)  targets of `data.grid.encode_grid` (class 1 / 0 / -1 = ignore)
    y_pred (B, G, G, 5)  the network's sigmoid outputs, same channel order
    (or (B, N, 5) the cells of several grid levels, `data.grid.encode_levels`: the same
    terms, summed over every level's cells, divided by all levels' face cells)

    objectness = focal BCE summed over cells with class 0 or 1 (ignore cells excluded);
                 with `quality_scores` the face cells' target is the IoU of the predicted
                 box with the true one (quality focal loss, SCRFD; YuNet's IoU-aware BCE),
                 so a cell's score ranks how well its box fits, not only that a face is there
    box        = sum over face cells of
                 (1 - GIoU) + |sqrt h - sqrt h*| + |sqrt w - sqrt w*| + |yc - yc*| + |xc - xc*|
                 (with `iou_loss` "diou" or "eiou" the first term is the DIoU loss
                 1 - IoU + d^2 / c^2, d the centres' distance and c the enclosing box's
                 diagonal, or the EIoU loss, which adds (w - w*)^2 / cw^2 + (h - h*)^2 / ch^2,
                 cw, ch the enclosing box's sides: they pull centres and sides together
                 even where GIoU's enclosing-area term is flat)
    landmarks  = with landmarks (`Config.landmarks`: y_pred (..., 15), y_true (..., 17),
                 `data.grid`'s layout) the sum over face cells of the smooth L1 loss
                 (LANDMARK_BETA), or with `landmark_loss="wing"` the wing loss (WING_WIDTH,
                 WING_CURVATURE), of each present point's x and y offset (offsets from
                 the cell centre over the face size: scale-free, as the GIoU term); the
                 mouth centre of a face labelled with it (Caltech) is compared with the
                 MEAN of the two predicted mouth corners. Absent points (NaN targets) are
                 replaced before the difference, so they give exactly zero loss and zero
                 gradient; faces without points add nothing.
    loss       = objectness_loss_weight * objectness + box_loss_weight * box
                 (+ landmark_loss_weight * landmarks),
                 all divided by the number of face cells in the batch (at least 1)

Scale balance: 1 - GIoU depends only on the boxes' relative overlap, so a 5-px face
predicted 20% too large costs the same GIoU term as a 110-px face predicted 20% too large,
and the sqrt terms grow only with sqrt(size): the whole box term of the small face is
~0.76 of the large face's (tests/test_loss.py), where an L1 on h, w would make it 0.05.

`ObjectnessLoss`, `BoxLoss` (and `LandmarkLoss`) report the weighted terms as metrics
("obj_loss", "box_loss", "lmk_loss"); they sum to the loss. Without landmarks (5-channel
outputs) the landmark term is not computed at all: the loss is what it was.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from config import BOX_IOU_LOSSES, LANDMARK_LOSSES, Config
from data.grid import (CLASS, H, LANDMARK_CHANNELS, NUM_CHANNELS, W, XC, YC,
                       cell_box_corners, output_has_landmarks, point_channels)
from data.landmarks import LEFT_MOUTH, MOUTH_CENTRE, RIGHT_MOUTH

EPSILON = 1e-7  # probability clipping and sqrt offset
# Area denominators: tiny next to a 1-px face at 224 ((1/224)^2 = 2e-5), so a perfect
# box of a small face still has GIoU ~1.
AREA_EPSILON = 1e-9
# Smooth L1's switch from quadratic to linear, in the landmark offsets' units (fractions of
# the face size): mmdetection's default 1/9; an error of a ninth of the face is linear.
LANDMARK_BETA = 1.0 / 9.0
# Wing loss (Feng et al., CVPR 2018): w ln(1 + |x| / eps) under w, |x| - C above (C makes it
# continuous). PFLD's w = 10, eps = 2 px on 112-px crops, in fractions of the face size.
WING_WIDTH = 0.1
WING_CURVATURE = 0.02
PACKAGE = "face_detector"


@keras.saving.register_keras_serializable(package=PACKAGE)
class GridLoss(keras.losses.Loss):
    """Focal objectness + scale-balanced box loss on (B, G, G, 5) grids, or on the
    (B, N, 5) cells of several levels, whose sides (finest first) `grid_sizes` gives.

    Returns per-image values (B,) scaled so that the default mean over the batch equals
    (sum over the batch's cells) / max(face cells in the batch, 1): a crowded image and an
    image with one face contribute per face, as in RetinaNet.
    """

    def __init__(
        self,
        focal_gamma: float = Config.focal_gamma,
        focal_alpha: float = Config.focal_alpha,
        box_loss_weight: float = Config.box_loss_weight,
        objectness_loss_weight: float = Config.objectness_loss_weight,
        quality_scores: bool = Config.quality_scores,
        grid_sizes=None,
        iou_loss: str = Config.box_iou_loss,
        landmark_loss_weight: float = Config.landmark_loss_weight,
        landmark_loss: str = Config.landmark_loss,
        name: str = "grid_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = float(focal_alpha)
        self.box_loss_weight = float(box_loss_weight)
        self.objectness_loss_weight = float(objectness_loss_weight)
        self.quality_scores = bool(quality_scores)
        # None: one level, (B, G, G, 5) grids whose shape says their geometry.
        self.grid_sizes = None if grid_sizes is None else tuple(int(g) for g in grid_sizes)
        if iou_loss not in BOX_IOU_LOSSES:
            raise ValueError(f"iou_loss={iou_loss!r}: must be one of "
                             f"{', '.join(BOX_IOU_LOSSES)}")
        self.iou_loss = iou_loss
        self.landmark_loss_weight = float(landmark_loss_weight)
        if landmark_loss not in LANDMARK_LOSSES:
            raise ValueError(f"landmark_loss={landmark_loss!r}: must be one of "
                             f"{', '.join(LANDMARK_LOSSES)}")
        self.landmark_loss = landmark_loss

    @classmethod
    def from_config_obj(cls, config) -> "GridLoss":
        """The loss configured by a `config.Config`."""
        return cls(
            focal_gamma=config.focal_gamma,
            focal_alpha=config.focal_alpha,
            box_loss_weight=config.box_loss_weight,
            objectness_loss_weight=config.objectness_loss_weight,
            quality_scores=config.quality_scores,
            grid_sizes=loss_grid_sizes(config),
            iou_loss=config.box_iou_loss,
            landmark_loss_weight=config.landmark_loss_weight,
            landmark_loss=config.landmark_loss,
        )

    @classmethod
    def from_config(cls, config: dict) -> "GridLoss":
        return cls(**_current_names(config))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "focal_gamma": self.focal_gamma,
            "focal_alpha": self.focal_alpha,
            "box_loss_weight": self.box_loss_weight,
            "objectness_loss_weight": self.objectness_loss_weight,
            "quality_scores": self.quality_scores,
            "grid_sizes": None if self.grid_sizes is None else list(self.grid_sizes),
            "iou_loss": self.iou_loss,
            "landmark_loss_weight": self.landmark_loss_weight,
            "landmark_loss": self.landmark_loss,
        }

    def call(self, y_true, y_pred):
        terms = self.components(y_true, y_pred)
        total = terms[0] + terms[1]
        return total if len(terms) == 2 else total + terms[2]

    def components(self, y_true, y_pred):
        """(weighted objectness (B,), weighted box (B,)), normalised as the loss is; with
        landmark outputs (y_pred (..., 15), y_true (..., 17)) a third, the weighted
        landmark term (B,). One term per metric of `make_loss_metrics`."""
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        landmarks = output_has_landmarks(y_pred.shape[-1])
        if landmarks:
            # The box terms read the first five channels; the rest are the landmarks'.
            points_true, points_pred = y_true, y_pred
            y_true, y_pred = y_true[..., :NUM_CHANNELS], y_pred[..., :NUM_CHANNELS]
        face = ops.equal(y_true[..., CLASS], 1.0)  # (B, G, G), or (B, N) over the levels
        cells = tuple(range(1, len(face.shape)))
        per_face = _per_face_scale(face, cells)
        objectness = ops.sum(self._focal(y_true, y_pred, face), axis=cells)
        box = ops.sum(_box_error(y_true, y_pred, face, self.grid_sizes, self.iou_loss),
                      axis=cells)
        terms = (
            self.objectness_loss_weight * objectness * per_face,
            self.box_loss_weight * box * per_face,
        )
        if not landmarks:
            return terms
        points = ops.sum(_landmark_error(points_true, points_pred, face, self.landmark_loss),
                         axis=cells)
        return terms + (self.landmark_loss_weight * points * per_face,)

    def _focal(self, y_true, y_pred, face):
        """Focal BCE per cell (B, G, G); exactly 0, with no gradient, on ignore cells.

        One formula for both targets: with t the cell's target (1 on a face cell, or the
        IoU of its box with `quality_scores`; 0 on background),
            -alpha_t |t - p|^gamma (t log p + (1 - t) log(1 - p)),
        which for t = 1 or 0 is RetinaNet's focal loss and otherwise the quality focal
        loss. The IoU target passes no gradient (it is a label, not a prediction).
        """
        labelled = ops.greater_equal(y_true[..., CLASS], 0.0)
        # tf.where before the log: an ignored cell must pass no gradient at all.
        p = ops.where(labelled, y_pred[..., CLASS], 0.5)
        p = ops.clip(p, EPSILON, 1.0 - EPSILON)
        if self.quality_scores:
            iou = _box_iou(*_face_boxes(y_true, y_pred, face), self.grid_sizes)
            iou = ops.stop_gradient(ops.clip(iou, 0.0, 1.0))
            target = ops.where(face, iou, 0.0)
        else:
            target = ops.cast(face, "float32")
        alpha_t = ops.where(face, self.focal_alpha, 1.0 - self.focal_alpha)
        bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
        loss = alpha_t * ops.power(ops.abs(target - p), self.focal_gamma) * bce
        return ops.where(labelled, loss, 0.0)


def _current_names(config: dict) -> dict:
    """A saved loss or metric config with the weights' earlier names (box_weight,
    objectness_weight: checkpoints saved before they took Config's names) renamed."""
    config = dict(config)
    for old, new in (("box_weight", "box_loss_weight"),
                     ("objectness_weight", "objectness_loss_weight")):
        if old in config:
            config[new] = config.pop(old)
    return config


def loss_grid_sizes(config):
    """The `grid_sizes` GridLoss needs for `config`: None for one level (the targets'
    shape says it), else every level's side, finest first."""
    grid_sizes = config.grid_spec().grid_sizes
    return None if len(grid_sizes) == 1 else grid_sizes


def _per_face_scale(face, cells=(1, 2)):
    """(B,) factor turning per-image sums into a batch mean divided by the face count."""
    batch = ops.cast(ops.shape(face)[0], "float32")
    face = ops.cast(face, "float32")
    faces = ops.sum(face)
    return ops.ones_like(ops.sum(face, axis=cells)) * batch / ops.maximum(faces, 1.0)


def _box_error(y_true, y_pred, face, grid_sizes=None, iou_loss="giou"):
    """Box error per cell (B, G, G): (1 - GIoU), or the DIoU / EIoU loss, + L1 on sqrt
    sizes and centre offsets.

    Non-face cells are replaced by a harmless unit box BEFORE any sqrt or division, so
    they give exactly zero loss and zero gradient (a mask after the op would still let
    0 * inf = NaN gradients through).
    """
    pred, true = _face_boxes(y_true, y_pred, face)
    overlap = _iou_loss(pred, true, iou_loss, grid_sizes)
    sqrt_h = ops.abs(ops.sqrt(pred[..., H] + EPSILON) - ops.sqrt(true[..., H] + EPSILON))
    sqrt_w = ops.abs(ops.sqrt(pred[..., W] + EPSILON) - ops.sqrt(true[..., W] + EPSILON))
    centre = ops.abs(pred[..., YC] - true[..., YC]) + ops.abs(pred[..., XC] - true[..., XC])
    error = overlap + sqrt_h + sqrt_w + centre
    return ops.where(face, error, 0.0)


def _landmark_error(y_true, y_pred, face, kind: str = "smooth_l1"):
    """Landmark error per cell (B, G, G) (or (B, N)): smooth L1 (or with `kind` "wing" the
    wing loss) summed over the x and y of every present point (module doc); the mouth
    centre target against the mean of the two predicted mouth corners.

    Args:
        y_true: (..., 17) targets (`data.grid`: five points, then the mouth centre, NaN
            where absent); y_pred: (..., 15) outputs; face: (...) bool positive cells.

    Absent points and non-face cells are replaced by 0 in both BEFORE the difference, so
    they give zero loss and zero gradient (NaN * 0 would still be NaN).
    """
    end = NUM_CHANNELS + LANDMARK_CHANNELS
    right, left = point_channels(RIGHT_MOUTH)[0], point_channels(LEFT_MOUTH)[0]
    centre = point_channels(MOUTH_CENTRE)[0]
    pred_centre = (y_pred[..., right:right + 2] + y_pred[..., left:left + 2]) / 2.0
    true = ops.concatenate([y_true[..., NUM_CHANNELS:end], y_true[..., centre:centre + 2]],
                           axis=-1)
    pred = ops.concatenate([y_pred[..., NUM_CHANNELS:end], pred_centre], axis=-1)
    present = ops.logical_and(ops.isfinite(true), ops.expand_dims(face, -1))
    difference = ops.abs(ops.where(present, pred, 0.0) - ops.where(present, true, 0.0))
    if kind == "wing":
        corner = WING_WIDTH - WING_WIDTH * math.log1p(WING_WIDTH / WING_CURVATURE)
        error = ops.where(difference < WING_WIDTH,
                          WING_WIDTH * ops.log1p(difference / WING_CURVATURE),
                          difference - corner)
    else:
        error = ops.where(difference < LANDMARK_BETA,
                          0.5 * difference * difference / LANDMARK_BETA,
                          difference - 0.5 * LANDMARK_BETA)
    return ops.sum(ops.where(present, error, 0.0), axis=-1)


def _face_boxes(y_true, y_pred, face):
    """(pred, true) grids with every non-face cell replaced by the same unit box, so that
    no op on them (sqrt, division) can give a NaN or a gradient on those cells."""
    mask = ops.expand_dims(face, -1)
    filler = ops.full_like(y_pred, 0.5)
    return ops.where(mask, y_pred, filler), ops.where(mask, y_true, filler)


def _overlap(a, b, grid_sizes=None):
    """(intersection, union, enclosing box area) per cell of two (B, G, G, 5) grids (or
    (B, N, 5) cells of the levels `grid_sizes`)."""
    ax1, ay1, ax2, ay2 = cell_box_corners(a, grid_sizes)
    bx1, by1, bx2, by2 = cell_box_corners(b, grid_sizes)
    inter_w = ops.maximum(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1), 0.0)
    inter_h = ops.maximum(ops.minimum(ay2, by2) - ops.maximum(ay1, by1), 0.0)
    inter = inter_w * inter_h
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    enclosing = (ops.maximum(ax2, bx2) - ops.minimum(ax1, bx1)) * (
        ops.maximum(ay2, by2) - ops.minimum(ay1, by1)
    )
    return inter, union, enclosing


def _box_iou(a, b, grid_sizes=None):
    """IoU per cell of two (B, G, G, 5) grids (or levels' cells), in [0, 1]."""
    inter, union, _ = _overlap(a, b, grid_sizes)
    return inter / (union + AREA_EPSILON)


def _iou_loss(a, b, kind="giou", grid_sizes=None):
    """The overlap term per cell of two (B, G, G, 5) grids (or levels' cells): 1 - GIoU,
    the DIoU loss or the EIoU loss (module doc); 0 for identical boxes."""
    if kind == "giou":
        return 1.0 - _giou(a, b, grid_sizes)
    inter, union, _ = _overlap(a, b, grid_sizes)
    ax1, ay1, ax2, ay2 = cell_box_corners(a, grid_sizes)
    bx1, by1, bx2, by2 = cell_box_corners(b, grid_sizes)
    enclosing_w = ops.maximum(ax2, bx2) - ops.minimum(ax1, bx1)
    enclosing_h = ops.maximum(ay2, by2) - ops.minimum(ay1, by1)
    centre_distance = ((ax1 + ax2 - bx1 - bx2) ** 2 + (ay1 + ay2 - by1 - by2) ** 2) / 4.0
    loss = 1.0 - inter / (union + AREA_EPSILON) + centre_distance / (
        enclosing_w ** 2 + enclosing_h ** 2 + AREA_EPSILON)
    if kind == "eiou":
        loss = loss + ((ax2 - ax1) - (bx2 - bx1)) ** 2 / (enclosing_w ** 2 + AREA_EPSILON) \
            + ((ay2 - ay1) - (by2 - by1)) ** 2 / (enclosing_h ** 2 + AREA_EPSILON)
    return loss


def _giou(a, b, grid_sizes=None):
    """Generalised IoU per cell of two (B, G, G, 5) grids (or levels' cells), in [-1, 1]."""
    inter, union, enclosing = _overlap(a, b, grid_sizes)
    iou = inter / (union + AREA_EPSILON)
    return iou - (enclosing - union) / (enclosing + AREA_EPSILON)


class _LossComponent(keras.metrics.Mean):
    """Mean of one weighted term of GridLoss over the samples seen (a Keras metric)."""

    def __init__(self, term: int, name: str, dtype=None, **loss_kwargs):
        super().__init__(name=name, dtype=dtype)
        self._term = term  # index into GridLoss.components: 0 objectness, 1 box, 2 landmarks
        self._loss = GridLoss(**loss_kwargs)
        self._loss_kwargs = loss_kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        value = self._loss.components(y_true, y_pred)[self._term]
        return super().update_state(value, sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, **self._loss_kwargs}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**_current_names(config))


# The names of GridLoss.components' terms in the logs, in its order: the metrics below are
# named by them, and the multi-worker step (model/distributed.py) reports them.
TERM_NAMES = ("obj_loss", "box_loss", "lmk_loss")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ObjectnessLoss(_LossComponent):
    """Metric: the focal objectness term of GridLoss (weighted), logged as `obj_loss`."""

    def __init__(self, focal_gamma=Config.focal_gamma, focal_alpha=Config.focal_alpha,
                 objectness_loss_weight=Config.objectness_loss_weight,
                 quality_scores=Config.quality_scores, grid_sizes=None, name=TERM_NAMES[0],
                 dtype=None):
        super().__init__(0, name, dtype, focal_gamma=focal_gamma, focal_alpha=focal_alpha,
                         objectness_loss_weight=objectness_loss_weight,
                         quality_scores=quality_scores, grid_sizes=grid_sizes)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BoxLoss(_LossComponent):
    """Metric: the box term of GridLoss (weighted), logged as `box_loss`."""

    def __init__(self, box_loss_weight=Config.box_loss_weight, grid_sizes=None,
                 iou_loss=Config.box_iou_loss, name=TERM_NAMES[1], dtype=None):
        super().__init__(1, name, dtype, box_loss_weight=box_loss_weight,
                         grid_sizes=grid_sizes, iou_loss=iou_loss)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LandmarkLoss(_LossComponent):
    """Metric: the landmark term of GridLoss (weighted), logged as `lmk_loss` (models with
    landmarks only)."""

    def __init__(self, landmark_loss_weight=Config.landmark_loss_weight, grid_sizes=None,
                 landmark_loss=Config.landmark_loss, name=TERM_NAMES[2], dtype=None):
        super().__init__(2, name, dtype, landmark_loss_weight=landmark_loss_weight,
                         grid_sizes=grid_sizes, landmark_loss=landmark_loss)


def make_loss(config) -> GridLoss:
    """GridLoss with the loss fields of a `config.Config`."""
    return GridLoss.from_config_obj(config)


def make_loss_metrics(config) -> list:
    """[ObjectnessLoss, BoxLoss] (and LandmarkLoss with `config.landmarks`) configured
    like `make_loss(config)`, for model.compile."""
    metrics = [
        ObjectnessLoss(config.focal_gamma, config.focal_alpha, config.objectness_loss_weight,
                       config.quality_scores, loss_grid_sizes(config)),
        BoxLoss(config.box_loss_weight, loss_grid_sizes(config), config.box_iou_loss),
    ]
    if config.landmarks:
        metrics.append(LandmarkLoss(config.landmark_loss_weight, loss_grid_sizes(config),
                                    config.landmark_loss))
    return metrics
