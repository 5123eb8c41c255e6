"""The backbone's starting weights: Keras' ImageNet MobileNetV2 file, or the user's file.

`config.backbone_weights` is 'imagenet' (the file Keras publishes for this alpha and
input size, from the Keras cache or downloaded), 'none' (random weights), or a path to
MobileNetV2 (include_top=False, same alpha) weights. `backbone_weights_path` finds the
file before the network is built, so a bad value fails at once; `load_backbone_weights`
loads it into the bare MobileNetV2 and refuses a file that fits only in part.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import keras

from common.errors import WeightsUnavailableError, first_line

# Keras publishes ImageNet weights for these only; other sizes load the 224 weights
# (convolution weights do not depend on the input size; Keras does the same).
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)
IMAGENET_BASE_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
)


def backbone_weights_path(weights: str, alpha: float, size: int) -> Optional[str]:
    """The weights file that `weights` ('imagenet', 'none' or a path) names; None for 'none'.

    Raises:
        WeightsUnavailableError: the ImageNet weights cannot be had (see
            `imagenet_weights_path`), or the path is not a file.
    """
    kind = weights.strip().lower()
    if kind == "none":
        return None
    if kind == "imagenet":
        return imagenet_weights_path(alpha, size)
    if not os.path.isfile(weights):
        raise WeightsUnavailableError(
            f"{weights}: backbone weights file not found (backbone_weights takes "
            "'imagenet', 'none' or a path to a .h5/.weights.h5 file)"
        )
    return weights


def load_backbone_weights(mobilenet: keras.Model, path: str) -> None:
    """Load a weights file into the bare MobileNetV2; all of it must fit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mobilenet.load_weights(path)
        except Exception as e:  # h5py, shape and format errors all mean "does not fit"
            raise WeightsUnavailableError(
                f"{path}: cannot load as {mobilenet.name} (include_top=False) weights: "
                f"{first_line(e)}"
            ) from None
    # Keras only warns when parts of a .weights.h5 file match nothing: a partial load
    # would leave random layers behind a pretrained name.
    partial = [w for w in caught if "keras" in w.filename and issubclass(w.category, UserWarning)]
    if partial:
        raise WeightsUnavailableError(
            f"{path}: only partly fits {mobilenet.name} (include_top=False): "
            f"{first_line(partial[0].message)}"
        )
    for w in caught:  # the rest are not ours to swallow
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def keras_models_dir() -> str:
    """Where Keras caches application weights: $KERAS_HOME/models or ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def imagenet_weights_file(alpha: float, size: int) -> str:
    """File name of Keras' ImageNet MobileNetV2 no-top weights for this alpha and size."""
    rows = size if size in IMAGENET_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def imagenet_weights_path(alpha: float, size: int) -> str:
    """Path of the ImageNet weights: from the Keras cache, else downloaded by Keras.

    Raises:
        WeightsUnavailableError: alpha has no ImageNet weights, or the file is not cached
            and cannot be downloaded; the message names the three ways out.
    """
    if float(alpha) not in IMAGENET_ALPHAS:
        raise WeightsUnavailableError(
            f"alpha={alpha}: MobileNetV2 ImageNet weights exist only for alpha in "
            f"{', '.join(map(str, IMAGENET_ALPHAS))}; set backbone_weights to 'none' or "
            "a weights file path"
        )
    name = imagenet_weights_file(alpha, size)
    models_dir = keras_models_dir()
    cached = os.path.join(models_dir, name)
    if os.path.isfile(cached):
        return cached
    try:
        return keras.utils.get_file(
            name, IMAGENET_BASE_URL + name, cache_subdir="models",
            cache_dir=os.path.dirname(models_dir),
        )
    except Exception as e:  # offline: URLError / "URL fetch failure" and the like
        raise WeightsUnavailableError(
            f"backbone_weights='imagenet': ImageNet weights {name} are not cached and "
            f"cannot be downloaded ({first_line(e, limit=320)}); "
            f"put that file in {_display_path(models_dir)}, or set backbone_weights to a "
            "weights file path, or to 'none' to train from scratch"
        ) from None


def _display_path(path: str) -> str:
    home = os.path.expanduser("~")
    if path == home or path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path
