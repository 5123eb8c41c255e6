"""Print the detector network and its facts: parameters, input, grid, cell size, FLOPs.

    python print_model.py                          # the default config: 224 px, 7x7 grid
    python print_model.py --grid-size 28 --alpha 0.35
    python print_model.py --weights checkpoints/best.keras
    python print_model.py --input-size 384 --input-height 256   # on a band of the input

The config's network is built with backbone weights 'none' (printing needs no weights)
unless --backbone-weights is given. FLOPs = 2 x multiply-adds of the convolution and
dense layers (`count_macs`).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.cli import add_config_arguments, config_from_args, run_main  # noqa: E402
from data.grid import NUM_CHANNELS, level_grid_sizes, levels_of_cells  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", metavar="CHECKPOINT",
        help="describe this saved .keras detector instead of the config's network",
    )
    parser.add_argument(
        "--expand-nested", action="store_true", help="list the backbone's layers too"
    )
    parser.add_argument(
        "--input-height", type=int, default=0, metavar="H",
        help="the network on the band of H rows of its square input (a landscape photo's "
             "rows, export.py --input-height): its cost",
    )
    add_config_arguments(parser)
    args = parser.parse_args()
    config = config_from_args(args)

    from model.checkpoints import load_checkpoint
    from model.network import check_grid_model, create_model

    if args.weights:
        model = load_checkpoint(args.weights, compile=False)  # printing needs no optimizer
        check_grid_model(model, args.weights)
        source = args.weights
    else:
        if args.backbone_weights is None:
            config = config.replace(backbone_weights="none")
        model = create_model(config)
        source = f"config (backbone weights: {config.backbone_weights})"
    if args.input_height:
        from model.network import at_input_size

        side = model.input_shape[2]  # the square side of the config or the checkpoint
        built = _checkpoint_config(args.weights) if args.weights else config
        model = at_input_size(model, built, side, args.input_height)
        source += f", rows {args.input_height} of its {side}x{side} input"
    model.summary(expand_nested=args.expand_nested)

    facts = model_summary_facts(model)
    r, s, c = facts["input_shape"]
    k = facts["grid_shape"][-1]
    rows = [
        ("model", source),
        ("input shape", f"{r} x {s} x {c} {facts['input_dtype']}"
                        + ("  (RGB pixels, scaled to [-1, 1] inside)"
                           if facts["input_dtype"] == "uint8" else "")),
        ("grid output", " + ".join(f"{g} x {g}" for g in facts["grid_sizes"])
                        + f" x {k}  (h, w, yc, xc, class"
                        + (", x y of 5 landmarks)" if k > NUM_CHANNELS else ")")),
        ("cell size", " / ".join(f"{s // g} px" for g in facts["grid_sizes"])),
        ("trainable params", f"{facts['trainable_params']:,}"),
        ("frozen params", f"{facts['frozen_params']:,}  (non-trainable: frozen layers "
                          "and BatchNorm statistics)"),
        ("backbone / head", f"{facts['backbone_params']:,} / {facts['head_params']:,} params"),
        ("FLOPs per image", f"{facts['flops'] / 1e6:,.1f} M  (2 x {facts['macs'] / 1e6:,.1f} M "
                            "multiply-adds of conv and dense layers)"),
    ]
    print()
    for name, text in rows:
        print(f"{name:<17} {text}")


def _checkpoint_config(weights: str):
    """The run's config.json beside a checkpoint (the widths a band network is built with)."""
    from common.errors import ConfigError
    from config import run_config_beside

    config = run_config_beside(weights)
    if config is None:
        raise ConfigError(f"--input-height: needs the run's config.json beside {weights}")
    return config


def count_macs(model) -> int:
    """Multiply-accumulates per image of the convolution and dense layers of a Keras model.

    Counted from each layer's kernel size and output shape (nested models included):
    convolutions H_out*W_out*kernel_size, transposed convolutions H_in*W_in*kernel_size,
    dense layers positions*kernel_size. BatchNorm, activations, additions and biases are
    not counted (the MobileNet papers' convention). FLOPs = 2 x MACs.
    """
    import keras
    import numpy as np

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


def model_summary_facts(model) -> dict:
    """The facts printed under the summary, read from the model itself (config or checkpoint).

    Returns:
        dict with input_shape (S, S, 3) (a band input's (R, S, 3)), input_dtype, grid_shape (G, G, 5) (several levels:
        (N, 5)), grid_sizes (each level's G, finest first), cell_size (px, the finest),
        trainable_params, frozen_params (non-trainable weights: frozen layers and
        BatchNorm moving statistics), backbone_params, head_params (all outside the
        backbone), macs and flops (= 2 x MACs) per image.
    """
    import numpy as np

    from model.network import BACKBONE_NAME

    def size(weights):
        return int(sum(np.prod(w.shape) for w in weights))

    input_shape = tuple(int(d) for d in model.input_shape[1:])
    grid_shape = tuple(int(d) for d in model.output_shape[1:])
    rows, side = input_shape[:2]  # (S, S), or a band input's (R, S)
    if len(grid_shape) == 3:
        grid_sizes = (grid_shape[1],)
    else:
        grid_sizes = level_grid_sizes(*levels_of_cells(side, grid_shape[0],
                                                       0 if rows == side else rows))
    backbone_params = size(model.get_layer(BACKBONE_NAME).weights) if any(
        layer.name == BACKBONE_NAME for layer in model.layers
    ) else 0
    macs = count_macs(model)
    return {
        "input_shape": input_shape,
        "input_dtype": str(model.inputs[0].dtype),
        "grid_shape": grid_shape,
        "grid_sizes": grid_sizes,
        "cell_size": side // grid_sizes[0],
        "trainable_params": size(model.trainable_weights),
        "frozen_params": size(model.non_trainable_weights),
        "backbone_params": backbone_params,
        "head_params": size(model.weights) - backbone_params,
        "macs": macs,
        "flops": 2 * macs,
    }


if __name__ == "__main__":
    run_main(main, flags=("input_height",))
