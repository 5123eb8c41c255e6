"""The detector runtime: a trained network, in any of its saved forms, behind one interface.

    detector = FaceDetector.load("model-0.61.keras")  # or .tflite, .onnx, a SavedModel folder
    faces = detector.detect(read_image("photo.jpg"))    # Detections in the photo's pixels
    grids = detector.predict_grids(batch)                # (B, S, S, 3) -> (B, G, G, 5)

`detect.py`, `evaluate.py` and the benchmarks load networks here, and every detection goes
through `data.image.prepare_image` -> network -> `model.postprocess.detect_from_grid`, so
a Keras checkpoint and its TFLite export give the same faces the same way. The input size
and grid size are read from the network itself (`grid_geometry`), never from flags.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np
from tqdm import tqdm

from config import Config
from data.draw import draw_boxes
from data.grid import NUM_CHANNELS
from data.image import prepare_image
from errors import CheckpointError, ConfigError, ImageError
from files import atomic_path
from model.postprocess import Detections, detect_batch, detect_from_grid

KERAS_EXT = ".keras"
TFLITE_EXT = ".tflite"
ONNX_EXT = ".onnx"
SAVED_MODEL_FILE = "saved_model.pb"
FORMATS_HELP = "a .keras checkpoint, a .tflite or .onnx file, or a SavedModel folder"


def check_input_dtype(dtype, source: str) -> None:
    """Raise CheckpointError unless a network takes uint8 pixels, as this project's do."""
    name = np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name
    if name != "uint8":
        raise CheckpointError(
            f"{source}: the network takes {name} inputs, not uint8 pixels: it was saved by "
            "an older version that scaled images outside the model; retrain, or start from "
            "its weights with `python train.py --weights FILE`"
        )


def grid_geometry(input_shape, output_shape, source: str) -> tuple:
    """(input_size S, grid_size G) of a grid detector from its tensor shapes.

    Args:
        input_shape: the network input's shape, (batch, S, S, 3) (batch may be None/-1).
        output_shape: the network output's shape, (batch, G, G, 5).
        source: the file named in errors.

    Raises:
        CheckpointError: the shapes are not those of a grid detector (one line).
    """
    in_shape = tuple(None if d is None or int(d) < 0 else int(d) for d in input_shape)
    out_shape = tuple(None if d is None or int(d) < 0 else int(d) for d in output_shape)
    if len(in_shape) != 4 or in_shape[1] is None or in_shape[1] != in_shape[2] or in_shape[3] != 3:
        raise CheckpointError(
            f"{source}: input shape {_shape_text(input_shape)} is not (batch, S, S, 3)"
        )
    if len(out_shape) != 4 or out_shape[-1] != NUM_CHANNELS or out_shape[1] != out_shape[2] \
            or out_shape[1] is None:
        raise CheckpointError(
            f"{source}: output shape {_shape_text(output_shape)} is not (batch, G, G, 5)"
        )
    return in_shape[1], out_shape[1]


def _onnx_dims(shape) -> tuple:
    """An ONNX tensor shape with its symbolic dimensions ('unk__538', 'batch') as None."""
    return tuple(d if isinstance(d, int) else None for d in shape)


def _shape_text(shape) -> str:
    dims = tuple(None if d is None or int(d) < 0 else int(d) for d in shape)
    return str(dims)


def is_saved_model(path: str) -> bool:
    """True for a SavedModel folder (it holds saved_model.pb)."""
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def resolve_weights(weights: Optional[str], checkpoint_dir: str) -> str:
    """The model file a CLI should load.

    Args:
        weights: --weights as given: a model file, a SavedModel folder, a folder of
            checkpoints (its best model-*.keras), or None.
        checkpoint_dir: searched for the best model-*.keras when `weights` is None.

    Raises:
        CheckpointError: nothing usable found, naming the path.
    """
    if weights is not None and not (os.path.isdir(weights) and not is_saved_model(weights)):
        return weights
    from model.checkpoints import find_best_checkpoint  # imports Keras: only when needed

    return find_best_checkpoint(checkpoint_dir if weights is None else weights)


def model_facts_path(model_path: str) -> str:
    """The JSON file beside a model that may hold facts validated with it (the shipped
    model's `score_threshold`): `models/face_detector.tflite` -> `models/face_detector.json`."""
    return os.path.splitext(model_path)[0] + ".json"


def read_model_facts(model_path: str) -> dict:
    """The facts beside a model ({} when there is no such file).

    Raises:
        CheckpointError: the file exists but is not a JSON object (naming it).
    """
    import json

    path = model_facts_path(model_path)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            facts = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({_first_line(e)})") from None
    if not isinstance(facts, dict):
        raise CheckpointError(f"{path}: expected a JSON object of model facts")
    return facts


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class FaceDetector:
    """A grid face detector ready to run: network + the one decode and NMS path.

    Attributes:
        input_size: S, side of the square network input in pixels.
        grid_size: G, cells per side of the output grid.
        source: the file or folder it was loaded from (or a description).
        kind: 'keras', 'saved_model', 'tflite', 'onnx' or 'callable'.
        keep_aspect: letterbox (True) or stretch (False) images into the input, as the
            network was trained (Config.letterbox).
    """

    def __init__(
        self,
        predict_fn: Callable[[np.ndarray], np.ndarray],
        input_size: int,
        grid_size: int,
        source: str = "<network>",
        kind: str = "callable",
        keep_aspect: bool = True,
        model=None,
    ):
        """Wrap any callable mapping (B, S, S, 3) uint8 inputs to (B, G, G, 5) grids.

        `model` is the object behind `predict_fn` (Keras model, loaded SavedModel, TFLite
        interpreter), kept alive and reachable as `detector.model`.
        """
        self._predict_fn = predict_fn
        self.model = model
        self.input_size = int(input_size)
        self.grid_size = int(grid_size)
        self.source = source
        self.kind = kind
        self.keep_aspect = keep_aspect

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str, keep_aspect: bool = True, num_threads: Optional[int] = None
             ) -> "FaceDetector":
        """Load a .keras checkpoint, a .tflite file or a SavedModel folder.

        Args:
            path: the model file or folder.
            keep_aspect: Config.letterbox of the training run.
            num_threads: TFLite interpreter / onnxruntime threads (default: all CPU cores).

        Raises:
            CheckpointError: missing, unreadable, or not a (B, S, S, 3) -> (B, G, G, 5)
                network; one line naming `path`.
        """
        if os.path.isdir(path):
            if not is_saved_model(path):
                raise CheckpointError(
                    f"{path}: folder without {SAVED_MODEL_FILE}: not a SavedModel ({FORMATS_HELP})"
                )
            return cls._load_saved_model(path, keep_aspect)
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: checkpoint not found")
        ext = os.path.splitext(path)[1].lower()
        if ext == KERAS_EXT:
            from model.checkpoints import load_checkpoint

            return cls.from_keras(load_checkpoint(path, compile=False), path, keep_aspect)
        if ext == TFLITE_EXT:
            return cls._load_tflite(path, keep_aspect, num_threads)
        if ext == ONNX_EXT:
            return cls._load_onnx(path, keep_aspect, num_threads)
        raise CheckpointError(f"{path}: unknown model format '{ext}' (expected {FORMATS_HELP})")

    @classmethod
    def from_keras(cls, model, source: str = "<keras model>", keep_aspect: bool = True
                   ) -> "FaceDetector":
        """Wrap a Keras model; it runs as one traced graph (no per-call Python overhead)."""
        import tensorflow as tf

        try:
            in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
        except (AttributeError, ValueError):
            raise CheckpointError(f"{source}: not a single-input, single-output model") from None
        if any(isinstance(d, (tuple, list)) for d in in_shape + out_shape):
            raise CheckpointError(f"{source}: not a single-input, single-output model")
        size, grid = grid_geometry(in_shape, out_shape, source)
        check_input_dtype(model.inputs[0].dtype, source)
        # A tf.function over the call, batch dimension free so it is traced once: the
        # fastest single-image path (224 px, 2 cores: ~28 ms against ~34 ms for
        # predict_on_batch and ~260 ms for the eager call; benchmarks/bench_detect.py).
        call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
        )
        return cls(lambda x: call(x).numpy(), size, grid, source, "keras", keep_aspect, model)

    @classmethod
    def _load_saved_model(cls, path: str, keep_aspect: bool) -> "FaceDetector":
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(path)
        except Exception as e:  # protobuf, op and I/O errors: all mean "cannot use it"
            raise CheckpointError(f"{path}: cannot load SavedModel ({_first_line(e)})") from None
        signature = getattr(loaded, "signatures", {}).get("serving_default")
        if signature is None:
            raise CheckpointError(f"{path}: SavedModel has no 'serving_default' signature")
        inputs = signature.structured_input_signature[1]
        outputs = signature.structured_outputs
        if len(inputs) != 1 or not isinstance(outputs, dict) or len(outputs) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output SavedModel")
        (in_name, in_spec), = inputs.items()
        (out_name, out_spec), = outputs.items()
        size, grid = grid_geometry(in_spec.shape.as_list(), out_spec.shape.as_list(), path)
        check_input_dtype(in_spec.dtype, path)

        def predict(x):
            return signature(**{in_name: tf.constant(x)})[out_name].numpy()

        # The signature needs its loaded object alive.
        return cls(predict, size, grid, path, "saved_model", keep_aspect, loaded)

    @classmethod
    def _load_tflite(cls, path: str, keep_aspect: bool, num_threads: Optional[int]
                     ) -> "FaceDetector":
        interpreter_class = tflite_interpreter_class()
        threads = num_threads if num_threads else (os.cpu_count() or 1)
        try:
            interpreter = interpreter_class(model_path=path, num_threads=threads)
        except Exception as e:  # ValueError for a file that is not a TFLite flatbuffer
            raise CheckpointError(f"{path}: cannot load TFLite model ({_first_line(e)})") from None
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output model")
        in_detail, out_detail = inputs[0], outputs[0]
        size, grid = grid_geometry(
            in_detail["shape_signature"], out_detail["shape_signature"], path
        )
        check_input_dtype(in_detail["dtype"], path)
        if out_detail["dtype"] != np.float32:
            raise CheckpointError(
                f"{path}: output {np.dtype(out_detail['dtype']).name}; only float32-output "
                "(float32 or float16-weight) TFLite models are supported"
            )
        state = {"batch": None}

        def predict(x):
            if state["batch"] != len(x):
                interpreter.resize_tensor_input(in_detail["index"], [len(x), size, size, 3])
                interpreter.allocate_tensors()
                state["batch"] = len(x)
            interpreter.set_tensor(in_detail["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(out_detail["index"])  # a copy

        return cls(predict, size, grid, path, "tflite", keep_aspect, interpreter)

    @classmethod
    def _load_onnx(cls, path: str, keep_aspect: bool, num_threads: Optional[int]
                   ) -> "FaceDetector":
        """An ONNX export, run by onnxruntime when it is installed, else by OpenCV's dnn."""
        try:
            import onnxruntime
        except ImportError:
            return cls._load_onnx_opencv(path, keep_aspect)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or (os.cpu_count() or 1)
        try:
            session = onnxruntime.InferenceSession(path, options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a bad file
            raise CheckpointError(f"{path}: cannot load ONNX model ({_first_line(e)})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output model")
        size, grid = grid_geometry(_onnx_dims(inputs[0].shape), _onnx_dims(outputs[0].shape),
                                   path)
        check_input_dtype(inputs[0].type.replace("tensor(", "").rstrip(")"), path)
        in_name = inputs[0].name

        def predict(x):
            return session.run(None, {in_name: x})[0]

        return cls(predict, size, grid, path, "onnx", keep_aspect, session)

    @classmethod
    def _load_onnx_opencv(cls, path: str, keep_aspect: bool) -> "FaceDetector":
        """The ONNX file through cv2.dnn; its shapes are read from the graph by `onnx`."""
        try:
            import onnx
        except ImportError:
            raise CheckpointError(f"{path}: running ONNX models needs onnxruntime "
                                  "(pip install onnxruntime) or the onnx package") from None
        try:
            graph = onnx.load(path, load_external_data=False).graph
            net = cv2.dnn.readNetFromONNX(path)
        except Exception as e:  # protobuf DecodeError, cv2.error: a file that is not ONNX
            raise CheckpointError(f"{path}: cannot load ONNX model ({_first_line(e)})") from None
        if len(graph.input) != 1 or len(graph.output) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output model")

        def dims(value):
            return _onnx_dims(d.dim_value if d.HasField("dim_value") else None
                              for d in value.type.tensor_type.shape.dim)

        size, grid = grid_geometry(dims(graph.input[0]), dims(graph.output[0]), path)
        elem_type = graph.input[0].type.tensor_type.elem_type
        check_input_dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type), path)

        def predict(x):
            net.setInput(x)
            return net.forward()

        return cls(predict, size, grid, path, "onnx", keep_aspect, net)

    # ---------------------------------------------------------------- running
    def predict_grids(self, batch: np.ndarray) -> np.ndarray:
        """Network outputs for a batch of prepared inputs.

        Args:
            batch: (B, S, S, 3) RGB uint8 network inputs (`data.image.prepare_image`).

        Returns:
            (B, G, G, 5) float32 grids, channels (h, w, yc, xc, class).
        """
        batch = np.asarray(batch)
        if batch.dtype != np.uint8:
            # Casting would turn scaled floats into black images without a word.
            raise ValueError(f"predict_grids expects uint8 pixels (data.image.prepare_image), "
                             f"got {batch.dtype}")
        batch = np.ascontiguousarray(batch)
        s = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise ValueError(f"predict_grids expects (B, {s}, {s}, 3) inputs, got {batch.shape}")
        grids = np.asarray(self._predict_fn(batch), dtype=np.float32)
        g = self.grid_size
        if grids.shape != (len(batch), g, g, NUM_CHANNELS):
            raise CheckpointError(
                f"{self.source}: the network returned shape {grids.shape} for {batch.shape} "
                f"inputs; expected ({len(batch)}, {g}, {g}, {NUM_CHANNELS})"
            )
        return grids

    __call__ = predict_grids

    def prepare(self, image_bgr: np.ndarray):
        """BGR uint8 image -> (network input (S, S, 3) RGB uint8, Letterbox)."""
        return prepare_image(image_bgr, self.input_size, self.keep_aspect)

    def detect(
        self,
        image_bgr: np.ndarray,
        score_threshold: float = Config.score_threshold,
        nms_iou: float = Config.nms_iou,
        max_detections: int = Config.max_detections,
    ) -> Detections:
        """Faces in one (H, W, 3) BGR uint8 image; boxes xywh in its pixels."""
        x, letterbox = self.prepare(image_bgr)
        grid = self.predict_grids(x[None])[0]
        return detect_from_grid(grid, letterbox, score_threshold, nms_iou, max_detections)

    def detect_batch(
        self,
        images: Sequence[np.ndarray],
        score_threshold: float = Config.score_threshold,
        nms_iou: float = Config.nms_iou,
        max_detections: int = Config.max_detections,
    ) -> List[Detections]:
        """`detect` for several images (any sizes) in one network call."""
        if len(images) == 0:
            return []
        prepared = [self.prepare(image) for image in images]
        grids = self.predict_grids(np.stack([x for x, _ in prepared]))
        return detect_batch(
            grids, [lb for _, lb in prepared], score_threshold, nms_iou, max_detections
        )


def tflite_interpreter_class():
    """The TFLite interpreter: LiteRT's (`ai_edge_litert`) when installed, else TF's own.

    TF 2.21 still ships `tf.lite.Interpreter` (it warns that it will move to LiteRT); it
    works offline with nothing more to install, so it is the fallback.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    import tensorflow as tf

    class _Interpreter(tf.lite.Interpreter):
        def __init__(self, *args, **kwargs):
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
                super().__init__(*args, **kwargs)

    return _Interpreter


# -------------------------------------------------------------------- results
def face_rows(detections: Detections) -> List[dict]:
    """Detections -> [{x, y, w, h, score}]: pixel ints, score to 3 decimals (CLI output)."""
    return [
        {"x": int(round(float(b[0]))), "y": int(round(float(b[1]))),
         "w": int(round(float(b[2]))), "h": int(round(float(b[3]))),
         "score": round(float(s), 3)}
        for b, s in zip(detections.boxes, detections.scores)
    ]


def annotate(image_bgr: np.ndarray, detections: Detections) -> np.ndarray:
    """A copy of the image with the detections' boxes and scores drawn."""
    return draw_boxes(image_bgr, detections.boxes, detections.scores)


def write_image(path: str, image_bgr: np.ndarray) -> None:
    """Write an image atomically, its format chosen by the extension.

    Raises:
        ImageError: one line naming `path` for every way the write can fail: an extension
            OpenCV has no writer for (cv2.error), a full disk or a folder that cannot be
            created or written (OSError), or the encoder refusing the image.
    """
    try:
        with atomic_path(path) as tmp:
            if not cv2.imwrite(tmp, image_bgr):
                raise ImageError(f"{path}: cannot write image (the encoder refused it)")
    except ImageError:
        raise
    except cv2.error as e:
        raise ImageError(f"{path}: cannot write image ({_first_line(e)})") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot write image ({e.strerror or e})") from None


# ---------------------------------------------------------------------- video
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
_QUIT_KEYS = (ord("q"), 27)
# Weight of the newest frame in the on-screen frame rate (smooths the reading).
_FPS_SMOOTHING = 0.1


class VideoSummary(NamedTuple):
    frames: int  # frames processed
    seconds: float  # wall time of reading, detecting, drawing and writing them
    faces: int  # detections over all frames
    output: Optional[str]  # the video written, if any
    stopped: str  # 'end of video', 'quit', 'interrupted' or 'read failed'

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def annotate_video(
    detector: FaceDetector,
    source: Union[int, str],
    output: Optional[str] = None,
    show: bool = False,
    score_threshold: float = Config.score_threshold,
    nms_iou: float = Config.nms_iou,
    max_detections: int = Config.max_detections,
    progress: bool = True,
) -> VideoSummary:
    """Detect faces in every frame of a video file or camera, drawing boxes and the fps.

    Args:
        detector: the loaded detector.
        source: a video file path, or a camera index (int).
        output: write the annotated video here (.mp4 or .avi), atomically: the file
            appears complete when the stream ends, q/Esc is pressed or Ctrl-C stops it.
        show: show the annotated frames in a window (needs a display); q or Esc stops.
        progress: a tqdm bar over the frames.

    Returns:
        VideoSummary (frames, seconds, faces, output, how it stopped); `.fps` is the
        end-to-end frame rate.
    """
    from data.capture import open_capture

    if output is not None:
        ext = os.path.splitext(output)[1].lower()
        if ext not in VIDEO_CODECS:
            raise ConfigError(
                f"--output {output}: video output must end in {' or '.join(VIDEO_CODECS)}"
            )
    capture = open_capture(source)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(source, str) else 0
    fps_in = capture.get(cv2.CAP_PROP_FPS)
    fps_in = fps_in if 0 < fps_in < 1000 else 30.0
    bar = tqdm(total=total or None, desc="video", unit="frame", disable=not progress)
    frames = faces = 0
    stopped = "end of video"
    writer = None
    try:
        with (atomic_path(output) if output else contextlib.nullcontext()) as tmp:
            started = last = time.perf_counter()
            shown_fps = 0.0
            while True:
                try:
                    ok, frame = capture.read()
                    if not ok or frame is None:
                        stopped = "end of video" if isinstance(source, str) else "read failed"
                        break
                    det = detector.detect(frame, score_threshold, nms_iou, max_detections)
                    now = time.perf_counter()
                    rate = 1.0 / max(now - last, 1e-9)
                    shown_fps = rate if frames == 0 else (
                        _FPS_SMOOTHING * rate + (1 - _FPS_SMOOTHING) * shown_fps)
                    last = now
                    drawn = annotate(frame, det)
                    _draw_fps(drawn, shown_fps)
                    if tmp is not None:
                        if writer is None:
                            writer = _open_writer(tmp, output, fps_in, drawn.shape)
                        writer.write(drawn)
                    frames += 1
                    faces += len(det.scores)
                    bar.update(1)
                    if show:
                        cv2.imshow("detect.py (q to stop)", drawn)
                        if cv2.waitKey(1) & 0xFF in _QUIT_KEYS:
                            stopped = "quit"
                            break
                except KeyboardInterrupt:
                    stopped = "interrupted"  # a camera's normal end: keep what was written
                    break
            seconds = time.perf_counter() - started
            if writer is not None:
                writer.release()
                writer = None
            elif tmp is not None:
                raise ImageError(f"{source}: no frame could be read; nothing written")
    except cv2.error as e:
        if show:
            raise ConfigError(f"--show: cannot open a window ({_first_line(e)})") from None
        raise
    finally:
        if writer is not None:
            writer.release()
        bar.close()
        capture.release()
        if show:
            _destroy_windows()
    return VideoSummary(frames, seconds, faces, output, stopped)


def _open_writer(tmp: str, output: str, fps: float, shape) -> "cv2.VideoWriter":
    codec = VIDEO_CODECS[os.path.splitext(output)[1].lower()]
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise ImageError(f"{output}: cannot write video (codec {codec} unavailable)")
    return writer


def _draw_fps(image: np.ndarray, fps: float) -> None:
    """Write the frame rate in the top-left corner, in place (white on a dark outline)."""
    scale = max(0.5, min(image.shape[:2]) / 600)
    thickness = max(1, round(scale * 2))
    origin = (8, int(8 + 22 * scale))
    text = f"{fps:.1f} fps"
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)


def _destroy_windows() -> None:
    try:
        cv2.destroyAllWindows()
    except cv2.error:  # headless build: there was no window
        pass
