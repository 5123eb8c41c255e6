"""Five facial landmarks per face: the one statement of their order, face alignment, NME.

Point order (LANDMARK_NAMES), the order of RetinaFace, SCRFD and YuNet (and of the
RetinaFace / SCRFD label files, data/formats/retinaface.py):

    0 right eye, 1 left eye, 2 nose tip, 3 right mouth corner, 4 left mouth corner

"right" and "left" are the SUBJECT's: in a frontal, upright face the right eye is the
one on the viewer's left, so it has the smaller x (the shared SCUT file agrees: in its
first face the right eye is at x 208.2, the left one at 210.4).

Arrays. `ImageRecord.landmarks` is (N, 5, 2) float32 x, y pixel coordinates of the image
file, one row per box, NaN where a point is absent (both coordinates NaN, never one); a
record whose source has no points at all holds None. Coordinates follow the boxes'
continuous-pixel convention (`data.boxes`): the augmentation maps them with the boxes'
arithmetic (a flip is x -> width - x).

The mouth centre. Caltech WebFaces labels the centre of the mouth, not its corners. It is
kept in a second array, `ImageRecord.mouth_centres` (N, 2), NaN where absent (None when
the source has none), and the face's two mouth-corner points stay NaN: a consumer that
knows only the five points sees no mouth (masked out), never the centre taken for a
corner. A loss supervises the MEAN of the two predicted mouth corners with it, as `nme`
scores it. A sample carries both as one (N, 6, 2) `points` array (POINT_NAMES: the five
landmarks, then the mouth centre; `face_points`, `split_points`), so every geometric
transform moves all six with one piece of arithmetic.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

LANDMARK_NAMES = ("right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner")
RIGHT_EYE, LEFT_EYE, NOSE_TIP, RIGHT_MOUTH, LEFT_MOUTH = range(len(LANDMARK_NAMES))
NUM_LANDMARKS = len(LANDMARK_NAMES)
# A horizontal flip turns the subject's right side into its left: point k of the flipped
# face is point FLIP_ORDER[k] of the original, mirrored.
FLIP_ORDER = (LEFT_EYE, RIGHT_EYE, NOSE_TIP, LEFT_MOUTH, RIGHT_MOUTH)

# A sample's points: the five landmarks, then the mouth centre (module doc).
MOUTH_CENTRE = NUM_LANDMARKS
POINT_NAMES = LANDMARK_NAMES + ("mouth centre",)
POINT_FLIP_ORDER = FLIP_ORDER + (MOUTH_CENTRE,)

# The five-point template of face recognisers (ArcFace / insightface), in the pixels of a
# 112 x 112 crop, in LANDMARK_NAMES order.
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float32)
ARCFACE_SIZE = 112
# Pixels: a reprojection threshold beyond any residual of a face's points (see align_face).
_ALL_INLIERS = 1e7


def empty_landmarks(count: int) -> np.ndarray:
    """(count, 5, 2) float32 all NaN: `count` faces without points."""
    return np.full((int(count), NUM_LANDMARKS, 2), np.nan, np.float32)


def face_points(record) -> np.ndarray:
    """A record's (N, 6, 2) float32 points (POINT_NAMES): its landmarks, then its mouth
    centres; NaN where the record has none."""
    count = len(record.boxes)
    points = np.full((count, len(POINT_NAMES), 2), np.nan, np.float32)
    if record.landmarks is not None:
        points[:, :NUM_LANDMARKS] = record.landmarks
    if record.mouth_centres is not None:
        points[:, MOUTH_CENTRE] = record.mouth_centres
    return points


def split_points(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 6, 2) points -> (landmarks (N, 5, 2), mouth centres (N, 2)), new float32 arrays."""
    points = np.asarray(points, np.float32).reshape(-1, len(POINT_NAMES), 2)
    return points[:, :NUM_LANDMARKS].copy(), points[:, MOUTH_CENTRE].copy()


def flip_points(points: np.ndarray, width: float) -> np.ndarray:
    """Points (N, K, 2) of an image `width` pixels wide, mirrored left-right (x -> width - x,
    the boxes' flip) and re-ordered so each row keeps its name: the subject's right eye of
    the mirrored face is the mirrored left eye. K is 5 (landmarks) or 6 (a sample's points)."""
    points = np.asarray(points, np.float32)
    order = {NUM_LANDMARKS: FLIP_ORDER, len(POINT_NAMES): POINT_FLIP_ORDER}.get(points.shape[-2])
    if points.ndim != 3 or points.shape[-1] != 2 or order is None:
        raise ValueError(f"points must be (N, 5, 2) or (N, 6, 2), got shape {points.shape}")
    flipped = points[:, list(order)].copy()
    flipped[..., 0] = np.float32(width) - flipped[..., 0]
    return flipped


def _check_points(name: str, points, count: Optional[int] = None) -> np.ndarray:
    """`points` as a float32 (N, 5, 2) array (N = `count` when given); ValueError naming
    `name` otherwise."""
    array = np.asarray(points, dtype=np.float32)
    if (array.ndim != 3 or array.shape[1:] != (NUM_LANDMARKS, 2)
            or (count is not None and len(array) != count)):
        raise ValueError(f"{name} must have shape ({'N' if count is None else count}, 5, 2), "
                         f"got {array.shape}")
    return array


def align_face(image_bgr: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The face crop a recogniser expects: the image warped by the similarity transform
    (rotation, uniform scale, translation; no mirror) that best maps the five points onto
    ARCFACE_TEMPLATE scaled by size / 112 (least squares, cv2.estimateAffinePartial2D).

    Args:
        image_bgr: (H, W, 3) uint8 BGR image (any (H, W[, C]) image cv2 can warp).
        landmarks: (5, 2) x, y pixel coordinates in LANDMARK_NAMES order, all present.
        size: side of the square crop, pixels.

    Returns:
        (size, size, 3) crop of the image's dtype; pixels from outside the image are black.

    Raises:
        ValueError: wrong shapes, a NaN / infinite point, or points that fix no
            transform (all at one place).
    """
    image = np.asarray(image_bgr)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (5, 2) ({', '.join(LANDMARK_NAMES)}), "
                         f"got {points.shape}")
    if not np.isfinite(points).all():
        missing = [LANDMARK_NAMES[k] for k in np.flatnonzero(~np.isfinite(points).all(axis=1))]
        raise ValueError(f"align_face needs all five points; absent or not finite: {', '.join(missing)}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if np.ptp(points, axis=0).max() <= 1e-6:
        raise ValueError("landmarks all lie at one place: no transform to the template")
    template = ARCFACE_TEMPLATE.astype(np.float64) * (size / ARCFACE_SIZE)
    # Least squares over all five points: a threshold no residual reaches makes every point
    # an inlier, and OpenCV's final Levenberg-Marquardt refinement fits them all (labels have
    # no outliers to vote out).
    matrix, _ = cv2.estimateAffinePartial2D(points, template, method=cv2.RANSAC,
                                            ransacReprojThreshold=_ALL_INLIERS)
    if matrix is None:
        raise ValueError("landmarks fix no similarity transform to the template")
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def nme(pred: np.ndarray, truth: np.ndarray, truth_mouth_centres: Optional[np.ndarray] = None) -> float:
    """Normalised mean error of predicted landmarks: each point's distance to the truth
    divided by the face's inter-ocular distance (its truth's right eye to left eye), averaged
    over the face's present points, then over the faces.

    Args:
        pred: (N, 5, 2) predicted points (LANDMARK_NAMES order), pixels; finite where the
            truth has a point.
        truth: (N, 5, 2) true points, NaN where absent.
        truth_mouth_centres: optional (N, 2) true mouth centres (Caltech), NaN where absent;
            a present one is compared with the MEAN of the two predicted mouth corners and
            counts as one point of its face.

    Returns:
        The NME (0.05 = points off by 5 % of the eye distance on average); NaN when no face
        can be scored: a face counts only when both its eyes are present and apart.

    Raises:
        ValueError: shapes that differ from the above, or a non-finite prediction for a
            present point.
    """
    truth = _check_points("truth", truth)
    pred = _check_points("pred", pred, len(truth))
    count = len(truth)
    if truth_mouth_centres is None:
        centres = np.full((count, 2), np.nan, np.float32)
    else:
        centres = np.asarray(truth_mouth_centres, np.float32)
        if centres.shape != (count, 2):
            raise ValueError(f"truth_mouth_centres must have shape ({count}, 2), got {centres.shape}")
    # One (N, 6, 2) layout: the predicted mouth centre is the mean of the predicted corners.
    pred6 = np.concatenate([pred, pred[:, [RIGHT_MOUTH, LEFT_MOUTH]].mean(axis=1, keepdims=True)], axis=1)
    truth6 = np.concatenate([truth, centres[:, None]], axis=1)
    present = np.isfinite(truth6).all(axis=2)
    if not np.isfinite(pred6[present]).all():
        raise ValueError("pred has a NaN or infinite point where the truth has one")
    eyes = truth[:, RIGHT_EYE] - truth[:, LEFT_EYE]
    ocular = np.hypot(eyes[:, 0], eyes[:, 1])
    scored = np.isfinite(ocular) & (ocular > 0) & present.any(axis=1)
    if not scored.any():
        return float("nan")
    errors = np.where(present, np.hypot(*(np.nan_to_num(pred6 - truth6)).transpose(2, 0, 1)), 0.0)
    per_face = errors[scored].sum(axis=1) / present[scored].sum(axis=1) / ocular[scored]
    return float(per_face.mean())
