"""Print the detector network and its facts: parameters, input, grid, cell size, FLOPs.

    python print_model.py                          # the default config: 224 px, 7x7 grid
    python print_model.py --grid-size 28 --alpha 0.35
    python print_model.py --weights checkpoints/best.keras

The config's network is built with backbone weights 'none' (printing needs no weights)
unless --backbone-weights is given. FLOPs = 2 x multiply-adds of the convolution and
dense layers (model.network.count_macs).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cli import add_config_arguments, config_from_args, run_main  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", metavar="CHECKPOINT",
        help="describe this saved .keras detector instead of the config's network",
    )
    parser.add_argument(
        "--expand-nested", action="store_true", help="list the backbone's layers too"
    )
    add_config_arguments(parser)
    args = parser.parse_args()
    config = config_from_args(args)

    from model.checkpoints import load_checkpoint
    from model.network import check_grid_model, create_model, model_summary_facts

    if args.weights:
        model = load_checkpoint(args.weights, compile=False)  # printing needs no optimizer
        check_grid_model(model, args.weights)
        source = args.weights
    else:
        if args.backbone_weights is None:
            config = config.replace(backbone_weights="none")
        model = create_model(config)
        source = f"config (backbone weights: {config.backbone_weights})"
    model.summary(expand_nested=args.expand_nested)

    facts = model_summary_facts(model)
    s, _, c = facts["input_shape"]
    g, _, k = facts["grid_shape"]
    rows = [
        ("model", source),
        ("input shape", f"{s} x {s} x {c} {facts['input_dtype']}"
                        + ("  (RGB pixels, scaled to [-1, 1] inside)"
                           if facts["input_dtype"] == "uint8" else "")),
        ("grid output", f"{g} x {g} x {k}  (h, w, yc, xc, class)"),
        ("cell size", f"{facts['cell_size']} px"),
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


if __name__ == "__main__":
    run_main(main)
