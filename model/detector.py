"""The detector runtime: a trained network, in any of its saved forms, behind one interface.

    detector = FaceDetector.load("model-0.61.keras")  # or .tflite, .onnx, a SavedModel folder
    faces = detector.detect(read_image("photo.jpg"))    # Detections in the photo's pixels
    grids = detector.predict_grids(batch)                # (B, S, S, 3) -> (B, G, G, 5)

A network with landmarks (15 channels per cell; its contract says so, and so does its
output's shape) gives every detection its five points (`Detections.landmarks`), in every
format, with no flag.

`detect.py`, `evaluate.py` and the benchmarks load networks here, and every detection goes
through `data.image.prepare_image` -> network -> `model.postprocess.detect_from_grid`, so
a Keras checkpoint and its TFLite export give the same faces the same way. The input size
and grid size are read from the network itself (`grid_geometry`), letterbox or stretch and
the validated score threshold from the contract stored in the file (`model.contract`),
never from flags.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, List, Optional, Sequence

import cv2
import numpy as np

from config import Config
from data.boxes import xyxy_to_xywh
from data.draw import draw_boxes, draw_points
from data.grid import (LANDMARK_OUTPUT_CHANNELS, NUM_CHANNELS, GridSpec, embed_band,
                       level_grid_sizes, levels_of_cells, output_has_landmarks)
from data.image import INPUT_DTYPE, prepare_image
from common.errors import CheckpointError, ConfigError, ImageError, first_line
from common.files import atomic_path
from model.contract import ModelContract, contract_beside, read_contract
from model.formats import FORMATS_HELP, format_of
from model.postprocess import DetectSpec, Detections, detect_batch, detect_from_grid

SAVED_MODEL_FILE = "saved_model.pb"


def check_input_dtype(dtype, source: str) -> None:
    """Raise CheckpointError unless a network takes uint8 pixels, as this project's do."""
    name = np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name
    if name != INPUT_DTYPE:
        raise CheckpointError(
            f"{source}: the network takes {name} inputs, not uint8 pixels: it was saved by "
            "an older version that scaled images outside the model; retrain, or start from "
            "its weights with `python train.py --weights FILE`"
        )


def grid_geometry(input_shape, output_shape, source: str) -> tuple:
    """(input_size S, grid_size G, grid_levels L, landmarks, input_height) of a grid
    detector from its tensor shapes.

    Args:
        input_shape: the network input's shape, (batch, S, S, 3) (batch may be None/-1),
            or a band input's (batch, R, S, 3), R < S (`data.grid.GridSpec.input_height`,
            then R; else 0).
        output_shape: the network output's shape, (batch, G, G, 5) for one grid (L = 1), or
            (batch, N, 5) for the cells of several levels, finest G (`data.grid.levels_of_cells`);
            a band input's rows of them; 15 channels instead of 5 for a network with
            landmarks (landmarks True).
        source: the file named in errors.

    Raises:
        CheckpointError: the shapes are not those of a grid detector (one line).
    """
    in_shape = tuple(None if d is None or int(d) < 0 else int(d) for d in input_shape)
    out_shape = tuple(None if d is None or int(d) < 0 else int(d) for d in output_shape)
    if (len(in_shape) != 4 or None in in_shape[1:3] or in_shape[1] > in_shape[2]
            or in_shape[3] != 3):
        raise CheckpointError(
            f"{source}: input shape {_shape_text(input_shape)} is not (batch, S, S, 3) (or "
            "a band of it, (batch, R, S, 3) with R < S)"
        )
    size = in_shape[2]
    height = 0 if in_shape[1] == size else in_shape[1]
    channels = out_shape[-1] if out_shape else None
    known = channels in (NUM_CHANNELS, LANDMARK_OUTPUT_CHANNELS)
    landmarks = known and output_has_landmarks(channels)
    if len(out_shape) == 3 and known and out_shape[1] is not None:
        levels = levels_of_cells(size, out_shape[1], height)
        if levels is None:
            raise CheckpointError(
                f"{source}: output shape {_shape_text(output_shape)} is not the (batch, N, 5) "
                f"cells of grid levels for a {_input_text(size, height)} input"
            )
        return (size,) + levels + (landmarks, height)
    if (len(out_shape) != 4 or not known or None in out_shape[1:3]
            or out_shape[1] * size != out_shape[2] * in_shape[1]):
        raise CheckpointError(
            f"{source}: output shape {_shape_text(output_shape)} is not (batch, G, G, 5) "
            f"(or {LANDMARK_OUTPUT_CHANNELS} channels with landmarks)"
        )
    return size, out_shape[2], 1, landmarks, height


def _input_text(size: int, height: int = 0) -> str:
    """'320-px' for a square input, '384x256-px' for a band (width x height)."""
    return f"{size}-px" if not height else f"{size}x{height}-px"


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


class FaceDetector:
    """A grid face detector ready to run: network + the one decode and NMS path.

    Attributes:
        input_size: S, side of the square network input in pixels.
        input_height: 0, or the rows of the square a band network sees (its input is
            (input_height, S, 3); `data.grid.GridSpec.input_height`).
        grid_size: G, cells per side of the output grid (the finest level's).
        grid_levels: how many grid levels it outputs; grid_sizes: each one's G.
        source: the file or folder it was loaded from (or a description).
        kind: 'keras', 'saved_model', 'tflite', 'onnx' or 'callable'.
        contract: how the network is fed (`model.contract.ModelContract`): read from the
            model file by `load`, else from the run's config.json beside it, else the
            defaults (letterbox on, no validated threshold).
        contract_origin: where `contract` came from: 'model' (the file), 'config.json'
            (beside it), 'given' (to `from_keras`) or 'default'.
        grid: the input and output geometry (`contract.grid`, a `data.grid.GridSpec`);
            letterbox: letterbox (True) or stretch (False) images into the input, as the
            network was trained (`grid.letterbox`).
        score_threshold: the threshold chosen for this model on validation, else
            Config.score_threshold; detect_spec: it with Config's NMS IoU and cap, the
            default of `detect` for this model (`model.postprocess.DetectSpec`).
    """

    def __init__(
        self,
        predict_fn: Callable[[np.ndarray], np.ndarray],
        input_size: int,
        grid_size: int,
        source: str = "<network>",
        kind: str = "callable",
        letterbox: bool = True,
        model=None,
        contract: Optional[ModelContract] = None,
        contract_origin: str = "default",
        grid_levels: int = 1,
        landmarks: bool = False,
        input_height: int = 0,
    ):
        """Wrap any callable mapping (B, S, S, 3) uint8 inputs to (B, G, G, 5) grids (or
        to the (B, N, 5) cells of `grid_levels` levels; 15 channels with `landmarks`), or
        a band input's (B, input_height, S, 3) inputs to its cells of them.

        `model` is the object behind `predict_fn` (Keras model, loaded SavedModel, TFLite
        interpreter), kept alive and reachable as `detector.model`. With a `contract`,
        `letterbox` is ignored: the contract says how the network was trained.
        """
        self._predict_fn = predict_fn
        self.model = model
        self.input_size = int(input_size)
        self.grid_size = int(grid_size)
        self.grid_levels = int(grid_levels)
        self.grid_sizes = level_grid_sizes(self.grid_size, self.grid_levels)
        self.source = source
        self.kind = kind
        self.input_height = int(input_height)
        if contract is None:
            contract = ModelContract(GridSpec(self.input_size, self.grid_size, self.grid_levels,
                                              bool(letterbox), landmarks=bool(landmarks),
                                              input_height=self.input_height))
        else:
            contract.check_geometry(self.input_size, self.grid_size, source, self.grid_levels,
                                    bool(landmarks), self.input_height)
        self.contract = contract
        self.contract_origin = contract_origin

    @property
    def score_threshold(self) -> float:
        threshold = self.contract.score_threshold
        return Config.score_threshold if threshold is None else threshold

    @property
    def grid(self) -> GridSpec:
        """The network's input and output geometry (its contract's)."""
        return self.contract.grid

    @property
    def letterbox(self) -> bool:
        return self.contract.grid.letterbox

    @property
    def landmarks(self) -> bool:
        """Whether the network predicts five landmarks per face (its detections carry them)."""
        return self.contract.grid.landmarks

    @property
    def detect_spec(self) -> DetectSpec:
        """The model's own post-processing: its validated threshold (`score_threshold`),
        Config's NMS IoU and detection cap. `detect`'s default."""
        return DetectSpec(score_threshold=self.score_threshold)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str, letterbox: Optional[bool] = None,
             num_threads: Optional[int] = None) -> "FaceDetector":
        """Load a .keras checkpoint, a .tflite or .onnx file or a SavedModel folder, with
        the preprocessing contract stored in it.

        Args:
            path: the model file or folder.
            letterbox: None: as the model's contract says. True / False (letterbox or
                stretch) only for files saved without a contract; against a contract that
                says otherwise it is an error.
            num_threads: TFLite interpreter / onnxruntime threads (default: all CPU cores).

        Raises:
            CheckpointError: missing, unreadable, or not a (B, S, S, 3) -> (B, G, G, 5)
                network, or a contract that does not fit it; one line naming `path`.
            ConfigError: `letterbox` contradicts the model's contract (both values named).
        """
        if os.path.isdir(path):
            if not is_saved_model(path):
                raise CheckpointError(
                    f"{path}: folder without {SAVED_MODEL_FILE}: not a SavedModel ({FORMATS_HELP})"
                )
        elif not os.path.exists(path):
            raise CheckpointError(f"{path}: checkpoint not found")
        contract, origin = read_contract(path), "model"
        if contract is None:
            # Saved before models carried their contract: the run's config.json, if any.
            contract, origin = contract_beside(path), "config.json"
        if contract is not None:
            contract.check_letterbox(letterbox, path)
            letterbox = contract.grid.letterbox
        else:
            origin = "default"
        letterbox = True if letterbox is None else bool(letterbox)
        detector = cls._load_network(path, letterbox, num_threads)
        if contract is not None and origin == "config.json":
            # config.json gives the training's letterbox and threshold; the shapes are the
            # file's own (an export may have been made at another input size).
            contract = contract.replace(grid=contract.grid.replace(
                input_size=detector.input_size, grid_size=detector.grid_size,
                grid_levels=detector.grid_levels, landmarks=detector.landmarks,
                input_height=detector.input_height))
        if contract is not None:
            contract.check_geometry(detector.input_size, detector.grid_size, path,
                                    detector.grid_levels, detector.landmarks,
                                    detector.input_height)
            detector.contract, detector.contract_origin = contract, origin
        return detector

    @classmethod
    def _load_network(cls, path: str, letterbox: bool, num_threads: Optional[int]
                      ) -> "FaceDetector":
        fmt = format_of(path)
        if fmt is None:
            ext = os.path.splitext(path)[1].lower()
            raise CheckpointError(f"{path}: unknown model format '{ext}' (expected {FORMATS_HELP})")
        if fmt.name == "saved_model":
            return cls._load_saved_model(path, letterbox)
        if fmt.name == "keras":
            from model.checkpoints import load_checkpoint

            return cls.from_keras(load_checkpoint(path, compile=False), path, letterbox)
        load = {"tflite": cls._load_tflite, "onnx": cls._load_onnx}[fmt.name]
        return load(path, letterbox, num_threads)

    @classmethod
    def from_keras(cls, model, source: str = "<keras model>", letterbox: bool = True,
                   contract: Optional[ModelContract] = None) -> "FaceDetector":
        """Wrap a Keras model; it runs as one traced graph (no per-call Python overhead).

        `contract`, if given, says how it is fed (else `letterbox`, no threshold)."""
        import tensorflow as tf

        try:
            in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
        except (AttributeError, ValueError):
            raise CheckpointError(f"{source}: not a single-input, single-output model") from None
        if any(isinstance(d, (tuple, list)) for d in in_shape + out_shape):
            raise CheckpointError(f"{source}: not a single-input, single-output model")
        size, grid, levels, landmarks, height = grid_geometry(in_shape, out_shape, source)
        check_input_dtype(model.inputs[0].dtype, source)
        # A tf.function over the call, batch dimension free so it is traced once: the
        # fastest single-image path (224 px, 2 cores: ~28 ms against ~34 ms for
        # predict_on_batch and ~260 ms for the eager call; benchmarks/bench_detect.py).
        call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, height or size, size, 3), tf.uint8)],
        )
        return cls(lambda x: call(x).numpy(), size, grid, source, "keras", letterbox, model,
                   contract, "default" if contract is None else "given", levels, landmarks,
                   height)

    @classmethod
    def _load_saved_model(cls, path: str, letterbox: bool) -> "FaceDetector":
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(path)
        except Exception as e:  # protobuf, op and I/O errors: all mean "cannot use it"
            raise CheckpointError(f"{path}: cannot load SavedModel ({first_line(e)})") from None
        signature = getattr(loaded, "signatures", {}).get("serving_default")
        if signature is None:
            raise CheckpointError(f"{path}: SavedModel has no 'serving_default' signature")
        inputs = signature.structured_input_signature[1]
        outputs = signature.structured_outputs
        if len(inputs) != 1 or not isinstance(outputs, dict) or len(outputs) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output SavedModel")
        (in_name, in_spec), = inputs.items()
        (out_name, out_spec), = outputs.items()
        size, grid, levels, landmarks, height = grid_geometry(
            in_spec.shape.as_list(), out_spec.shape.as_list(), path)
        check_input_dtype(in_spec.dtype, path)

        def predict(x):
            return signature(**{in_name: tf.constant(x)})[out_name].numpy()

        # The signature needs its loaded object alive.
        return cls(predict, size, grid, path, "saved_model", letterbox, loaded,
                   grid_levels=levels, landmarks=landmarks, input_height=height)

    @classmethod
    def _load_tflite(cls, path: str, letterbox: bool, num_threads: Optional[int]
                     ) -> "FaceDetector":
        interpreter_class = tflite_interpreter_class()
        threads = num_threads if num_threads else (os.cpu_count() or 1)
        try:
            interpreter = interpreter_class(model_path=path, num_threads=threads)
        except Exception as e:  # ValueError for a file that is not a TFLite flatbuffer
            raise CheckpointError(f"{path}: cannot load TFLite model ({first_line(e)})") from None
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output model")
        in_detail, out_detail = inputs[0], outputs[0]
        size, grid, levels, landmarks, height = grid_geometry(
            in_detail["shape_signature"], out_detail["shape_signature"], path
        )
        rows = height or size
        check_input_dtype(in_detail["dtype"], path)
        if out_detail["dtype"] != np.float32:
            raise CheckpointError(
                f"{path}: output {np.dtype(out_detail['dtype']).name}; only float32-output "
                "(float32 or float16-weight) TFLite models are supported"
            )
        # Allocated for one image at load time: TFLite creates its CPU delegate here (and
        # announces it on stderr), so a caller can load quietly and detect at once.
        interpreter.resize_tensor_input(in_detail["index"], [1, rows, size, 3])
        interpreter.allocate_tensors()
        state = {"batch": 1}

        def predict(x):
            if state["batch"] != len(x):
                interpreter.resize_tensor_input(in_detail["index"], [len(x), rows, size, 3])
                interpreter.allocate_tensors()
                state["batch"] = len(x)
            interpreter.set_tensor(in_detail["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(out_detail["index"])  # a copy

        return cls(predict, size, grid, path, "tflite", letterbox, interpreter,
                   grid_levels=levels, landmarks=landmarks, input_height=height)

    @classmethod
    def _load_onnx(cls, path: str, letterbox: bool, num_threads: Optional[int]
                   ) -> "FaceDetector":
        """An ONNX export, run by onnxruntime when it is installed, else by OpenCV's dnn."""
        try:
            import onnxruntime
        except ImportError:
            return cls._load_onnx_opencv(path, letterbox)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or (os.cpu_count() or 1)
        try:
            session = onnxruntime.InferenceSession(path, options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a bad file
            raise CheckpointError(f"{path}: cannot load ONNX model ({first_line(e)})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output model")
        size, grid, levels, landmarks, height = grid_geometry(
            _onnx_dims(inputs[0].shape), _onnx_dims(outputs[0].shape), path)
        check_input_dtype(inputs[0].type.replace("tensor(", "").rstrip(")"), path)
        in_name = inputs[0].name

        def predict(x):
            return session.run(None, {in_name: x})[0]

        return cls(predict, size, grid, path, "onnx", letterbox, session, grid_levels=levels,
                   landmarks=landmarks, input_height=height)

    @classmethod
    def _load_onnx_opencv(cls, path: str, letterbox: bool) -> "FaceDetector":
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
            raise CheckpointError(f"{path}: cannot load ONNX model ({first_line(e)})") from None
        if len(graph.input) != 1 or len(graph.output) != 1:
            raise CheckpointError(f"{path}: not a single-input, single-output model")

        def dims(value):
            return _onnx_dims(d.dim_value if d.HasField("dim_value") else None
                              for d in value.type.tensor_type.shape.dim)

        size, grid, levels, landmarks, height = grid_geometry(
            dims(graph.input[0]), dims(graph.output[0]), path)
        elem_type = graph.input[0].type.tensor_type.elem_type
        check_input_dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type), path)

        def predict(x):
            net.setInput(x)
            return net.forward()

        return cls(predict, size, grid, path, "onnx", letterbox, net, grid_levels=levels,
                   landmarks=landmarks, input_height=height)

    # ---------------------------------------------------------------- running
    def predict_grids(self, batch: np.ndarray) -> np.ndarray:
        """Network outputs for a batch of prepared inputs.

        Args:
            batch: (B, S, S, 3) RGB uint8 network inputs (`data.image.prepare_image`), or
                a band input's (B, input_height, S, 3).

        Returns:
            (B, G, G, 5) float32 grids, channels (h, w, yc, xc, class); with several
            levels (B, N, 5), their cells (`data.grid.flatten_levels`); 15 channels with
            landmarks (`data.grid`). A band input's cells come placed in the square's
            grid (`data.grid.embed_band`), so every caller reads one layout.
        """
        batch = np.asarray(batch)
        if batch.dtype != np.uint8:
            # Casting would turn scaled floats into black images without a word.
            raise ValueError(f"predict_grids expects uint8 pixels (data.image.prepare_image), "
                             f"got {batch.dtype}")
        batch = np.ascontiguousarray(batch)
        rows, s, _ = self.grid.input_shape
        if batch.ndim != 4 or batch.shape[1:] != (rows, s, 3):
            raise ValueError(f"predict_grids expects (B, {rows}, {s}, 3) inputs, got "
                             f"{batch.shape}")
        grids = np.asarray(self._predict_fn(batch), dtype=np.float32)
        expected = (len(batch),) + self.grid.network_shape
        if grids.shape != expected:
            raise CheckpointError(
                f"{self.source}: the network returned shape {grids.shape} for {batch.shape} "
                f"inputs; expected {expected}"
            )
        return embed_band(grids, self.grid)

    __call__ = predict_grids

    def prepare(self, image_bgr: np.ndarray):
        """BGR uint8 image -> (network input (S, S, 3) RGB uint8, or (input_height, S, 3),
        InputMapping)."""
        return prepare_image(image_bgr, self.input_size, self.letterbox, self.input_height)

    def detect(
        self,
        image_bgr: np.ndarray,
        spec: Optional[DetectSpec] = None,
        score_threshold: Optional[float] = None,
    ) -> Detections:
        """Faces in one (H, W, 3) BGR uint8 image; boxes x1, y1, x2, y2 in its pixels.

        Args:
            spec: threshold, NMS IoU and cap; None: `detect_spec`, the model's own.
            score_threshold: if given, replaces the spec's threshold.
        """
        x, letterbox = self.prepare(image_bgr)
        grid = self.predict_grids(x[None])[0]
        return detect_from_grid(grid, letterbox, self._spec(spec, score_threshold),
                                self.grid_sizes)

    def detect_batch(
        self,
        images: Sequence[np.ndarray],
        spec: Optional[DetectSpec] = None,
        score_threshold: Optional[float] = None,
    ) -> List[Detections]:
        """`detect` for several images (any sizes) in one network call."""
        if len(images) == 0:
            return []
        prepared = [self.prepare(image) for image in images]
        grids = self.predict_grids(np.stack([x for x, _ in prepared]))
        return detect_batch(grids, [lb for _, lb in prepared],
                            self._spec(spec, score_threshold), self.grid_sizes)

    def _spec(self, spec: Optional[DetectSpec], score_threshold: Optional[float]
              ) -> DetectSpec:
        if spec is not None and not isinstance(spec, DetectSpec):
            raise TypeError(f"spec={spec!r}: must be a model.postprocess.DetectSpec "
                            "(a threshold alone goes as score_threshold=)")
        spec = self.detect_spec if spec is None else spec
        if score_threshold is not None:
            spec = spec.replace(score_threshold=float(score_threshold))
        return spec


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
    """Detections -> [{x, y, w, h, score}]: pixel ints, score to 3 decimals (CLI output);
    with landmarks also "landmarks": five [x, y] pairs in image pixels to 1 decimal
    (`data.landmarks.LANDMARK_NAMES` order).

    The one place detect.py's corners become its output's top-left x, y, width, height.
    """
    rows = [
        {"x": int(round(x)), "y": int(round(y)), "w": int(round(w)), "h": int(round(h)),
         "score": round(float(s), 3)}
        for (x, y, w, h), s in zip(xyxy_to_xywh(detections.boxes).tolist(), detections.scores)
    ]
    if detections.landmarks is not None:
        for row, points in zip(rows, np.round(detections.landmarks.astype(np.float64), 1)):
            row["landmarks"] = points.tolist()
    return rows


def annotate(image_bgr: np.ndarray, detections: Detections) -> np.ndarray:
    """A copy of the image with the detections' boxes and scores (and landmarks) drawn."""
    drawn = draw_boxes(image_bgr, detections.boxes, detections.scores)
    if detections.landmarks is not None:
        drawn = draw_points(drawn, detections.landmarks)
    return drawn


def face_crops(image_bgr: np.ndarray, detections: Detections, align: bool = False
               ) -> List[np.ndarray]:
    """One image per detected face, best first.

    Args:
        image_bgr: (H, W, 3) uint8 BGR image the detections are in.
        detections: its faces (boxes x1, y1, x2, y2 in its pixels).
        align: the recogniser's aligned crop instead of the box (`data.landmarks.
            align_face`, 112 x 112 on the ArcFace template); needs detections with landmarks.

    Returns:
        The crops: the box's pixels (rounded to whole pixels, at least one), or the aligned
        112 x 112 crops.

    Raises:
        ConfigError: `align` for detections without landmarks.
    """
    from data.landmarks import align_face

    if align:
        if detections.landmarks is None:
            raise ConfigError("align: the detections have no landmarks (a model trained "
                              "with --landmarks gives them)")
        return [align_face(image_bgr, points) for points in detections.landmarks]
    height, width = image_bgr.shape[:2]
    crops = []
    for x1, y1, x2, y2 in np.asarray(detections.boxes, np.float64):
        left, top = min(int(np.floor(x1)), width - 1), min(int(np.floor(y1)), height - 1)
        right, bottom = max(int(np.ceil(x2)), left + 1), max(int(np.ceil(y2)), top + 1)
        crops.append(image_bgr[max(top, 0):bottom, max(left, 0):right].copy())
    return crops


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
        raise ImageError(f"{path}: cannot write image ({first_line(e)})") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot write image ({e.strerror or e})") from None
