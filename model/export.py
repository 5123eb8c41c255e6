"""Export a trained detector for deployment: SavedModel, TFLite (float32 / float16 / int8), ONNX.

    export_model(model, "saved_model", "face_saved_model")      # folder, serving_default
    export_model(model, "tflite", "face.tflite")                 # float32
    export_model(model, "tflite", "face_fp16.tflite", float16=True)  # float16 weights
    export_model(model, "tflite", "face_int8.tflite", int8_inputs=calibration)  # int8
    export_model(model, "onnx", "face.onnx")                     # onnxruntime, cv2.dnn

Keras 3 writes SavedModels with `model.export(path, format="tf_saved_model")` and ONNX
files with `model.export(path, format="onnx")` (through tf2onnx, in requirements.txt);
TFLite files are converted from such a SavedModel (`tf.lite.TFLiteConverter.from_saved_model`,
the path TF documents for Keras 3; converting a traced concrete function gave NaN outputs
here). Every export takes uint8 RGB pixels as the Keras model does and keeps the batch
dimension free, so `model.detector.FaceDetector` runs the result on any batch size, and
carries the checkpoint's preprocessing contract (`model.contract`) in its metadata.
Outputs are written atomically: a failed export leaves nothing half-written under the
target name and an earlier export in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np

from common.errors import ConfigError, ImageError
from common.files import atomic_path, atomic_write_bytes
from model.contract import CONTRACT_NAME, ModelContract, with_tflite_metadata, write_contract
from model.formats import BY_NAME, EXPORT_FORMATS

FORMATS = EXPORT_FORMATS  # model/formats.py: the formats export.py writes


def default_export_path(weights: str, fmt: str, float16: bool = False, int8: bool = False
                        ) -> str:
    """Where `export.py` writes by default: beside the checkpoint, named after it.

    model-0.61.keras -> model-0.61_saved_model/, model-0.61.tflite, model-0.61_fp16.tflite,
    model-0.61_int8.tflite, model-0.61.onnx
    """
    stem = os.path.splitext(weights.rstrip("/\\"))[0]
    if fmt == "saved_model":  # a folder: no suffix of its own
        return stem + "_saved_model"
    variant = ("_fp16" if float16 else "_int8" if int8 else "") if fmt == "tflite" else ""
    return stem + variant + BY_NAME[fmt].suffix


def export_model(keras_model, fmt: str, path: str, float16: bool = False,
                 int8_inputs: Optional[np.ndarray] = None,
                 contract: Optional[ModelContract] = None) -> str:
    """Write `keras_model` as a SavedModel folder, a TFLite file or an ONNX file.

    Args:
        keras_model: the detector, input (B, S, S, 3) RGB uint8, output (B, G, G, 5).
        fmt: 'saved_model', 'tflite' or 'onnx'.
        path: the folder (saved_model) or file (tflite, onnx) to write; replaced
            atomically if it holds an earlier export.
        float16: TFLite only: store the weights as float16 (half the file; the CPU
            interpreter computes in float32 after loading them).
        int8_inputs: TFLite only: full-integer quantisation, calibrated on these network
            inputs, (N, S, S, 3) uint8 (`calibration_inputs`). The file takes uint8 pixels
            and returns float32 grids like every other export.
        contract: how the network is fed (`model.contract`), stored in the export in its
            format's metadata place, so detection needs no preprocessing flag.

    Returns:
        `path`.

    Raises:
        ConfigError: unknown format, float16 / int8 with another format, both at once,
            or `path` taken by something that is not an export of that format.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: must be one of {', '.join(FORMATS)}")
    int8 = int8_inputs is not None
    if (float16 or int8) and fmt != "tflite":
        raise ConfigError(f"{'float16' if float16 else 'int8'}=True: applies to the tflite "
                          f"format only, not {fmt}")
    if float16 and int8:
        raise ConfigError("float16=True and int8=True: choose one")
    if fmt == "saved_model":
        _export_saved_model_atomically(keras_model, path, contract)
        return path
    if os.path.isdir(path):
        raise ConfigError(f"output={path!r}: is a folder; a {fmt} export is one file")
    if fmt == "onnx":
        export_onnx(keras_model, path, contract)
    else:
        data = tflite_bytes(keras_model, float16, int8_inputs)
        if contract is not None:
            data = with_tflite_metadata(data, CONTRACT_NAME, contract.to_json().encode())
        atomic_write_bytes(path, data)
    return path


def export_saved_model(keras_model, path: str) -> None:
    """Keras 3's SavedModel export (signature 'serving_default', batch dimension free)."""
    keras_model.export(path, format="tf_saved_model", verbose=False)


def export_onnx(keras_model, path: str, contract: Optional[ModelContract] = None) -> None:
    """Keras 3's ONNX export (tf2onnx), written atomically; input 'image' uint8, batch free;
    `contract` in its metadata_props."""
    try:
        import tf2onnx  # noqa: F401  Keras imports it lazily; fail here with the fix named
    except ImportError:
        raise ConfigError("the onnx format needs tf2onnx: pip install -r requirements.txt") from None
    rows, size = keras_model.input_shape[1:3]  # (S, S), or a band input's (R, S)
    # Keras refuses to export a model that has never been called (a freshly built one).
    keras_model(np.zeros((1, rows, size, 3), np.uint8), training=False)
    with atomic_path(path) as tmp:
        keras_model.export(tmp, format="onnx", verbose=False)
        if contract is not None:
            write_contract(tmp, contract)


def tflite_bytes(keras_model, float16: bool = False,
                 int8_inputs: Optional[np.ndarray] = None) -> bytes:
    """The TFLite flatbuffer of `keras_model` (float32, float16 weights or int8)."""
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        saved_model = os.path.join(tmp, "saved_model")
        export_saved_model(keras_model, saved_model)
        return tflite_from_saved_model(saved_model, float16, int8_inputs)


def tflite_from_saved_model(saved_model_dir: str, float16: bool = False,
                            int8_inputs: Optional[np.ndarray] = None) -> bytes:
    """Convert a SavedModel folder to a TFLite flatbuffer (float32, float16 weights or int8)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if float16:
        # Post-training float16 quantisation: weights stored as float16.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif int8_inputs is not None:
        int8_inputs = np.asarray(int8_inputs)
        if int8_inputs.dtype != np.uint8 or int8_inputs.ndim != 4 or not len(int8_inputs):
            raise ConfigError(f"int8 calibration: need (N, S, S, 3) (or (N, R, S, 3)) uint8 network inputs, "
                              f"got {int8_inputs.dtype} {int8_inputs.shape}")
        # Full-integer quantisation: weights and activations int8, their ranges measured on
        # the calibration images. The input stays uint8 pixels (already an integer tensor:
        # the network's own Rescaling layer turns it into [-1, 1]) and the output float32,
        # so the file runs behind FaceDetector like the float ones.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in int8_inputs)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    return converter.convert()


def calibration_inputs(image_paths: Sequence[str], input_size: int, letterbox: bool = True,
                       count: int = 200, seed: int = 0, input_height: int = 0) -> np.ndarray:
    """Network inputs (N, S, S, 3) uint8 of `count` images drawn (seeded) from `image_paths`
    ((N, input_height, S, 3) for a band input).

    Prepared exactly as detection prepares them (`data.image.prepare_image`), so the
    quantisation ranges are those the deployed model meets. Take them from training
    photos, never from the photos the model is evaluated on. Unreadable images are skipped;
    ConfigError if none is left.
    """
    from data.image import prepare_image, read_image

    if count <= 0:
        raise ConfigError(f"calibration_images={count}: must be positive")
    paths = list(image_paths)
    order = np.random.default_rng(seed).permutation(len(paths))
    inputs = []
    for i in order:
        if len(inputs) == count:
            break
        try:
            inputs.append(prepare_image(read_image(paths[i]), input_size, letterbox,
                                        input_height)[0])
        except ImageError:
            continue
    if not inputs:
        raise ConfigError(f"int8 calibration: none of {len(paths)} images could be read")
    return np.stack(inputs)


def _export_saved_model_atomically(keras_model, path: str,
                                   contract: Optional[ModelContract] = None) -> None:
    """Export into a temporary folder beside `path`, then swap it into place."""
    from model.detector import is_saved_model

    path = os.path.abspath(path)
    if os.path.exists(path) and not (os.path.isdir(path) and (
            is_saved_model(path) or not os.listdir(path))):
        raise ConfigError(
            f"output={path!r}: exists and is not a SavedModel folder; not replacing it"
        )
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    old = None
    try:
        export_saved_model(keras_model, os.path.join(tmp, "model"))
        if contract is not None:
            write_contract(os.path.join(tmp, "model"), contract)
        if os.path.exists(path):
            # A folder cannot be replaced in one rename: move the old one aside first, so
            # at every moment one complete export carries a name.
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(os.path.join(tmp, "model"), path)
    except BaseException:
        if old is not None and not os.path.exists(path):
            os.replace(old, path)
            old = None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
