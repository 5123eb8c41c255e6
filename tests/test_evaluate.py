"""Evaluation: plain AP, the official WIDER FACE protocol, the submission layout, the CLI."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import scipy.io as sio

from config import Config
from data.boxes import xywh_to_xyxy, xyxy_to_xywh
from data.records import ImageRecord
from common.errors import AnnotationError, DatasetError
from evaluate import main
from model.detector import FaceDetector
from model.evaluate import evaluate_model
from model.metrics import average_precision, best_f1_threshold, pr_curve_counts, voc_ap
from model.postprocess import Detections
from model.predictions import (
    prediction_key,
    read_prediction_file,
    read_predictions,
    write_predictions,
)
from helpers import bright_box_network
from model.wider_protocol import SETTINGS, WiderGroundTruth, load_wider_gt, wider_ap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The hand-computed case: image A has faces F1, F2; image B has F3; image C has no face.
# Boxes x1, y1, x2, y2 (the .mat and the text files get their x y w h).
F1, F2, F3 = [10, 10, 50, 50], [100, 100, 140, 140], [50, 50, 110, 110]
D1 = ([10, 10, 50, 50], 0.9)  # on F1
D2 = ([200, 10, 230, 40], 0.8)  # on nothing
D3 = ([52, 50, 112, 110], 0.7)  # on F3 (IoU 0.94)
D4 = ([12, 12, 52, 52], 0.6)  # on F1 again (IoU 0.82): a duplicate
DC = ([5, 5, 25, 25], 0.85)  # on image C, which has no face

# Ranked D1 TP, D2 FP, D3 TP, D4 FP over 3 faces: precision 1, 1/2, 2/3, 1/2 at recall
# 1/3, 1/3, 2/3, 2/3; envelope 1 up to recall 1/3, 2/3 up to 2/3: AP = 1/3 + 2/9 = 5/9.
AP_ALL_FACES = 5 / 9
# F2 not counted: recall 1/2, 1/2, 1, 1: AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
AP_WITHOUT_F2 = 5 / 6
# Only F3 counted: D1 and D4 hit F1 and are ignored, ranked D2 FP, D3 TP: AP = 1/2
# (1/3 if the detections on F1 were counted as false positives).
AP_ONLY_F3 = 1 / 2


def hand_detections():
    def det(*items):
        return Detections(
            np.array([b for b, _ in items], np.float32).reshape(-1, 4),
            np.array([s for _, s in items], np.float32),
        )

    return {"0--A/a_1": det(D1, D2, D4), "1--B/b_1": det(D3), "1--B/b_2": det(DC)}


def _cells(items):
    """A MATLAB cell column (n, 1) as scipy.io writes it."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_gt_mats(folder, events, keep_lists):
    """Write wider_face_val.mat and wider_{easy,medium,hard}_val.mat like the official ones.

    events: [(event, [(file, boxes (N, 4))...])...]; keep_lists: setting -> per event, per
    file, the 1-based indices of the faces the setting keeps.
    """
    os.makedirs(folder, exist_ok=True)
    base = dict(
        event_list=_cells([np.array([e]) for e, _ in events]),
        file_list=_cells([_cells([np.array([f]) for f, _ in files]) for _, files in events]),
        face_bbx_list=_cells([
            _cells([np.asarray(b, np.float64).reshape(-1, 4) for _, b in files]) for _, files in events
        ]),
    )
    sio.savemat(os.path.join(folder, "wider_face_val.mat"), base)
    for setting in SETTINGS:
        gt_list = _cells([
            _cells([np.asarray(k, np.uint8).reshape(-1, 1) for k in per_event])
            for per_event in keep_lists[setting]
        ])
        sio.savemat(os.path.join(folder, f"wider_{setting}_val.mat"), dict(base, gt_list=gt_list))
    return folder


def xywh_text(box):
    """A corner box as the `x y w h` numbers of a WIDER annotation line."""
    return " ".join(str(int(v)) for v in xyxy_to_xywh([box])[0])


def write_hand_gt(folder):
    events = [("0--A", [("a_1", xyxy_to_xywh([F1, F2]))]),
              ("1--B", [("b_1", xyxy_to_xywh([F3])), ("b_2", np.zeros((0, 4)))])]
    keep = {
        "easy": [[[]], [[1], []]],  # F3 only
        "medium": [[[1]], [[1], []]],  # F1, F3
        "hard": [[[1, 2]], [[1], []]],  # all
    }
    return write_gt_mats(folder, events, keep)


@pytest.fixture
def hand_gt(tmp_path):
    return write_hand_gt(str(tmp_path / "gt"))


# ----------------------------------------------------------------------------------------
# voc_ap and plain AP
# ----------------------------------------------------------------------------------------
def test_voc_ap_is_the_area_under_the_precision_envelope():
    assert voc_ap([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    # The dip at recall 0.5 is lifted to the later, higher precision 0.8.
    assert voc_ap([0.25, 0.5, 0.75], [1.0, 0.4, 0.8]) == pytest.approx(0.25 + 0.5 * 0.8)
    # NaN precision (0/0: no proposal at a threshold) is skipped, as MATLAB's max does.
    assert voc_ap([0.0, 0.5], [np.nan, 1.0]) == pytest.approx(0.5)


def test_average_precision_hand_computed_case():
    dets = hand_detections()
    gts = [ImageRecord("a.jpg", "0--A/a_1.jpg", [F1, F2], [False, False]),
           ImageRecord("b.jpg", "1--B/b_1.jpg", [F3], [False])]
    detections = [dets["0--A/a_1"], dets["1--B/b_1"]]
    assert average_precision(detections, gts) == pytest.approx(AP_ALL_FACES)
    ap, recall = average_precision(detections, gts, return_recall=True)
    assert recall == pytest.approx(2 / 3)
    # (boxes, ignore) pairs are accepted as ground truth too.
    assert average_precision(detections, [(g.boxes, g.ignore) for g in gts]) == pytest.approx(ap)


def test_average_precision_ignored_faces_are_neither_true_nor_false_positives():
    dets = hand_detections()
    gts = [([F1, F2], [True, True]), ([F3], [False])]
    assert average_precision([dets["0--A/a_1"], dets["1--B/b_1"]], gts) == pytest.approx(AP_ONLY_F3)


def test_average_precision_counts_detections_on_faceless_images_as_false_positives():
    dets = hand_detections()
    gts = [([F1, F2], [False, False]), ([F3], [False]), (np.zeros((0, 4)), [])]
    # Ranked D1 TP, DC FP, D2 FP, D3 TP, D4 FP: AP = 1/3 * 1 + 1/3 * 2/4.
    detections = [dets["0--A/a_1"], dets["1--B/b_1"], dets["1--B/b_2"]]
    assert average_precision(detections, gts) == pytest.approx(1 / 3 + 1 / 6)


def test_average_precision_edge_cases_and_score_scale_invariance():
    dets = hand_detections()
    gts = [([F1, F2], [False, False]), ([F3], [False])]
    assert average_precision([Detections.empty(), Detections.empty()], gts) == 0.0
    assert average_precision([Detections.empty()], [(np.zeros((0, 4)), [])]) == 0.0
    perfect = [(np.array([F1, F2]), [0.9, 0.8]), (np.array([F3]), [0.7])]
    assert average_precision(perfect, gts) == pytest.approx(1.0)
    scaled = [Detections(d.boxes, d.scores * 10) for d in (dets["0--A/a_1"], dets["1--B/b_1"])]
    assert average_precision(scaled, gts) == pytest.approx(AP_ALL_FACES)
    with pytest.raises(ValueError, match="2 detection lists for 1 images"):
        average_precision(scaled, gts[:1])


# ----------------------------------------------------------------------------------------
# The official protocol on a hand-built .mat
# ----------------------------------------------------------------------------------------
def test_wider_ap_hand_computed_case_per_setting(hand_gt):
    """hard counts all faces, medium drops F2, easy keeps only F3: detections on faces
    outside the keep-list are ignored, not false positives; image b_2 has no face, so
    (as in the official code) its detection is skipped."""
    result = wider_ap(hand_detections(), hand_gt)
    assert result["hard"] == pytest.approx(AP_ALL_FACES, abs=1e-9)
    assert result["medium"] == pytest.approx(AP_WITHOUT_F2, abs=1e-9)
    assert result["easy"] == pytest.approx(AP_ONLY_F3, abs=1e-9)


def test_wider_ap_curves_are_the_curves_its_ap_is_the_area_of(hand_gt, tmp_path):
    """The PR curves bench_real draws are the protocol's own: voc_ap of each curve is the
    setting's AP, recall never falls as the threshold drops, and they draw into a PNG."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    from bench_real import draw_pr_curves

    curves = {}
    result = wider_ap(hand_detections(), hand_gt, curves=curves)
    assert set(curves) == set(SETTINGS)
    for setting, (recall, precision) in curves.items():
        assert recall.shape == precision.shape == (1000,)
        assert np.all(np.diff(recall) >= 0) and np.all((0 <= precision) & (precision <= 1))
        assert voc_ap(recall, precision) == pytest.approx(result[setting], abs=1e-12)
    png = str(tmp_path / "pr.png")
    draw_pr_curves({"ours": curves, "peer": curves},
                   {"ours": {**result, "ms": 1.0}, "peer": {**result, "ms": 2.0}}, png)
    image = cv2.imread(png)
    assert image is not None and image.shape[1] > 3 * image.shape[0] / 2


def test_load_wider_gt_reads_the_official_structure(hand_gt):
    gt = load_wider_gt(hand_gt)
    assert gt.names == ["0--A/a_1", "1--B/b_1", "1--B/b_2"]
    np.testing.assert_array_equal(gt.boxes[0], [F1, F2])
    assert gt.boxes[2].shape == (0, 4)
    assert [k.tolist() for k in gt.keep["hard"]] == [[0, 1], [0], []]
    assert {s: gt.num_faces(s) for s in SETTINGS} == {"easy": 1, "medium": 2, "hard": 3}


def test_load_wider_gt_errors_name_the_file(tmp_path, hand_gt):
    with pytest.raises(DatasetError, match="wider_face_val.mat: official ground-truth file not found"):
        load_wider_gt(str(tmp_path))
    bad = write_gt_mats(str(tmp_path / "bad"), [("0--A", [("a_1", xyxy_to_xywh([F1]))])],
                        {s: [[[2]]] for s in SETTINGS})
    with pytest.raises(DatasetError, match=r"wider_easy_val.mat: 0--A/a_1: keep index 2 outside its 1 faces"):
        load_wider_gt(bad)


def test_wider_ap_missing_predictions_raise_unless_allowed(hand_gt):
    dets = hand_detections()
    del dets["1--B/b_2"]
    with pytest.raises(DatasetError, match=r"no predictions for 1 of 3 images \(first: 1--B/b_2.txt\)"):
        wider_ap(dets, hand_gt)
    assert wider_ap(dets, hand_gt, allow_missing=True)["hard"] == pytest.approx(AP_ALL_FACES)


def test_wider_ap_no_detections_scores_zero(hand_gt):
    empty = {name: Detections.empty() for name in ("0--A/a_1", "1--B/b_1", "1--B/b_2")}
    assert wider_ap(empty, hand_gt) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


# ----------------------------------------------------------------------------------------
# The official protocol on real ground truth
# ----------------------------------------------------------------------------------------
def subset_gt(shared_subset):
    return load_wider_gt(os.path.join(shared_subset, "eval_tools", "ground_truth"))


def test_ground_truth_as_predictions_scores_one_on_the_subset(shared_subset, tmp_path):
    """The README's check, through the submission files: GT written as predictions -> 1.0."""
    gt = subset_gt(shared_subset)
    for name, boxes in zip(gt.names, gt.boxes):
        write_predictions(str(tmp_path), name + ".jpg", boxes, np.ones(len(boxes)))
    assert wider_ap(str(tmp_path), gt) == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_no_predictions_score_zero_on_the_subset(shared_subset, tmp_path):
    gt = subset_gt(shared_subset)
    for name in gt.names:
        write_predictions(str(tmp_path), name, np.zeros((0, 4)), np.zeros(0))
    assert wider_ap(str(tmp_path), gt) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


def noisy_predictions(gt, seed=0):
    """Jittered GT boxes (some duplicated, some dropped) plus random false positives."""
    rng = np.random.default_rng(seed)
    preds = {}
    for name, boxes in zip(gt.names, gt.boxes):
        kept = boxes[rng.random(len(boxes)) < 0.8]
        dup = kept[rng.random(len(kept)) < 0.2]
        # Jitter and false positives drawn on x y w h (a size error in proportion to the
        # face), then the corners the predictions hold.
        found = xyxy_to_xywh(np.concatenate([kept, dup]), np.float64)
        found = found + rng.normal(0, 0.15, found.shape) * found[:, [2, 3, 2, 3]]
        fps = np.column_stack([rng.uniform(0, 380, (5, 2)), rng.uniform(5, 60, (5, 2))])
        all_boxes = xywh_to_xyxy(np.concatenate([found, fps]), np.float64)
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(found)), rng.uniform(0.0, 0.6, 5)])
        preds[name] = (all_boxes, scores)
    return preds


def reference_wider_ap(gt, preds):
    """A line-by-line port of the official evaluation.m loops (slow): the oracle."""
    thresh_num = 1000
    norm = {}
    scores = np.concatenate([s for _, s in preds.values()])
    low, high = scores.min(), scores.max()
    for name, (boxes, s) in preds.items():
        order = np.argsort(-s, kind="stable")
        norm[name] = np.column_stack([boxes[order], (s[order] - low) / (high - low)])
    aps = {}
    for setting in SETTINGS:
        count_face, pr_curve = 0, np.zeros((thresh_num, 2))
        for name, gt_bbx, keep_index in zip(gt.names, gt.boxes, gt.keep[setting]):
            pred_info = norm[name]
            count_face += len(keep_index)
            if len(gt_bbx) == 0 or len(pred_info) == 0:
                continue
            ignore = np.zeros(len(gt_bbx))
            ignore[keep_index] = 1
            # image_evaluation.m
            pred_recall, recall_list = np.zeros(len(pred_info)), np.zeros(len(gt_bbx))
            proposal_list = np.ones(len(pred_info))
            # Corners already: the official x2 = x + w is where the files are read.
            p = pred_info[:, :4].copy()
            g = gt_bbx.copy()
            for h in range(len(p)):
                w = np.minimum(g[:, 2], p[h, 2]) - np.maximum(g[:, 0], p[h, 0]) + 1
                hh = np.minimum(g[:, 3], p[h, 3]) - np.maximum(g[:, 1], p[h, 1]) + 1
                inter = w * hh
                union = ((g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
                         + (p[h, 2] - p[h, 0] + 1) * (p[h, 3] - p[h, 1] + 1) - inter)
                o = inter / union
                o[(w <= 0) | (hh <= 0)] = 0
                idx = int(np.argmax(o))
                if o[idx] >= 0.5:
                    if ignore[idx] == 0:
                        recall_list[idx] = -1
                        proposal_list[h] = -1
                    elif recall_list[idx] == 0:
                        recall_list[idx] = 1
                pred_recall[h] = np.sum(recall_list == 1)
            # image_pr_info.m
            for t in range(thresh_num):
                thresh = 1 - (t + 1) / thresh_num
                r_index = np.flatnonzero(pred_info[:, 4] >= thresh)
                if len(r_index):
                    r = r_index[-1]
                    pr_curve[t, 0] += np.sum(proposal_list[: r + 1] == 1)
                    pr_curve[t, 1] += pred_recall[r]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = pr_curve[:, 1] / pr_curve[:, 0]
        recall = pr_curve[:, 1] / count_face
        # VOCap with MATLAB's NaN-skipping max.
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = np.nanmax([mpre[i], mpre[i + 1]])
        i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
        aps[setting] = float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))
    return aps


def test_wider_ap_matches_a_literal_port_of_the_official_loops(shared_subset):
    """The vectorised protocol equals the official per-detection, per-threshold loops."""
    full = subset_gt(shared_subset)
    n = 30
    gt = WiderGroundTruth(full.names[:n], full.boxes[:n], {s: k[:n] for s, k in full.keep.items()})
    preds = noisy_predictions(gt)
    fast, slow = wider_ap(preds, gt), reference_wider_ap(gt, preds)
    for setting in SETTINGS:
        assert 0.1 < fast[setting] < 0.99  # a non-trivial case
        assert fast[setting] == pytest.approx(slow[setting], abs=1e-12)


def test_wider_ap_is_invariant_to_rescaling_the_scores(shared_subset):
    gt = subset_gt(shared_subset)
    preds = noisy_predictions(gt, seed=1)
    base = wider_ap(preds, gt)
    doubled = wider_ap({k: (b, s * 2.0) for k, (b, s) in preds.items()}, gt)
    assert doubled == base  # exact: a power of two rescales without rounding
    affine = wider_ap({k: (b, s * 37.0 + 5.0) for k, (b, s) in preds.items()}, gt)
    for setting in SETTINGS:
        assert affine[setting] == pytest.approx(base[setting], abs=1e-6)


def test_full_val_annotations_load_and_ground_truth_scores_one(shared_val_annotations):
    """All 3,226 images: GT as predictions scores 1.0 but for two faces the official
    protocol itself cannot recall (an exact duplicate box in 21_Festival_Festival_21_604
    and a box of width -2 in 39_Ice_Skating_iceskiing_39_583)."""
    gt = load_wider_gt(shared_val_annotations)
    assert len(gt.names) == 3226
    assert sum(len(b) for b in gt.boxes) == 39708
    preds = {n: (b, np.ones(len(b))) for n, b in zip(gt.names, gt.boxes)}
    result = wider_ap(preds, gt)
    for setting in SETTINGS:
        assert 1 - 4 / gt.num_faces(setting) <= result[setting] < 1.0
    # Without the .mat files: plain AP over the valid faces of the text annotations.
    from data.wider import read_wider_annotations

    records = read_wider_annotations(
        os.path.join(shared_val_annotations, "wider_face_val_bbx_gt.txt"), "images"
    ).records
    assert len(records) == 3226
    truth = [(r.boxes, np.ones(len(r.boxes))) for r in records]
    assert average_precision(truth, records) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------
# The submission layout
# ----------------------------------------------------------------------------------------
def test_write_read_predictions_round_trip_with_empty_images(tmp_path):
    boxes = np.array([[10, 20, 40.5, 60.25], [1.126, 2, 4.126, 6]], np.float32)  # corners
    scores = np.array([0.912345, 0.1], np.float32)
    path = write_predictions(str(tmp_path), "0--Parade/0_Parade_1.jpg", boxes, scores)
    assert path == os.path.join(str(tmp_path), "0--Parade", "0_Parade_1.txt")
    with open(path) as f:
        assert f.read().splitlines()[:3] == ["0_Parade_1.jpg", "2", "10.00 20.00 30.50 40.25 0.912345"]
    write_predictions(str(tmp_path), "0--Parade/empty.jpg", np.zeros((0, 4)), np.zeros(0))
    with open(os.path.join(str(tmp_path), "0--Parade", "empty.txt")) as f:
        assert f.read() == "empty.jpg\n0\n"
    read = read_predictions(str(tmp_path))
    assert sorted(read) == ["0--Parade/0_Parade_1", "0--Parade/empty"]
    np.testing.assert_allclose(read["0--Parade/0_Parade_1"].boxes, boxes, atol=0.005)
    np.testing.assert_allclose(read["0--Parade/0_Parade_1"].scores, scores, atol=1e-6)
    assert read["0--Parade/empty"].boxes.shape == (0, 4)
    assert prediction_key("0--Parade\\x.jpg") == "0--Parade/x"


@pytest.mark.parametrize("text,message", [
    ("a.jpg\n", r"bad.txt: expected the image name on line 1 and the box count on line 2"),
    ("a.jpg\nmany\n", r"bad.txt:2: expected the number of boxes \(a whole number\), got 'many'"),
    ("a.jpg\n3\n1 2 3 4 0.5\n", r"bad.txt:2: says 3 boxes but 1 box lines follow"),
    ("a.jpg\n2\n1 2 3 4 0.5\n1 2 3 4\n", r"bad.txt:4: expected 'x y w h score', got '1 2 3 4'"),
    # Counts that float() reads but that are no number of boxes (int(inf) used to crash).
    ("a.jpg\ninf\n", r"bad.txt:2: expected the number of boxes \(a whole number\), got 'inf'"),
    ("a.jpg\n1e400\n", r"bad.txt:2: expected the number of boxes \(a whole number\), got '1e400'"),
    ("a.jpg\n3.7\n", r"bad.txt:2: expected the number of boxes \(a whole number\), got '3.7'"),
    ("a.jpg\n-1\n", r"bad.txt:2: expected the number of boxes \(a whole number\), got '-1'"),
    # Values that would sort anywhere or overlap nothing: refused, not scored.
    ("a.jpg\n2\n1 2 3 4 0.5\n1 2 3 4 inf\n", r"bad.txt:4: 'x y w h score' must be finite numbers, got '1 2 3 4 inf'"),
    ("a.jpg\n1\n1 2 3 4 nan\n", r"bad.txt:3: 'x y w h score' must be finite numbers, got '1 2 3 4 nan'"),
    ("a.jpg\n1\nnan 2 3 4 0.5\n", r"bad.txt:3: 'x y w h score' must be finite numbers"),
    ("a.jpg\n1\n1 2 inf 4 0.5\n", r"bad.txt:3: 'x y w h score' must be finite numbers"),
    ("a.jpg\n1\n1 2 -3 4 0.5\n", r"bad.txt:3: box width and height must be >= 0, got '1 2 -3 4 0.5'"),
    ("a.jpg\n1\n1 2 3 -4 0.5\n", r"bad.txt:3: box width and height must be >= 0"),
])
def test_malformed_prediction_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        read_prediction_file(str(path))


def test_whole_number_counts_and_empty_files_are_read(tmp_path):
    """'2.0' and '1e0' are whole counts; a 0-byte (or blank) file is an image without
    detections, as the official read_pred.m scores it, not an error."""
    path = tmp_path / "a.txt"
    path.write_text("a.jpg\n2.0\n1 2 3 4 0.5\n5 6 0 0 -0.25\n")
    det = read_prediction_file(str(path))
    np.testing.assert_array_equal(det.boxes, [[1, 2, 4, 6], [5, 6, 5, 6]])  # as corners
    np.testing.assert_array_equal(det.scores, [0.5, -0.25])  # any finite score is a score
    path.write_text("a.jpg\n1e0\n1 2 3 4 0.5\n")
    assert len(read_prediction_file(str(path)).scores) == 1
    for text in ("", "\n\n"):
        path.write_text(text)
        det = read_prediction_file(str(path))
        assert det.boxes.shape == (0, 4) and det.scores.shape == (0,)


def test_stray_text_files_are_skipped_with_one_counted_warning(tmp_path, hand_gt, capsys):
    """A README.txt or notes beside the event folders are not prediction files: skipped
    and counted in one warning; scoring is what it is without them."""
    preds = write_hand_predictions(str(tmp_path / "pred"))
    (tmp_path / "pred" / "README.txt").write_text("Predictions of my detector\nrun 3\n")
    (tmp_path / "pred" / "1--B" / "notes.txt").write_text("b_2 looks hard\n")
    with pytest.warns(UserWarning, match=r"skipped 2 \.txt file\(s\) that are not "
                      r"prediction files \(first: .*1--B.notes\.txt: line 1 does not name"):
        read = read_predictions(preds)
    assert sorted(read) == sorted(hand_detections())
    # With the ground truth's names, a file outside it is skipped unread (even a valid-
    # looking one), as the official tool opens only the files its ground truth lists.
    (tmp_path / "pred" / "README.txt").write_text("README.jpg\nnot a count\n")
    with pytest.warns(UserWarning, match=r"skipped 2 .*notes\.txt: not an image of the "
                      "ground truth"):
        read = read_predictions(preds, names=["0--A/a_1", "1--B/b_1", "1--B/b_2"])
    assert sorted(read) == sorted(hand_detections())
    # The CLI scores the folder as without them and says so in one stderr line.
    assert main(["--predictions", preds, "--gt", hand_gt]) == 0
    captured = capsys.readouterr()
    assert "hard   AP 0.5556" in captured.out
    notes = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(notes) == 1 and notes[0].startswith("evaluate.py: warning: ")
    assert "skipped 2 .txt file(s)" in notes[0]


def test_a_malformed_file_of_the_ground_truth_is_an_error_naming_it(tmp_path, hand_gt):
    preds = write_hand_predictions(str(tmp_path / "pred"))
    bad = tmp_path / "pred" / "1--B" / "b_1.txt"
    bad.write_text("b_1.jpg\n1\n52 50 60 60 nan\n")
    with pytest.raises(AnnotationError, match=r"b_1\.txt:3: 'x y w h score' must be finite"):
        main(["--predictions", preds, "--gt", hand_gt])
    bad.write_text("")  # an empty file: b_1 has no detection (F3 unfound), not an error
    assert main(["--predictions", preds, "--gt", hand_gt]) == 0


def test_read_predictions_rejects_missing_or_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="predictions folder not found"):
        read_predictions(str(tmp_path / "nothing"))
    with pytest.raises(DatasetError, match="no prediction files"):
        read_predictions(str(tmp_path))


# ----------------------------------------------------------------------------------------
# Running a network
# ----------------------------------------------------------------------------------------


def write_scene(path, width, height, face=None):
    image = np.full((height, width, 3), 40, np.uint8)
    if face is not None:
        x1, y1, x2, y2 = face
        image[y1:y2, x1:x2] = 255
    cv2.imwrite(path, image)


def test_evaluate_model_runs_batches_maps_back_and_writes_every_image(tmp_path):
    """Non-square images, a partial last batch and an image without face: detections come
    back in original pixels and every image gets a submission file."""
    scenes = [("ev/wide.png", 320, 200, (50, 50, 150, 125)),
              ("ev/tall.png", 200, 320, (100, 150, 150, 250)),
              ("ev/none.png", 160, 160, None)]
    records = []
    for name, w, h, face in scenes:
        path = str(tmp_path / "images" / name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_scene(path, w, h, face)
        boxes = [face] if face else np.zeros((0, 4))
        records.append(ImageRecord(path, name, boxes, [False] * len(boxes)))
    config = Config(input_size=128, grid_size=4, batch_size=2)
    out = str(tmp_path / "pred")
    detector = FaceDetector(bright_box_network(128, 4), 128, 4)
    preds = evaluate_model(detector, records, config, out, progress=False)
    assert sorted(preds) == ["ev/none", "ev/tall", "ev/wide"]
    for name, _, _, face in scenes:
        det = preds[prediction_key(name)]
        if face is None:
            assert len(det.scores) == 0
        else:
            np.testing.assert_allclose(det.scores, [0.9], atol=1e-6)
            np.testing.assert_allclose(det.boxes[0], face, atol=3.0)
    assert average_precision([preds[prediction_key(r.name)] for r in records], records) == 1.0
    assert sorted(read_predictions(out)) == sorted(preds)
    # A FaceDetector prepares images as it was loaded to: letterbox goes with a path.
    with pytest.raises(ValueError, match="letterbox=False: only with a model path"):
        evaluate_model(detector, records, config, letterbox=False, progress=False)


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------
def write_hand_predictions(folder):
    for name, det in hand_detections().items():
        write_predictions(folder, name + ".jpg", det.boxes, det.scores)
    return folder


def test_cli_scores_a_prediction_folder_with_the_mat_files(tmp_path, hand_gt, capsys):
    preds = write_hand_predictions(str(tmp_path / "pred"))
    summary_path = str(tmp_path / "summary.json")
    assert main(["--predictions", preds, "--gt", hand_gt, "--json", summary_path]) == 0
    out = capsys.readouterr().out
    assert "easy   AP 0.5000" in out and "medium AP 0.8333" in out and "hard   AP 0.5556" in out
    with open(summary_path) as f:
        summary = json.load(f)
    assert summary["protocol"] == "wider" and summary["images"] == 3
    assert summary["hard"] == pytest.approx(AP_ALL_FACES)


def test_cli_plain_ap_from_a_wider_annotation_file(tmp_path, capsys):
    preds = write_hand_predictions(str(tmp_path / "pred"))
    gt_txt = tmp_path / "wider_face_val_bbx_gt.txt"
    face = " 0 0 0 0 0 0\n"
    gt_txt.write_text(
        "0--A/a_1.jpg\n2\n" + xywh_text(F1) + face + xywh_text(F2) + face
        + "1--B/b_1.jpg\n1\n" + xywh_text(F3) + face
    )
    assert main(["--predictions", preds, "--gt", str(gt_txt)]) == 0
    assert f"AP {AP_ALL_FACES:.4f} (IoU 0.5, 2 images, 3 valid faces)" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path):
    """Bad input ends with '<program>: error: ...' on one line and exit status 2."""
    env = dict(os.environ, PYTHONPATH=REPO)
    runs = [
        ([sys.executable, "evaluate.py", "--predictions", str(tmp_path / "nope"), "--gt", str(tmp_path)],
         "predictions folder not found", "evaluate.py"),
        ([sys.executable, "evaluate.py", "--predictions", str(tmp_path)],
         "--predictions needs --gt", "evaluate.py"),
    ]
    for command, message, program in runs:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{program}: error:") and message in lines[0]


def tiny_checkpoint(path, output_grid=True):
    """A 64-px, 2x2-grid Keras model saved as .keras (untrained: the scores are arbitrary)."""
    import keras

    inputs = keras.Input((64, 64, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.AveragePooling2D(32)(x)
    x = keras.layers.Conv2D(5, 1, activation="sigmoid")(x)
    if not output_grid:
        x = keras.layers.Flatten()(x)
    keras.Model(inputs, x).save(path)
    return path


def test_evaluate_model_loads_a_model_path_with_its_contract(tmp_path):
    """A path is loaded by FaceDetector.load: images are prepared as the file says, and a
    letterbox that contradicts it is refused, naming both values."""
    from common.errors import ConfigError
    from data.grid import GridSpec
    from model.contract import ModelContract, write_contract

    path = str(tmp_path / "images" / "ev" / "wide.png")
    os.makedirs(os.path.dirname(path))
    write_scene(path, 320, 200, (50, 50, 150, 125))
    records = [ImageRecord(path, "ev/wide.png", [[50, 50, 150, 125]], [False])]
    ckpt = tiny_checkpoint(str(tmp_path / "model-0.10.keras"))
    write_contract(ckpt, ModelContract(GridSpec(64, 2, letterbox=False)))
    preds = evaluate_model(ckpt, records, Config(batch_size=2), progress=False)
    assert sorted(preds) == ["ev/wide"]
    with pytest.raises(ConfigError, match=r"letterbox=True: .*model-0.10.keras was trained on "
                       "stretched images"):
        evaluate_model(ckpt, records, Config(), letterbox=True, progress=False)


def test_cli_runs_a_checkpoint_over_a_wider_layout_split(tmp_path, capsys):
    """--weights: reads the split, runs the model, writes every image's file, scores it
    with the .mat files found under --dataset (eval_tools/ground_truth)."""
    from common.errors import CheckpointError

    root = tmp_path / "WIDER"
    split = root / "wider_face_split"
    split.mkdir(parents=True)
    write_hand_gt(str(root / "eval_tools" / "ground_truth"))
    face = " 0 0 0 0 0 0\n"
    (split / "wider_face_val_bbx_gt.txt").write_text(
        "0--A/a_1.jpg\n2\n" + xywh_text(F1) + face + xywh_text(F2) + face
        + "1--B/b_1.jpg\n1\n" + xywh_text(F3) + face
        + "1--B/b_2.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
    )
    for name, w, h in (("0--A/a_1.jpg", 200, 160), ("1--B/b_1.jpg", 160, 200), ("1--B/b_2.jpg", 100, 100)):
        path = root / "WIDER_val" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_scene(str(path), w, h)
    ckpt = tiny_checkpoint(str(tmp_path / "model-0.10.keras"))
    out, summary_path = str(tmp_path / "pred"), str(tmp_path / "s.json")
    code = main(["--weights", ckpt, "--dataset", str(root), "--out", out, "--json", summary_path,
                 "--batch-size", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert all(f"{s:<6} AP " in printed for s in SETTINGS)
    with open(summary_path) as f:
        summary = json.load(f)
    assert summary["protocol"] == "wider" and summary["weights"] == ckpt
    assert all(0.0 <= summary[s] <= 1.0 for s in SETTINGS)
    assert sorted(read_predictions(out)) == ["0--A/a_1", "1--B/b_1", "1--B/b_2"]

    with pytest.raises(CheckpointError, match="missing.keras: checkpoint not found"):
        main(["--weights", str(tmp_path / "missing.keras"), "--dataset", str(root)])
    flat = tiny_checkpoint(str(tmp_path / "flat.keras"), output_grid=False)
    with pytest.raises(CheckpointError, match=r"flat.keras: output shape \(None, 20\) is not"):
        main(["--weights", flat, "--dataset", str(root)])


def test_best_f1_threshold_is_the_cut_between_true_and_false_detections():
    """Two faces found at 0.9 and 0.7, a false detection at 0.8 and one at 0.3: the best
    cut keeps the first three (P 2/3, R 1, F1 0.8) and its threshold is 0.7."""
    faces = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [50, 50, 60, 60], [200, 0, 205, 5]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.3], np.float32)
    best = best_f1_threshold([(boxes, scores)], [(faces, np.zeros(2, bool))])
    assert best["threshold"] == pytest.approx(0.7)
    assert best["f1"] == pytest.approx(0.8) and best["recall"] == 1.0
    assert best["precision"] == pytest.approx(2 / 3)
    none = best_f1_threshold([(boxes[1:2], scores[1:2])], [(faces, np.zeros(2, bool))])
    assert none == {"threshold": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_pr_curve_counts_follow_the_score_cuts():
    """TensorBoard's PR-curve rows (TP, FP, TN, FN, precision, recall) at evenly spaced
    score cuts: a detection counts from every cut at or below its score; a detection on
    an ignored face counts nowhere; missed faces are false negatives."""
    truth = [(np.float32([[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]]),
              np.array([False, False, True]))]
    found = [(np.float32([[0, 0, 10, 10], [60, 60, 65, 65], [40, 0, 50, 10]]),
              np.float32([0.85, 0.35, 0.95]))]
    tp, fp, tn, fn, precision, recall = pr_curve_counts(found, truth, num_thresholds=11)
    np.testing.assert_array_equal(tp, [1] * 9 + [0, 0])        # 0.85 >= cuts 0.0 .. 0.8
    np.testing.assert_array_equal(fp, [1] * 4 + [0] * 7)       # 0.35 >= cuts 0.0 .. 0.3
    np.testing.assert_array_equal(tn, 0)
    np.testing.assert_array_equal(fn, [1] * 9 + [2, 2])        # 2 valid faces, the ignored one not
    np.testing.assert_allclose(precision, [0.5] * 4 + [1.0] * 7)  # 1 where nothing is kept
    np.testing.assert_allclose(recall, [0.5] * 9 + [0, 0])
