"""The official WIDER FACE evaluation: easy / medium / hard AP from the official .mat files.

`wider_ap` is a port of the official MATLAB evaluation (eval_tools/evaluation.m, with
read_pred.m, norm_score.m, image_evaluation.m, image_pr_info.m, dataset_pr_info.m,
boxoverlap.m and VOCap; cross-checked against the public Python port
wondervictor/WiderFace-Evaluation, evaluation.py). It reads the official ground truth
(`load_wider_gt`: wider_face_val.mat and the wider_{easy,medium,hard}_val.mat keep-lists)
and predictions as a mapping or a folder in the submission layout (`model.predictions`).
Plain NumPy (and scipy.io to read the .mat files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from data.boxes import xywh_to_xyxy
from common.errors import DatasetError
from model.metrics import IOU_THRESHOLD, voc_ap
from model.postprocess import Detections
from model.predictions import detections_for, read_predictions

THRESH_NUM = 1000  # points of the official PR curve
SETTINGS = ("easy", "medium", "hard")
GT_FILE = "wider_face_val.mat"
SETTING_FILES = {s: f"wider_{s}_val.mat" for s in SETTINGS}


@dataclass
class WiderGroundTruth:
    """The official evaluation ground truth, flattened to one entry per image.

    names: '<event>/<file>' per image, in the .mat's order.
    boxes: per image, (N, 4) float64 faces x1, y1, x2, y2 (the .mat's x y w h with
        x2 = x + w, as the official code turns them into corners).
    keep: setting ('easy', 'medium', 'hard') -> per image, int64 0-based indices of the
        faces that setting counts (the .mat keep-lists are 1-based).
    """

    names: List[str]
    boxes: List[np.ndarray]
    keep: Dict[str, List[np.ndarray]]

    def num_faces(self, setting: str) -> int:
        return int(sum(len(k) for k in self.keep[setting]))


def find_gt_dir(root: str) -> Optional[str]:
    """The folder holding the official .mat files at or under a WIDER root, or None."""
    for candidate in (
        root,
        os.path.join(root, "eval_tools", "ground_truth"),
        os.path.join(root, "ground_truth"),
        os.path.join(root, "wider_face_split"),
    ):
        names = [GT_FILE] + list(SETTING_FILES.values())
        if all(os.path.isfile(os.path.join(candidate, n)) for n in names):
            return candidate
    return None


def _loadmat(path: str, keys: Sequence[str]) -> dict:
    from scipy.io import loadmat  # scipy is only needed for the official protocol

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: official ground-truth file not found")
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for a bad file; one line for all
        raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DatasetError(f"{path}: missing variable(s) {', '.join(missing)}")
    return mat


def load_wider_gt(gt_dir: str) -> WiderGroundTruth:
    """Read wider_face_val.mat and wider_{easy,medium,hard}_val.mat from `gt_dir`."""
    path = os.path.join(gt_dir, GT_FILE)
    mat = _loadmat(path, ("event_list", "file_list", "face_bbx_list"))
    names, boxes = [], []
    try:
        for i in range(len(mat["event_list"])):
            event = str(mat["event_list"][i][0][0])
            files = mat["file_list"][i][0]
            faces = mat["face_bbx_list"][i][0]
            for j in range(len(files)):
                names.append(f"{event}/{files[j][0][0]}")
                boxes.append(xywh_to_xyxy(np.asarray(faces[j][0], dtype=np.float64),
                                          np.float64))
    except (IndexError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: not the official ground-truth structure ({e})") from None

    keep = {}
    for setting, filename in SETTING_FILES.items():
        spath = os.path.join(gt_dir, filename)
        smat = _loadmat(spath, ("gt_list",))
        lists = []
        try:
            for i in range(len(smat["gt_list"])):
                lists.extend(smat["gt_list"][i][0][j][0] for j in range(len(smat["gt_list"][i][0])))
        except (IndexError, TypeError) as e:
            raise DatasetError(f"{spath}: not the official keep-list structure ({e})") from None
        if len(lists) != len(names):
            raise DatasetError(
                f"{spath}: keep-lists for {len(lists)} images but {path} has {len(names)}"
            )
        indices = []
        for name, faces, k in zip(names, boxes, lists):
            # Keep-lists are stored as uint8/uint16/double: widen before going 0-based.
            k = np.asarray(k, dtype=np.int64).reshape(-1) - 1
            if len(k) and (k.min() < 0 or k.max() >= len(faces)):
                raise DatasetError(
                    f"{spath}: {name}: keep index {k.max() + 1} outside its {len(faces)} faces"
                )
            indices.append(k)
        keep[setting] = indices
    return WiderGroundTruth(names, boxes, keep)


def _official_overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, G) IoU of corner boxes as the official boxoverlap.m computes it: inclusive
    pixels (+1), not `data.boxes.box_iou`'s continuous ones.

    The official code turns xywh into corners as x2 = x + w (as the readers here do) and
    then counts x2 - x1 + 1 pixels; reproduced as is, since it shifts IoU for small faces.
    """
    p = np.asarray(pred, np.float64).reshape(-1, 4)
    g = np.asarray(gt, np.float64).reshape(-1, 4)
    w = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1
    h = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    inter = w * h
    area_p = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    area_g = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlaps = inter / (area_p[:, None] + area_g[None, :] - inter)
    overlaps[(w <= 0) | (h <= 0)] = 0.0
    return overlaps


def wider_ap(
    predictions: Union[str, Mapping],
    gt: Union[str, WiderGroundTruth],
    iou_threshold: float = IOU_THRESHOLD,
    allow_missing: bool = False,
    progress: bool = False,
    curves: Optional[dict] = None,
) -> Dict[str, float]:
    """The official WIDER FACE easy / medium / hard AP.

    Args:
        predictions: a folder in the submission layout (`<event>/<image>.txt`), or a
            mapping from image name ('<event>/<image>' with or without extension) to
            Detections / (boxes, scores) / (N, 5) arrays, boxes x1, y1, x2, y2 in the
            .mat's pixels.
        gt: a folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat, or a
            loaded WiderGroundTruth.
        iou_threshold: 0.5 in the protocol.
        allow_missing: score images without predictions as having no detection instead
            of raising DatasetError (the official code refuses them).
        curves: a dict to fill with each setting's precision-recall curve, as the
            WIDER FACE results page draws it: {'easy': (recall (1000,), precision
            (1000,)), ...}, one point per score threshold, highest threshold first.

    Returns:
        {'easy': AP, 'medium': AP, 'hard': AP}.

    As the official code: each image's detections are sorted by score; scores are
    min-max normalised over all predictions of the set; a detection whose best-IoU face
    is outside the setting's keep-list is dropped (neither true nor false positive);
    a second detection of a found face is a false positive; images with no face are
    skipped; precision and recall are taken at 1,000 score thresholds and the area
    comes from `voc_ap`. One deliberate difference: the official normaliser starts
    from max 0 / min 1, which only matters for scores outside [0, 1]; here it is the
    true min-max, so any positive rescaling of the scores leaves AP unchanged. When all
    scores are equal (official: 0/0) every detection counts at every threshold.
    """
    if not isinstance(gt, WiderGroundTruth):
        gt = load_wider_gt(gt)
    source = predictions if isinstance(predictions, (str, os.PathLike)) else "predictions"
    if isinstance(predictions, (str, os.PathLike)):
        predictions = read_predictions(str(predictions), progress=progress, names=gt.names)
    dets = detections_for(gt.names, predictions, allow_missing, str(source))
    boxes, scores = _sorted_normalised(dets)

    # Thresholds 0.999, 0.998, ..., 0 as `1 - t / thresh_num` for t = 1..1000.
    thresholds = 1.0 - np.arange(1, THRESH_NUM + 1, dtype=np.float64) / THRESH_NUM
    counts_of = {s: np.zeros((THRESH_NUM, 2)) for s in SETTINGS}  # (proposals, recalled)
    iterator = tqdm(range(len(gt.names)), desc="wider_ap", unit="image", disable=not progress)
    for i in iterator:
        if len(gt.boxes[i]) and len(boxes[i]):
            _add_image_counts(counts_of, gt, i, boxes[i], scores[i], thresholds, iou_threshold)
    return _settings_ap(counts_of, gt, curves)


def _sorted_normalised(dets: Sequence[Detections]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Each image's (n, 4) boxes and (n,) scores sorted by descending score (read_pred.m;
    image_pr_info.m relies on it), the scores min-max normalised over the whole set."""
    orders = [np.argsort(-d.scores, kind="stable") for d in dets]
    boxes = [d.boxes[o].astype(np.float64) for d, o in zip(dets, orders)]
    scores = [d.scores[o].astype(np.float64) for d, o in zip(dets, orders)]
    nonempty = [s for s in scores if len(s)]
    if nonempty:
        low = min(float(s.min()) for s in nonempty)
        high = max(float(s.max()) for s in nonempty)
        span = high - low
        scores = [(s - low) / span if span > 0 else np.ones_like(s) for s in scores]
    return boxes, scores


def _add_image_counts(counts_of: Dict[str, np.ndarray], gt: WiderGroundTruth, i: int,
                      pred_boxes: np.ndarray, pred_scores: np.ndarray,
                      thresholds: np.ndarray, iou_threshold: float) -> None:
    """Add image i's proposals and recalled faces at every threshold to each setting's
    (THRESH_NUM, 2) counts (image_evaluation.m and image_pr_info.m). pred_boxes (n, 4)
    and pred_scores (n,) as `_sorted_normalised` gives them."""
    gt_boxes = gt.boxes[i]
    overlaps = _official_overlaps(pred_boxes, gt_boxes)
    best = overlaps.argmax(axis=1)  # first maximum, as MATLAB's max
    hit = overlaps[np.arange(len(best)), best] >= iou_threshold
    # Detections above each threshold: with scores sorted descending, a prefix.
    counts = np.searchsorted(-pred_scores, -thresholds, side="right")
    above = counts > 0
    last = counts[above] - 1
    for setting in SETTINGS:
        kept = np.zeros(len(gt_boxes), dtype=bool)
        kept[gt.keep[setting][i]] = True
        # image_evaluation.m, vectorised: the state it carries reduces to "which kept
        # faces were found so far" and "which detections hit a face not kept".
        proposal = ~(hit & ~kept[best])
        found = np.flatnonzero(hit & kept[best])
        first = np.zeros(len(best), dtype=bool)
        first[found[np.unique(best[found], return_index=True)[1]]] = True
        pred_recall = np.cumsum(first)
        counts_of[setting][above, 0] += np.cumsum(proposal)[last]
        counts_of[setting][above, 1] += pred_recall[last]


def _settings_ap(counts_of: Dict[str, np.ndarray], gt: WiderGroundTruth,
                 curves: Optional[dict]) -> Dict[str, float]:
    """{'easy': AP, ...} from each setting's (THRESH_NUM, 2) counts (wider_pr_cal.m then
    VOC_ap), filling `curves` with (recall, precision) if given."""
    result = {}
    for setting in SETTINGS:
        count_face = gt.num_faces(setting)
        if count_face == 0:
            result[setting] = 0.0
            continue
        proposals, recalled = counts_of[setting][:, 0], counts_of[setting][:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals
        result[setting] = voc_ap(recalled / count_face, precision)
        if curves is not None:
            curves[setting] = (recalled / count_face, np.nan_to_num(precision))
    return result
