"""The face detector network: a MobileNetV2 backbone and a grid head.

    image (B, S, S, 3) RGB uint8 (`data.image.to_network_input`)
      -> input scaling to MobileNetV2's [-1, 1] (x / 127.5 - 1), inside the model
      -> backbone: MobileNetV2 (include_top=False) feature maps at strides 8, 16, 32
      -> neck: FPN-like top-down path down to the grid's stride (1x1 laterals, upsample,
               add, 3x3 conv); the stride-32 grid uses the last stage alone
      -> head: HEAD_CONVS x (3x3 conv, BatchNorm, ReLU) then a 1x1 conv to 5 channels
               (3x3 convolutions depthwise-separable with `head_separable`)
      -> sigmoid (float32)  -> grid (B, G, G, 5), channels (h, w, yc, xc, class)

With landmarks (`GridSpec.landmarks`) each head has a second 1x1 conv, `head_landmarks`,
to the 10 landmark channels of `data.grid` (x, y of each point, offsets from the cell
centre over the face size): linear, since they are not fractions in [0, 1], and joined
after the 5 sigmoid channels in the output layer (same name), (B, G, G, 15) / (B, N, 15).

With several grid levels (`Config.grid_levels`) the neck gives a map at every level's
stride (FPN: the 3x3 conv on each merged map), each level has a head of its own (its
layers named `_s<stride>`), and the heads' (B, G_l, G_l, 5) outputs are flattened row by
row and joined, finest first, into one output (B, N, 5) of `data.grid.flatten_levels`'
layout: one tensor for every runtime and export, whose shape alone says its levels
(`data.grid.levels_of_cells`).

The output has the layout of `data.grid` targets, every box channel in [0, 1], class =
face score (targets with landmarks have two channels more, the mouth centre's). Only standard Keras layers are used, so `keras.models.load_model(path)` restores a
saved model without `custom_objects`. The backbone's starting weights (ImageNet, none or a
file) are found and loaded by `model.backbone_weights`.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from config import Config
from data import image
from data.grid import (CLASS, H, LANDMARK_CHANNELS, NUM_CHANNELS, XC, YC, W, GridSpec,
                       levels_of_cells, output_has_landmarks)
from common.errors import CheckpointError
from model.backbone_weights import backbone_weights_path, load_backbone_weights

BACKBONE_NAME = "backbone"
INPUT_NAME = "image"
INPUT_DTYPE = image.INPUT_DTYPE  # what data.image.to_network_input makes
INPUT_SCALING = "input_scaling"  # the layer that maps uint8 pixels to [-1, 1]
OUTPUT_NAME = "grid"
# The box channels of a landmark network, before the output layer joins its points.
BOX_OUTPUT_NAME = "grid_boxes"
HEAD_CONVS = 2
# Prior face probability of every cell at initialisation (RetinaNet): with ~1 face cell
# in hundreds, a 0.5 start would flood the focal loss with background in the first steps.
CLASS_PRIOR = 0.01

# MobileNetV2 layers whose outputs are the feature maps at each stride: the cell sizes
# data.grid.CELL_SIZES states for Config (tests/test_network.py checks they agree).
FEATURE_LAYERS = {
    8: "block_6_expand_relu",
    16: "block_13_expand_relu",
    32: "out_relu",
}

SCRATCH_BN_MOMENTUM = 0.9


def create_model(config: Config, backbone_weights: str | None = None) -> keras.Model:
    """Build the detector for `config`: `build_network` for its grid
    (`config.grid_spec()`), alpha, head_channels, head_separable and backbone_weights.

    Args:
        backbone_weights: overrides config.backbone_weights: 'imagenet', 'none', or a
            path to MobileNetV2 (include_top=False, same alpha) weights (.h5/.weights.h5).
    """
    weights = config.backbone_weights if backbone_weights is None else backbone_weights
    return build_network(config.grid_spec(), config.alpha, config.head_channels,
                         config.head_separable, weights)


def build_network(grid: GridSpec, alpha: float, head_channels: int, head_separable: bool,
                  backbone_weights: str, box_scale: float = 1.0) -> keras.Model:
    """The MobileNetV2 backbone, the top-down neck and a head per grid level.

    Args:
        grid: the input size, the levels, and the assignment rule, whose offset range
            (`GridSpec.offsets`) the output maps its sigmoids onto.
        alpha: MobileNetV2 width multiplier.
        head_channels: width of the neck's and head's hidden convolutions.
        head_separable: depthwise-separable 3x3 convolutions in the neck and head.
        backbone_weights: 'imagenet', 'none', or a path to MobileNetV2 (include_top=False,
            same alpha) weights (.h5/.weights.h5).
        box_scale: factor on the h, w outputs (1 for a network to train; `at_input_size`
            sets it for trained weights run at another input size).

    Returns:
        A Keras model, input (B, S, S, 3) RGB uint8 (scaled to [-1, 1] by its first
        layer), output (B, G, G, 5) float32 in [0, 1] (several levels: (B, N, 5),
        `grid.cells_shape`); with `grid.landmarks` 15 channels, the 10 landmark ones
        linear (module doc). All layers are trainable; see `set_backbone_trainable`.

    Raises:
        WeightsUnavailableError: ImageNet weights cannot be had offline, or the weights
            file is missing or does not fit the backbone.
    """
    size, stride = grid.input_size, grid.cell_size
    inputs = keras.Input(grid.input_shape, dtype=grid.input_dtype, name=INPUT_NAME)
    # Scaling in the model: whatever feeds it (generator, detect.py, an exported TFLite
    # file on a phone) gives plain pixels, and MobileNetV2 always sees its [-1, 1].
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=INPUT_SCALING)(inputs)

    features = _backbone_features(scaled, alpha, grid.input_shape, backbone_weights, stride)
    conv3x3 = _separable_conv3x3 if head_separable else _conv3x3
    maps = _top_down(features, grid.strides, head_channels, conv3x3)
    x, points = _level_heads(maps, grid, head_channels, conv3x3)
    cells = _output_cells(x, points, grid, box_scale)
    return keras.Model(inputs, cells, name="face_detector")


def _backbone_features(scaled, alpha: float, input_shape: tuple, backbone_weights: str,
                       stride: int) -> dict:
    """{stride: MobileNetV2 feature map} of `scaled` (B, S, S, 3) (or a band's (B, R, S,
    3)) in [-1, 1], for the finest grid's stride and every coarser one of FEATURE_LAYERS."""
    strides = sorted(s for s in FEATURE_LAYERS if s >= stride)  # the grid's and coarser
    backbone = _backbone(alpha, input_shape, backbone_weights, strides)
    if backbone_weights.strip().lower() == "none":
        # Keras' MobileNetV2 keeps BatchNorm averages with momentum 0.999, made for
        # pretrained statistics: from scratch they would lag the weights for thousands of
        # steps and inference would see stale statistics (AP ~0 after hundreds of steps).
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    return dict(zip(strides, _as_list(backbone(scaled))))


def _level_heads(maps: dict, grid: GridSpec, head_channels: int, conv3x3):
    """The head of every grid level on the neck's `maps`: (box logits, landmark outputs or
    None); one level: (B, G, G, 5) and (B, G, G, 10); several: (B, N, 5) and (B, N, 10)
    over the levels' flat cells, finest first."""
    grid_sizes, level_strides, landmarks = grid.grid_sizes, grid.strides, grid.landmarks
    if len(grid_sizes) == 1:
        return _head(maps[grid.cell_size], grid_sizes[0], head_channels, conv3x3, landmarks)
    heads = [_head(maps[s], g, head_channels, conv3x3, landmarks, suffix=f"_s{s}")
             for g, s in zip(grid_sizes, level_strides)]
    # A level's cells row by row: its whole grid, or a band input's rows of it.
    cells = [r * g for r, g in grid.band_shapes]
    x = keras.layers.Concatenate(axis=1, name="levels")([
        keras.layers.Reshape((n, NUM_CHANNELS), name=f"head_cells_s{s}")(box)
        for (box, _), n, s in zip(heads, cells, level_strides)
    ])
    points = None if not landmarks else keras.layers.Concatenate(
        axis=1, name="landmark_levels")([
            keras.layers.Reshape((n, LANDMARK_CHANNELS), name=f"head_points_s{s}")(p)
            for (_, p), n, s in zip(heads, cells, level_strides)])
    return x, points


def _output_cells(x, points, grid: GridSpec, box_scale: float = 1.0):
    """The network's output from the box logits `x` and the landmark outputs `points`:
    sigmoids mapped onto the assignment rule's offset range, h and w times `box_scale`,
    the landmark channels joined linear; float32 under any precision policy."""
    # float32 even under mixed precision: the loss takes sqrt and logs of these values.
    # With landmarks the box channels get another name and the output layer joins them
    # with the landmark channels, so the output keeps its name (OUTPUT_NAME) either way.
    box_name = BOX_OUTPUT_NAME if grid.landmarks else OUTPUT_NAME
    low, high = grid.offsets
    if (low, high) == (0.0, 1.0) and box_scale == 1.0:  # offsets and sizes: the sigmoid's
        cells = keras.layers.Activation("sigmoid", dtype="float32", name=box_name)(x)
    else:
        x = keras.layers.Activation("sigmoid", dtype="float32", name="grid_sigmoid")(x)
        # Cells beside the centre cell see the face centre beyond their border: yc, xc =
        # (high - low) sigmoid + low over data.grid.offset_range (neighbour cells: 2 sigmoid
        # - 0.5 in [-0.5, 1.5], YOLOv5); h, w are the sigmoid times box_scale, the score
        # the sigmoid.
        scale, offset = np.ones(NUM_CHANNELS), np.zeros(NUM_CHANNELS)
        scale[[YC, XC]], offset[[YC, XC]] = high - low, low
        scale[[H, W]] = box_scale
        cells = keras.layers.Rescaling(scale.tolist(), offset.tolist(), dtype="float32",
                                       name=box_name)(x)
    if grid.landmarks:
        cells = keras.layers.Concatenate(axis=-1, dtype="float32", name=OUTPUT_NAME)(
            [cells, keras.layers.Activation("linear", dtype="float32",
                                            name="grid_landmarks")(points)])
    return cells


def _head(x, grid_size: int, channels: int, conv3x3, landmarks: bool = False,
          suffix: str = ""):
    """HEAD_CONVS x (3x3 conv, BatchNorm, ReLU), then the 1x1 conv to the 5 logits of
    every cell, (B, G, G, 5), and with `landmarks` a second 1x1 conv to its 10 landmark
    channels, (B, G, G, 10) (else None); layer names end with `suffix` (a level's, when
    several)."""
    for i in range(1, HEAD_CONVS + 1):
        x = conv3x3(channels, use_bias=False, name=f"head_conv{i}{suffix}")(x)
        x = keras.layers.BatchNormalization(name=f"head_bn{i}{suffix}")(x)
        x = keras.layers.ReLU(name=f"head_relu{i}{suffix}")(x)
    out = keras.layers.Conv2D(
        NUM_CHANNELS, 1, name=f"head_out{suffix}",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
    )
    boxes = out(x)
    out.bias.assign(_output_bias(grid_size))
    if not landmarks:
        return boxes, None
    # Zero bias: every point starts at the cell centre, offsets near 0.
    points = keras.layers.Conv2D(
        LANDMARK_CHANNELS, 1, name=f"head_landmarks{suffix}",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
    )(x)
    return boxes, points


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _output_bias(grid_size: int) -> np.ndarray:
    """Initial logits: boxes one cell wide at the cell centre, face score CLASS_PRIOR."""
    bias = np.zeros(NUM_CHANNELS, dtype=np.float32)  # yc = xc = 0.5, the cell centre
    cell = 1.0 / grid_size
    bias[H] = bias[W] = math.log(cell / (1.0 - cell))
    bias[CLASS] = -math.log((1.0 - CLASS_PRIOR) / CLASS_PRIOR)
    return bias


def _backbone(alpha: float, input_shape: tuple, weights: str, strides) -> keras.Model:
    """MobileNetV2 as one sub-model named BACKBONE_NAME with one output per stride."""
    # Find the weights before building, so a bad path fails at once.
    path = backbone_weights_path(weights, alpha, input_shape[1])
    mobilenet = keras.applications.MobileNetV2(
        input_shape=tuple(input_shape), alpha=alpha, include_top=False, weights=None
    )
    if path is not None:
        load_backbone_weights(mobilenet, path)
    outputs = [mobilenet.get_layer(FEATURE_LAYERS[s]).output for s in strides]
    return keras.Model(mobilenet.input, outputs, name=BACKBONE_NAME)


def _conv3x3(channels: int, name: str, use_bias: bool = True) -> keras.layers.Layer:
    return keras.layers.Conv2D(channels, 3, padding="same", use_bias=use_bias, name=name)


def _separable_conv3x3(channels: int, name: str, use_bias: bool = True) -> keras.layers.Layer:
    """A 3x3 depthwise + 1x1 pointwise convolution (MobileNet's, YuNet's head): at 64
    channels 8x fewer multiply-adds than a full 3x3 convolution, which at the stride-8 grid
    costs more than the whole alpha 0.35 backbone (print_model.py)."""
    return keras.layers.SeparableConv2D(channels, 3, padding="same", use_bias=use_bias,
                                        name=name)


def _top_down(features: dict, strides, channels: int, conv3x3=_conv3x3) -> dict:
    """Merge coarser feature maps down to the finest of `strides` (FPN top-down path);
    {stride: map} for each of `strides`, the grid levels.

    `conv3x3(channels, name)` makes the smoothing convolution (full or separable)."""
    x = keras.layers.Conv2D(channels, 1, name="neck_lateral32")(features[32])
    maps = {32: x} if 32 in strides else {}  # the stride-32 level: the last stage alone
    s = 32
    while s > min(strides):
        s //= 2
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"neck_up{s}")(x)
        lateral = keras.layers.Conv2D(channels, 1, name=f"neck_lateral{s}")(features[s])
        x = keras.layers.Add(name=f"neck_add{s}")([up, lateral])
        if s in strides:
            # Smooths the aliasing of nearest upsampling (FPN's 3x3 output conv); the path
            # goes on from the merged map, as FPN's does.
            maps[s] = conv3x3(channels, name=f"neck_smooth{s}")(x)
    return maps


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


def _cell_channels(outputs) -> bool:
    """Whether an output shape's last dimension is a grid's: 5, or 15 with landmarks."""
    try:
        output_has_landmarks(outputs[-1])
    except ValueError:
        return False
    return True


def check_grid_model(model: keras.Model, source: str) -> None:
    """Raise CheckpointError unless `model` maps (B, S, S, 3) images to (B, G, G, 5) grids
    (or to the (B, N, 5) cells of several levels; 15 channels with landmarks), or is the
    band input's network of such a model (`GridSpec.input_height`: (B, R, S, 3) images
    to the band's cells)."""
    inputs, outputs = model.input_shape, model.output_shape
    image = (isinstance(inputs, tuple) and len(inputs) == 4 and isinstance(inputs[1], int)
             and isinstance(inputs[2], int) and inputs[1] <= inputs[2] and inputs[3] == 3)
    one_level = (image and isinstance(outputs, tuple) and len(outputs) == 4
                 and isinstance(outputs[1], int) and isinstance(outputs[2], int)
                 and outputs[1] * inputs[2] == outputs[2] * inputs[1]
                 and _cell_channels(outputs))
    levels = (image and isinstance(outputs, tuple) and len(outputs) == 3
              and _cell_channels(outputs) and isinstance(outputs[1], int)
              and levels_of_cells(inputs[2], outputs[1], inputs[1]))
    if not (image and (one_level or levels)):
        raise CheckpointError(
            f"{source}: not a face grid model (input {inputs}, output {outputs}; expected "
            f"(batch, S, S, 3) -> (batch, G, G, {NUM_CHANNELS}) or the (batch, N, "
            f"{NUM_CHANNELS}) cells of several levels; {NUM_CHANNELS + LANDMARK_CHANNELS} "
            "channels with landmarks)"
        )


def at_input_size(model: keras.Model, config: Config, input_size: int,
                  input_height: int = 0) -> keras.Model:
    """The same trained network built for another input size (the same weights), on the
    square or on its band of `input_height` rows (`GridSpec.input_height`).

    Every layer is convolutional, so weights do not depend on the input size; the grid
    keeps its cell size (config.cell_size) and gets input_size / cell cells per side.
    Detecting at a larger size than training sees smaller faces (peers train at 640).

    The trained h, w outputs are a face's size over the training side (data.grid), which
    the convolutions cannot know: a face of P pixels gives P / config.input_size at any
    input size. The resized network multiplies them by config.input_size / input_size, so
    that its outputs are fractions of its own side as the grid layout says, and decode to
    the same P pixels (without it, boxes at 416 px from a 320-px network came out 1.3x
    too large).

    Args:
        model: a network made by `create_model(config)` (a loaded checkpoint).
        config: the configuration it was trained with (its run's config.json).
        input_size: the new input side, a multiple of 32.
        input_height: 0 (the square), or the band's rows, a multiple of 32 up to
            input_size: a landscape photo letterboxed into the square fills only a band
            of it, and the network then runs on that band alone, its cost the band's.
    """
    grid = config.grid_spec().at_input_size(input_size, input_height)
    resized = build_network(grid, config.alpha, config.head_channels, config.head_separable,
                            "none", box_scale=config.input_size / int(input_size))
    resized.set_weights(model.get_weights())
    return resized


def without_landmarks(model: keras.Model) -> keras.Model:
    """The box detector inside a landmark network: the same layers and weights up to its
    (B, G, G, 5) box cells (or (B, N, 5) over several levels), without the landmark heads,
    so its boxes and scores are exactly the landmark network's and it costs what a
    box-only network of the same recipe costs. A network without landmarks is returned as
    it is. The layers are shared, not copied: training one trains the other.
    """
    if not output_has_landmarks(model.output_shape[-1]):
        return model
    boxes = model.get_layer(BOX_OUTPUT_NAME).output
    # The output keeps the name every runtime and export reads (OUTPUT_NAME).
    boxes = keras.layers.Identity(dtype="float32", name=OUTPUT_NAME)(boxes)
    return keras.Model(model.input, boxes, name=model.name)
