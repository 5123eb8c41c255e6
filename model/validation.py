"""The validation callback: IoU, MSE and AP over the validation set at every epoch end.

It puts `val_iou`, `val_mse` and `val_ap` (and `val_recall`, and `val_f1` with the score
threshold that reaches it, `val_f1_threshold`) into the epoch's `logs` before the
checkpoint, early-stopping and learning-rate callbacks read them, so place it first among
those; the checkpoint stores that threshold in the model's contract. AP uses the very decode and NMS code `detect.py` uses
(`model.postprocess.detect_from_grid`).

With landmarks (`Config.landmarks`) it logs `val_nme` too: `data.landmarks.nme` (mean
point error over the inter-ocular distance) over the positive cells of the validation
faces that have points, every cell's predicted points decoded with its own predicted box
as detection decodes them (`data.grid.cell_points`), the truth from its target (a mouth
centre against the mean of the predicted corners). Cells, not matched detections: the
number depends on the network's points alone, not on a score threshold or NMS; a face
with several positive cells counts once per cell. NaN when no cell has both eyes.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from config import Config
from data.boxes import InputMapping, box_iou
from data.grid import CLASS, H, W, XC, YC, cell_box_corners, cell_points
from data.landmarks import MOUTH_CENTRE, NUM_LANDMARKS, nme
from model.checkpoints import first_nonfinite_variable
from model.metrics import average_precision, best_f1_threshold, pr_curve_counts
from model.postprocess import DetectSpec, detect_from_grid

# What GridValidation logs at every epoch's end, each name with the direction in which it
# is better: the one place those names and directions are stated (training ranks
# checkpoints, stops early and lowers the rate by them; every other logged value is a loss,
# better lower). The threshold is an operating point, neither better high nor low.
METRICS = {"val_iou": "max", "val_mse": "min", "val_ap": "max", "val_recall": "max",
           "val_f1": "max", "val_f1_threshold": None, "val_nme": "min"}  # val_nme: landmarks
# The operating point it logs (the score cut of the best F1) and the F1 reached there: a
# checkpoint's contract stores the cut as detect.py's default threshold.
OPERATING_POINT = ("val_f1_threshold", "val_f1")


def cell_iou(targets: np.ndarray, predictions: np.ndarray, grid_sizes=None) -> np.ndarray:
    """IoU between each face and the box predicted in its cell.

    Args:
        targets: (B, G, G, 5) grid targets, or the (B, N, 5) cells of several levels.
        predictions: network outputs of the same shape.
        grid_sizes: each level's cells per side for (B, N, 5) cells; None for grids.

    Returns:
        (F,) IoU for the F face cells of the batch.
    """
    faces = targets[..., CLASS] == 1.0
    truth = np.stack([c[faces] for c in cell_box_corners(targets, grid_sizes)], axis=-1)
    predicted = np.stack([c[faces] for c in cell_box_corners(predictions, grid_sizes)],
                         axis=-1)
    return box_iou(truth, predicted)


def box_squared_errors(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(F, 4) squared errors of the box channels (h, w, yc, xc) on the F face cells (of
    grids or of several levels' cells alike)."""
    faces = targets[..., CLASS] == 1.0
    channels = [H, W, YC, XC]
    return (targets[faces][:, channels] - predictions[faces][:, channels]) ** 2


def cell_landmark_pairs(targets: np.ndarray, predictions: np.ndarray, image_size: int,
                        grid_sizes=None):
    """(predicted (F, 5, 2), true (F, 6, 2)) points in input pixels of the F face cells of
    a batch whose targets hold any point (module doc; POINT_NAMES order, NaN where absent).

    Args:
        targets: (B, G, G, 17) targets (or (B, N, 17) cells of several levels).
        predictions: (B, G, G, 15) network outputs (or (B, N, 15)).
    """
    faces = (targets[..., CLASS] == 1.0).reshape(len(targets), -1)
    truth = cell_points(targets, image_size, grid_sizes)[faces]
    predicted = cell_points(predictions, image_size, grid_sizes)[faces]
    labelled = np.isfinite(truth).all(axis=-1).any(axis=-1)
    return predicted[labelled], truth[labelled]


class GridValidation(keras.callbacks.Callback):
    """Compute validation metrics with the model at each epoch end.

    Args:
        dataset: a validation `FaceGridDataset` (deterministic); its `load_batch(i)` gives
            (images, targets, faces) with faces a list of (boxes (N, 4) x1, y1, x2, y2,
            ignore) in network-input pixels.
        config: score threshold, NMS IoU and detection cap for AP.
        max_batches: evaluate at most this many batches (0 = all).
        guard: a `NonFiniteLossGuard`; when it fired, the epoch is not evaluated.
        image_log_dir: if set, TensorBoard gets under this folder every epoch the
            precision-recall curve of validation (IoU 0.5; the PR-curves tab) and a few
            fixed validation images: true faces green (ignored ones grey), the detections
            at `config.score_threshold` red with their scores (and their landmarks).
        num_images: how many images to log.
    """

    PR_THRESHOLDS = 101  # score cuts of the logged PR curve, 0.00 to 1.00

    def __init__(self, dataset, config: Config, max_batches: int = 0, guard=None,
                 image_log_dir: Optional[str] = None, num_images: int = 4):
        super().__init__()
        self.dataset = dataset
        self.config = config
        self.max_batches = max_batches
        self.guard = guard
        self.image_log_dir = image_log_dir
        self.num_images = num_images
        self._writer = None

    def set_model(self, model):
        super().set_model(model)
        import tensorflow as tf

        # A traced inference call: as fast as predict_on_batch, and unlike it correct under
        # MirroredStrategy (which returned every replica's copy of the batch).
        self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def evaluate(self) -> dict:
        """Run the model over the validation set and return the metrics."""
        size = self.config.input_size
        identity = InputMapping.fit(size, size, size)  # input pixels map onto themselves
        ious, sq_errors, detections, ground_truths = [], [], [], []
        logged_images = None
        num_batches = len(self.dataset)
        if self.max_batches:
            num_batches = min(num_batches, self.max_batches)
        grid_sizes = self.config.grid_spec().grid_sizes
        landmarks = self.config.landmarks
        predicted_points, true_points = [], []
        # AP needs the low scores too: the evaluation threshold, not the detection one.
        spec = DetectSpec.from_config(self.config, self.config.eval_score_threshold)
        for i in range(num_batches):
            images, targets, faces = self.dataset.load_batch(i)
            predictions = np.asarray(self._predict(images), dtype=np.float32)
            ious.append(cell_iou(targets, predictions, grid_sizes))
            sq_errors.append(box_squared_errors(targets, predictions))
            if landmarks:
                predicted, truth = cell_landmark_pairs(targets, predictions, size, grid_sizes)
                predicted_points.append(predicted)
                true_points.append(truth)
            for grid, face in zip(predictions, faces):
                detections.append(detect_from_grid(grid, identity, spec, grid_sizes))
                ground_truths.append(tuple(face[:2]))  # boxes, ignore
            if logged_images is None:
                logged_images = (images[: self.num_images], detections[: self.num_images],
                                 ground_truths[: self.num_images])
        ious = np.concatenate(ious) if ious else np.zeros(0)
        sq_errors = np.concatenate(sq_errors) if sq_errors else np.zeros((0, 4))
        ap, recall = average_precision(detections, ground_truths, iou_threshold=0.5,
                                       return_recall=True)
        # The operating point: saved in the checkpoint's contract as detect.py's default.
        best = best_f1_threshold(detections, ground_truths, iou_threshold=0.5)
        self._logged_images = logged_images
        self._pr_curve = pr_curve_counts(detections, ground_truths, iou_threshold=0.5,
                                         num_thresholds=self.PR_THRESHOLDS)
        return {
            "val_iou": float(ious.mean()) if ious.size else 0.0,
            "val_mse": float(sq_errors.mean()) if sq_errors.size else 0.0,
            "val_ap": float(ap),
            "val_recall": float(recall),
            "val_f1": best["f1"],
            "val_f1_threshold": best["threshold"],
            **({"val_nme": _nme(predicted_points, true_points)} if landmarks else {}),
        }

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (self.guard is not None and self.guard.triggered):
            return
        logs.update(self.evaluate())
        if self.image_log_dir:
            self._log_images(epoch)

    def _log_images(self, epoch: int) -> None:
        import tensorflow as tf
        from tensorboard.plugins.pr_curve import metadata as pr_metadata

        from data.draw import draw_boxes, draw_points

        images, detections, ground_truths = self._logged_images
        threshold = self.config.score_threshold
        drawn = []
        for image, det, (boxes, ignore) in zip(images, detections, ground_truths):
            bgr = np.ascontiguousarray(image[..., ::-1])  # network input is RGB
            bgr = draw_boxes(bgr, boxes, ignore=ignore, color=(0, 255, 0))
            # Detections are kept down to the evaluation threshold (0.02) for AP; drawn
            # are only those detect.py would report, or the low ones bury the picture.
            shown = det.scores >= threshold
            bgr = draw_boxes(bgr, det.boxes[shown], scores=det.scores[shown], color=(0, 0, 255))
            if det.landmarks is not None:
                bgr = draw_points(bgr, det.landmarks[shown])
            drawn.append(bgr[..., ::-1])
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.image_log_dir)
        with self._writer.as_default():
            tf.summary.image("validation_detections", np.stack(drawn), step=epoch,
                             max_outputs=len(drawn),
                             description=f"green: ground truth (grey: ignored), red: "
                                         f"detections scoring >= {threshold:g}")
            tf.summary.write(
                "validation_pr_curve/pr_curves", self._pr_curve, step=epoch,
                metadata=pr_metadata.create_summary_metadata(
                    display_name="validation PR curve (IoU 0.5)",
                    description="detections of the validation images ranked by score",
                    num_thresholds=self.PR_THRESHOLDS).SerializeToString())
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _nme(predicted: list, truth: list) -> float:
    """`data.landmarks.nme` of the batches' (F, 5, 2) predicted and (F, 6, 2) true points."""
    if not predicted or not sum(len(p) for p in predicted):
        return float("nan")
    truth = np.concatenate(truth)
    return nme(np.concatenate(predicted), truth[:, :NUM_LANDMARKS], truth[:, MOUTH_CENTRE])


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training at the first NaN or Inf loss, or weights gone NaN or Inf at an epoch's
    end, remembering where it happened.

    The loss alone misses the last step of an epoch: its loss is computed before its
    update, so a step that blows the weights up still reports a finite loss, and the
    epoch's end would then validate and save the broken weights. So at each epoch end the
    weights and optimizer state are checked too (`first_nonfinite_variable`, a cheap host
    pass). Place the guard before the validation and checkpoint callbacks: they consult
    `triggered`, so weights that went non-finite are never evaluated or saved.
    """

    def __init__(self):
        super().__init__()
        self.triggered: Optional[str] = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.triggered = (
                f"non-finite loss ({float(loss)}) at epoch {self._epoch + 1}, batch {batch + 1}"
            )
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.triggered:
            return
        bad = first_nonfinite_variable(self.model)
        if bad:
            self.triggered = f"non-finite weights ({bad}) after epoch {epoch + 1}"
            self.model.stop_training = True
