"""The evaluation runner: a detector over a set of images, its faces kept and written.

`evaluate_model` reads each record's image, runs the images in batches through
`model.detector.FaceDetector.detect_batch` (the detector prepares them with its own
input size and letterbox), and returns the detections in original-image pixels, also
written in the official submission layout (`model.predictions`) when asked. They are
scored with `model.wider_protocol.wider_ap` or `model.metrics.average_precision`, as
any other detector's predictions are (`python evaluate.py`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union

from tqdm import tqdm

from config import Config
from data.image import read_image
from model.detector import FaceDetector
from model.postprocess import DetectSpec
from model.predictions import Predictions, prediction_key, write_predictions


def evaluate_model(
    detector: Union[FaceDetector, str],
    records: Sequence,
    config: Config,
    out_dir: Optional[str] = None,
    score_threshold: Optional[float] = None,
    progress: bool = True,
    letterbox: Optional[bool] = None,
) -> Predictions:
    """Run a detector over images and collect (and optionally write) its detections.

    Args:
        detector: a `FaceDetector`, or the path of a model it loads
            (`FaceDetector.load`).
        records: ImageRecords; their images are read from `record.path`.
        config: batch_size, nms_iou, max_detections, workers, max_image_pixels and
            eval_score_threshold.
        out_dir: if given, each image's detections are written there in the submission
            layout (`write_predictions`), also for images without detection.
        score_threshold: detections below it are dropped; default
            config.eval_score_threshold, low, as the protocol scores the whole PR curve.
        progress: a tqdm bar over the images.
        letterbox: with a model path, forwarded to `FaceDetector.load`: None, as the
            model file says; True / False must agree with it.

    Returns:
        {prediction_key(record.name): Detections in original-image pixels}.
    """
    if isinstance(detector, (str, os.PathLike)):
        detector = FaceDetector.load(os.fspath(detector), letterbox=letterbox)
    elif letterbox is not None:
        raise ValueError(
            f"letterbox={letterbox}: only with a model path; a FaceDetector prepares "
            "images as it was loaded to"
        )
    if score_threshold is None:
        score_threshold = config.eval_score_threshold
    spec = DetectSpec.from_config(config, score_threshold)

    def load(record):
        return read_image(record.path, max_pixels=config.max_image_pixels)

    batches = [records[i : i + config.batch_size] for i in range(0, len(records), config.batch_size)]
    predictions: Predictions = {}
    bar = tqdm(total=len(records), desc="evaluate", unit="image", disable=not progress)
    # Images of the next batch are decoded in threads while the network runs this one, and
    # the submission files (each fsync'ed, a few ms) are written by a second pool meanwhile.
    writes = []
    with ThreadPoolExecutor(max_workers=max(2, config.workers)) as pool, \
            ThreadPoolExecutor(max_workers=4) as writer, bar:
        pending = [pool.submit(load, r) for r in batches[0]] if batches else []
        for b, batch in enumerate(batches):
            images = [f.result() for f in pending]
            if b + 1 < len(batches):
                pending = [pool.submit(load, r) for r in batches[b + 1]]
            found = detector.detect_batch(images, spec)
            for record, det in zip(batch, found):
                predictions[prediction_key(record.name)] = det
                if out_dir is not None:
                    writes.append(writer.submit(
                        write_predictions, out_dir, record.name, det.boxes, det.scores
                    ))
            bar.update(len(batch))
        for done in writes:
            done.result()  # re-raise the first failed write
    return predictions
