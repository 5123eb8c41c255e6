"""The peer face detectors of ../shared/peers behind this project's `detect` interface.

    yunet = YuNet(path)                    # cv2.FaceDetectorYN (libfacedetection.train)
    ultra = UltraFace(path)                # cv2.dnn over the RFB-320 ONNX file
    faces = yunet.detect(image_bgr)        # model.postprocess.Detections, image pixels

YuNet's detections carry its five points (`Detections.landmarks` (N, 5, 2) x, y in the
pixels of the image given): FaceDetectorYN's rows are x y w h, then right eye, left eye,
nose tip, right and left mouth corner (the subject's sides: the right eye has the
smaller x in a frontal face), then the score: `data.landmarks.LANDMARK_NAMES` order.
UltraFace has no points (landmarks None).

Each runs its own published pre-processing, network and NMS on the decoded photo, with
the settings ../shared/README.md gives for WIDER FACE (YuNet: long side 640, score 0.02,
NMS 0.45; UltraFace: 320x240 RGB, (x - 127) / 128, score > 0.1, hard NMS 0.3). Used by
benchmarks only; never imported by the library.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from data.boxes import xywh_to_xyxy
from data.landmarks import NUM_LANDMARKS
from model.postprocess import Detections, nms

PEERS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "peers")
YUNET_FILE = os.path.join(PEERS_DIR, "yunet_n_640_640.onnx")
ULTRAFACE_FILE = os.path.join(PEERS_DIR, "ultraface_rfb_320.onnx")


class YuNet:
    """YuNet-n through OpenCV's FaceDetectorYN, the image scaled to a long side of 640."""

    name = "YuNet-n 640"

    def __init__(self, path: str = YUNET_FILE, long_side: int = 640, score: float = 0.02,
                 nms_iou: float = 0.45, top_k: int = 5000):
        self.long_side = long_side
        self._net = cv2.FaceDetectorYN.create(path, "", (long_side, long_side), score,
                                              nms_iou, top_k)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        h, w = image_bgr.shape[:2]
        k = self.long_side / max(h, w)
        size = (max(1, round(w * k)), max(1, round(h * k)))
        resized = cv2.resize(image_bgr, size)
        self._net.setInputSize(size)
        _, faces = self._net.detect(resized)
        if faces is None or len(faces) == 0:
            return Detections.empty()
        boxes = xywh_to_xyxy(faces[:, :4])  # FaceDetectorYN's x y w h -> corners
        boxes[:, [0, 2]] *= w / size[0]
        boxes[:, [1, 3]] *= h / size[1]
        # Columns 4..13: five x y points, already in LANDMARK_NAMES order (module doc).
        landmarks = faces[:, 4:14].astype(np.float32).reshape(-1, NUM_LANDMARKS, 2)
        landmarks *= np.float32([w / size[0], h / size[1]])
        return Detections(boxes, faces[:, 14].astype(np.float32), landmarks)


class UltraFace:
    """Ultra-Light-Fast RFB-320 through cv2.dnn: 320x240 input, decoded corner boxes."""

    name = "UltraFace RFB-320"

    def __init__(self, path: str = ULTRAFACE_FILE, score: float = 0.1, nms_iou: float = 0.3):
        self._net = cv2.dnn.readNetFromONNX(path)
        self.score, self.nms_iou = score, nms_iou

    def detect(self, image_bgr: np.ndarray) -> Detections:
        h, w = image_bgr.shape[:2]
        blob = cv2.dnn.blobFromImage(image_bgr, 1 / 128.0, (320, 240), (127, 127, 127),
                                     swapRB=True)
        self._net.setInput(blob)
        names = self._net.getUnconnectedOutLayersNames()
        outputs = dict(zip(names, self._net.forward(names)))
        scores, boxes = _ultraface_outputs(list(outputs.values()))
        keep = scores > self.score
        scores = scores[keep]
        boxes = boxes[keep] * np.float32([w, h, w, h])
        if len(scores) == 0:
            return Detections.empty()
        order = nms(boxes, scores, self.nms_iou, max_detections=0)
        return Detections(boxes[order], scores[order])


def _ultraface_outputs(outputs):
    """(face scores (N,), corner boxes (N, 4) in [0, 1]) from the two network outputs."""
    scores = boxes = None
    for out in outputs:
        out = np.asarray(out, dtype=np.float32).reshape(-1, out.shape[-1])
        if out.shape[-1] == 2:
            scores = out[:, 1]
        elif out.shape[-1] == 4:
            boxes = out
    if scores is None or boxes is None:
        raise ValueError("UltraFace outputs: expected (1, N, 2) scores and (1, N, 4) boxes")
    return scores, boxes
