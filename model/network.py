"""The face detector network: a MobileNetV2 backbone and a grid head.

    image (B, S, S, 3) RGB uint8 (`data.image.to_network_input`)
      -> input scaling to MobileNetV2's [-1, 1] (x / 127.5 - 1), inside the model
      -> backbone: MobileNetV2 (include_top=False) feature maps at strides 8, 16, 32
      -> neck: FPN-like top-down path down to the grid's stride (1x1 laterals, upsample,
               add, 3x3 conv); the stride-32 grid uses the last stage alone
      -> head: HEAD_CONVS x (3x3 conv, BatchNorm, ReLU) then a 1x1 conv to 5 channels
      -> sigmoid (float32)  -> grid (B, G, G, 5), channels (h, w, yc, xc, class)

The output has the layout of `data.grid` targets, every channel in [0, 1], class = face
score. Only standard Keras layers are used, so `keras.models.load_model(path)` restores a
saved model without `custom_objects`.
"""

from __future__ import annotations

import math
import os
import warnings

import keras
import numpy as np

from config import Config
from data.grid import CLASS, H, NUM_CHANNELS, XC, YC, W
from errors import CheckpointError, WeightsUnavailableError

BACKBONE_NAME = "backbone"
INPUT_NAME = "image"
INPUT_DTYPE = "uint8"
INPUT_SCALING = "input_scaling"  # the layer that maps uint8 pixels to [-1, 1]
OUTPUT_NAME = "grid"
HEAD_CONVS = 2
# Prior face probability of every cell at initialisation (RetinaNet): with ~1 face cell
# in hundreds, a 0.5 start would flood the focal loss with background in the first steps.
CLASS_PRIOR = 0.01

# MobileNetV2 layers whose outputs are the feature maps at each stride.
FEATURE_LAYERS = {
    8: "block_6_expand_relu",
    16: "block_13_expand_relu",
    32: "out_relu",
}

# Keras publishes ImageNet weights for these only; other sizes load the 224 weights
# (convolution weights do not depend on the input size; Keras does the same).
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)
IMAGENET_BASE_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
)


SCRATCH_BN_MOMENTUM = 0.9


def create_model(config: Config, backbone_weights: str | None = None) -> keras.Model:
    """Build the detector for `config`.

    Args:
        config: uses input_size, grid_size, alpha, head_channels and backbone_weights.
        backbone_weights: overrides config.backbone_weights: 'imagenet', 'none', or a
            path to MobileNetV2 (include_top=False, same alpha) weights (.h5/.weights.h5).

    Returns:
        A Keras model, input (B, S, S, 3) RGB uint8 (scaled to [-1, 1] by its first
        layer), output (B, G, G, 5) float32 in [0, 1]. All layers are trainable; see `set_backbone_trainable`.

    Raises:
        WeightsUnavailableError: ImageNet weights cannot be had offline, or the weights
            file is missing or does not fit the backbone.
    """
    weights = config.backbone_weights if backbone_weights is None else backbone_weights
    size, stride = config.input_size, config.cell_size
    inputs = keras.Input((size, size, 3), dtype=INPUT_DTYPE, name=INPUT_NAME)
    # Scaling in the model: whatever feeds it (generator, detect.py, an exported TFLite
    # file on a phone) gives plain pixels, and MobileNetV2 always sees its [-1, 1].
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=INPUT_SCALING)(inputs)

    strides = sorted(s for s in FEATURE_LAYERS if s >= stride)  # the grid's and coarser
    backbone = _backbone(config.alpha, size, weights, strides)
    if weights.strip().lower() == "none":
        # Keras' MobileNetV2 keeps BatchNorm averages with momentum 0.999, made for
        # pretrained statistics: from scratch they would lag the weights for thousands of
        # steps and inference would see stale statistics (AP ~0 after hundreds of steps).
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    features = dict(zip(strides, _as_list(backbone(scaled))))

    x = _top_down(features, stride, config.head_channels)
    for i in range(1, HEAD_CONVS + 1):
        x = keras.layers.Conv2D(
            config.head_channels, 3, padding="same", use_bias=False, name=f"head_conv{i}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"head_bn{i}")(x)
        x = keras.layers.ReLU(name=f"head_relu{i}")(x)
    out = keras.layers.Conv2D(
        NUM_CHANNELS, 1, name="head_out",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
    )
    x = out(x)
    out.bias.assign(_output_bias(config.grid_size))
    # float32 even under mixed precision: the loss takes sqrt and logs of these values.
    if not config.neighbour_cells:
        grid = keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)(x)
    else:
        x = keras.layers.Activation("sigmoid", dtype="float32", name="grid_sigmoid")(x)
        # Neighbour cells see the face centre up to half a cell beyond their border:
        # yc, xc = 2 sigmoid - 0.5 in [-0.5, 1.5] (YOLOv5); h, w and the score stay sigmoid.
        scale, offset = np.ones(NUM_CHANNELS), np.zeros(NUM_CHANNELS)
        scale[[YC, XC]], offset[[YC, XC]] = 2.0, -0.5
        grid = keras.layers.Rescaling(scale.tolist(), offset.tolist(), dtype="float32",
                                      name=OUTPUT_NAME)(x)
    return keras.Model(inputs, grid, name="face_detector")


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _output_bias(grid_size: int) -> np.ndarray:
    """Initial logits: boxes one cell wide at the cell centre, face score CLASS_PRIOR."""
    bias = np.zeros(NUM_CHANNELS, dtype=np.float32)  # yc = xc = 0.5, the cell centre
    cell = 1.0 / grid_size
    bias[H] = bias[W] = math.log(cell / (1.0 - cell))
    bias[CLASS] = -math.log((1.0 - CLASS_PRIOR) / CLASS_PRIOR)
    return bias


def _backbone(alpha: float, size: int, weights: str, strides) -> keras.Model:
    """MobileNetV2 as one sub-model named BACKBONE_NAME with one output per stride."""
    # Find the weights before building, so a bad path fails at once.
    kind = weights.strip().lower()
    path = None
    if kind == "imagenet":
        path = imagenet_weights_path(alpha, size)
    elif kind != "none":
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(
                f"{weights}: backbone weights file not found (backbone_weights takes "
                "'imagenet', 'none' or a path to a .h5/.weights.h5 file)"
            )
        path = weights
    mobilenet = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None
    )
    if path is not None:
        _load_backbone_weights(mobilenet, path)
    outputs = [mobilenet.get_layer(FEATURE_LAYERS[s]).output for s in strides]
    return keras.Model(mobilenet.input, outputs, name=BACKBONE_NAME)


def _load_backbone_weights(mobilenet: keras.Model, path: str) -> None:
    """Load a weights file into the bare MobileNetV2; all of it must fit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mobilenet.load_weights(path)
        except Exception as e:  # h5py, shape and format errors all mean "does not fit"
            raise WeightsUnavailableError(
                f"{path}: cannot load as {mobilenet.name} (include_top=False) weights: "
                f"{_first_line(e)}"
            ) from None
    # Keras only warns when parts of a .weights.h5 file match nothing: a partial load
    # would leave random layers behind a pretrained name.
    partial = [w for w in caught if "keras" in w.filename and issubclass(w.category, UserWarning)]
    if partial:
        raise WeightsUnavailableError(
            f"{path}: only partly fits {mobilenet.name} (include_top=False): "
            f"{_first_line(partial[0].message)}"
        )
    for w in caught:  # the rest are not ours to swallow
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _first_line(error, limit: int = 200) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _top_down(features: dict, stride: int, channels: int):
    """Merge coarser feature maps down to `stride` (FPN top-down path, one output level)."""
    x = keras.layers.Conv2D(channels, 1, name="neck_lateral32")(features[32])
    s = 32
    while s > stride:
        s //= 2
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"neck_up{s}")(x)
        lateral = keras.layers.Conv2D(channels, 1, name=f"neck_lateral{s}")(features[s])
        x = keras.layers.Add(name=f"neck_add{s}")([up, lateral])
    if stride < 32:
        # Smooths the aliasing of nearest upsampling (FPN's 3x3 output conv).
        x = keras.layers.Conv2D(channels, 3, padding="same", name=f"neck_smooth{stride}")(x)
    return x


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
            f"{', '.join(map(str, IMAGENET_ALPHAS))}; use --backbone-weights none or PATH"
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
            f"ImageNet weights {name} are not cached and cannot be downloaded "
            f"({_first_line(e, limit=320)}); "
            f"put that file in {_display_path(models_dir)}, or pass a weights file with "
            "--backbone-weights PATH, or train from scratch with --backbone-weights none"
        ) from None


def _display_path(path: str) -> str:
    home = os.path.expanduser("~")
    if path == home or path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path


def set_backbone_trainable(
    model: keras.Model, trainable: bool, train_batchnorm: bool = True
) -> None:
    """Freeze or unfreeze the backbone; recompile the model afterwards.

    Frozen: no backbone weight is trained and its BatchNorm layers run in inference mode
    (Keras 3 runs a non-trainable BatchNormalization with its moving statistics).
    Unfrozen: the backbone trains; with `train_batchnorm=False` its BatchNorm layers stay
    frozen in inference mode, as Keras' fine-tuning guidance advises for a pretrained
    backbone and small batches. The default trains them, because a backbone trained from
    scratch ('none') must learn its statistics: pass
    `train_batchnorm=(config.backbone_weights == "none")` to get both right.
    """
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = trainable
    # Each layer explicitly: in Keras 3.15 giving a model the flag it already has does not
    # reach its layers, so BatchNorm frozen by an earlier call would stay frozen.
    for layer in backbone.layers:
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable and (train_batchnorm or not is_batchnorm)


def check_grid_model(model: keras.Model, source: str) -> None:
    """Raise CheckpointError unless `model` maps (B, S, S, 3) images to (B, G, G, 5) grids."""
    inputs, outputs = model.input_shape, model.output_shape
    ok = (
        isinstance(inputs, tuple) and isinstance(outputs, tuple)
        and len(inputs) == 4 and inputs[1] == inputs[2] and inputs[3] == 3
        and len(outputs) == 4 and outputs[1] == outputs[2] and outputs[3] == NUM_CHANNELS
    )
    if not ok:
        raise CheckpointError(
            f"{source}: not a face grid model (input {inputs}, output {outputs}; expected "
            f"(batch, S, S, 3) -> (batch, G, G, {NUM_CHANNELS}))"
        )


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image of the convolution and dense layers.

    Counted from each layer's kernel size and output shape (nested models included):
    convolutions H_out*W_out*kernel_size, transposed convolutions H_in*W_in*kernel_size,
    dense layers positions*kernel_size. BatchNorm, activations, additions and biases are
    not counted (the MobileNet papers' convention). FLOPs = 2 x MACs.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        if isinstance(layer, keras.layers.SeparableConv2D):
            kernel = int(np.prod(layer.depthwise_kernel.shape)) + int(
                np.prod(layer.pointwise_kernel.shape)
            )
        elif isinstance(
            layer,
            (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv2D, keras.layers.DepthwiseConv1D, keras.layers.Dense),
        ):
            kernel = int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            kernel = int(np.prod(layer.kernel.shape))
            total += int(np.prod(layer.input.shape[1:-1])) * kernel
            continue
        else:
            continue
        total += int(np.prod(layer.output.shape[1:-1])) * kernel
    return total


def model_summary_facts(model: keras.Model) -> dict:
    """The facts print_model.py shows, read from the model itself (config or checkpoint).

    Returns:
        dict with input_shape (S, S, 3), input_dtype, grid_shape (G, G, 5), cell_size (px),
        trainable_params, frozen_params (non-trainable weights: frozen layers and
        BatchNorm moving statistics), backbone_params, head_params (all outside the
        backbone), macs and flops (= 2 x MACs) per image.
    """
    def size(weights):
        return int(sum(np.prod(w.shape) for w in weights))

    input_shape = tuple(int(d) for d in model.input_shape[1:])
    grid_shape = tuple(int(d) for d in model.output_shape[1:])
    backbone_params = size(model.get_layer(BACKBONE_NAME).weights) if any(
        layer.name == BACKBONE_NAME for layer in model.layers
    ) else 0
    macs = count_macs(model)
    return {
        "input_shape": input_shape,
        "input_dtype": str(model.inputs[0].dtype),
        "grid_shape": grid_shape,
        "cell_size": input_shape[0] // grid_shape[0],
        "trainable_params": size(model.trainable_weights),
        "frozen_params": size(model.non_trainable_weights),
        "backbone_params": backbone_params,
        "head_params": size(model.weights) - backbone_params,
        "macs": macs,
        "flops": 2 * macs,
    }


def at_input_size(model: keras.Model, config: Config, input_size: int) -> keras.Model:
    """The same trained network built for another input size (the same weights).

    Every layer is convolutional, so weights do not depend on the input size; the grid
    keeps its cell size (config.cell_size) and gets input_size / cell cells per side.
    Detecting at a larger size than training sees smaller faces (peers train at 640).

    Args:
        model: a network made by `create_model(config)` (a loaded checkpoint).
        config: the configuration it was trained with (its run's config.json).
        input_size: the new input side, a multiple of 32.
    """
    sized = config.replace(input_size=int(input_size),
                           grid_size=int(input_size) // config.cell_size,
                           backbone_weights="none")
    resized = create_model(sized)
    resized.set_weights(model.get_weights())
    return resized
