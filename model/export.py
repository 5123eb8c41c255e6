"""Export a trained detector for deployment: a TensorFlow SavedModel or a TFLite file.

    export_model(model, "saved_model", "face_saved_model")      # folder, serving_default
    export_model(model, "tflite", "face.tflite")                 # float32
    export_model(model, "tflite", "face_fp16.tflite", float16=True)  # float16 weights

Keras 3 writes SavedModels with `model.export(path, format="tf_saved_model")`; TFLite files
are converted from such a SavedModel (`tf.lite.TFLiteConverter.from_saved_model`, the path
TF documents for Keras 3; converting a traced concrete function gave NaN outputs here).
Every export keeps the batch dimension free, so `model.detector.FaceDetector` runs the
result on any batch size. Outputs are written atomically: a failed export leaves nothing
half-written under the target name and an earlier export in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from errors import ConfigError
from files import atomic_write_bytes

FORMATS = ("saved_model", "tflite")


def default_export_path(weights: str, fmt: str, float16: bool = False) -> str:
    """Where `export.py` writes by default: beside the checkpoint, named after it.

    model-0.61.keras -> model-0.61_saved_model/, model-0.61.tflite, model-0.61_fp16.tflite
    """
    stem = os.path.splitext(weights.rstrip("/\\"))[0]
    if fmt == "saved_model":
        return stem + "_saved_model"
    return stem + ("_fp16" if float16 else "") + ".tflite"


def export_model(keras_model, fmt: str, path: str, float16: bool = False) -> str:
    """Write `keras_model` as a SavedModel folder or a TFLite file.

    Args:
        keras_model: the detector, input (B, S, S, 3) RGB uint8, output (B, G, G, 5).
        fmt: 'saved_model' or 'tflite'.
        path: the folder (saved_model) or file (tflite) to write; replaced atomically if
            it holds an earlier export.
        float16: TFLite only: store the weights as float16 (half the file; the CPU
            interpreter computes in float32 after loading them).

    Returns:
        `path`.

    Raises:
        ConfigError: unknown format, float16 with a SavedModel, or `path` taken by
            something that is not an export of that format.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    if float16 and fmt != "tflite":
        raise ConfigError("--float16 applies to --format tflite only")
    if fmt == "saved_model":
        _export_saved_model_atomically(keras_model, path)
    else:
        if os.path.isdir(path):
            raise ConfigError(f"--output {path}: is a folder; a TFLite export is one file")
        atomic_write_bytes(path, tflite_bytes(keras_model, float16))
    return path


def export_saved_model(keras_model, path: str) -> None:
    """Keras 3's SavedModel export (signature 'serving_default', batch dimension free)."""
    keras_model.export(path, format="tf_saved_model", verbose=False)


def tflite_bytes(keras_model, float16: bool = False) -> bytes:
    """The TFLite flatbuffer of `keras_model` (float32, or float16 weights)."""
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        saved_model = os.path.join(tmp, "saved_model")
        export_saved_model(keras_model, saved_model)
        return tflite_from_saved_model(saved_model, float16)


def tflite_from_saved_model(saved_model_dir: str, float16: bool = False) -> bytes:
    """Convert a SavedModel folder to a TFLite flatbuffer (float32, or float16 weights)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if float16:
        # Post-training float16 quantisation: weights stored as float16.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _export_saved_model_atomically(keras_model, path: str) -> None:
    """Export into a temporary folder beside `path`, then swap it into place."""
    from model.detector import is_saved_model

    path = os.path.abspath(path)
    if os.path.exists(path) and not (os.path.isdir(path) and (
            is_saved_model(path) or not os.listdir(path))):
        raise ConfigError(
            f"--output {path}: exists and is not a SavedModel folder; not replacing it"
        )
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    old = None
    try:
        export_saved_model(keras_model, os.path.join(tmp, "model"))
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
