"""print_model.py: the printed facts of a small network, and one-line errors."""

import os
import re
import subprocess
import sys

import pytest

from config import Config
from print_model import count_macs, model_summary_facts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "print_model.py", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )


def run_here(monkeypatch, capsys, *args):
    """print_model.py's main in this process (its TensorFlow already imported): exit code,
    stdout. The command line's own process and its one-line errors are tested by `run`."""
    import print_model
    from common.cli import run_main

    monkeypatch.setattr(sys, "argv", ["print_model.py", *args])
    with pytest.raises(SystemExit) as done:
        run_main(print_model.main)
    return done.value.code, capsys.readouterr().out


def fact(stdout, name):
    match = re.search(rf"^{name}\s+(.+)$", stdout, re.MULTILINE)
    assert match, f"no '{name}' line in:\n{stdout}"
    return match.group(1)


def test_prints_grid_cell_size_params_and_flops(monkeypatch, capsys):
    code, out = run_here(monkeypatch, capsys, "--input-size", "96", "--grid-size", "6",
                         "--alpha", "0.35", "--head-channels", "32")
    assert code == 0
    assert 'Model: "face_detector"' in out and "Total params" in out  # Keras' summary
    assert fact(out, "input shape").startswith("96 x 96 x 3 uint8")  # scaled inside
    assert fact(out, "grid output").startswith("6 x 6 x 5")
    assert fact(out, "cell size") == "16 px"
    assert "backbone weights: none" in fact(out, "model")
    assert int(fact(out, "trainable params").replace(",", "")) > 0
    flops = float(fact(out, "FLOPs per image").split()[0].replace(",", ""))
    assert flops > 0


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    missing = str(tmp_path / "missing.keras")
    result = run("--weights", missing)
    assert result.returncode == 2
    # TensorFlow's own start-up lines (oneDNN notices...) may precede it: ours are prefixed.
    lines = [line for line in result.stderr.splitlines() if line.startswith("print_model.py")]
    assert lines == [f"print_model.py: error: {missing}: checkpoint not found"]
    assert result.stdout == ""


def test_describes_a_saved_checkpoint(tmp_path, monkeypatch, capsys):
    """--weights reads the facts from the checkpoint itself, not from the config flags."""
    from config import Config
    from model.network import create_model

    path = str(tmp_path / "small.keras")
    create_model(Config(input_size=96, grid_size=12, alpha=0.35, backbone_weights="none",
                        head_channels=16)).save(path)
    code, out = run_here(monkeypatch, capsys, "--weights", path)
    assert code == 0
    assert fact(out, "model") == path
    assert fact(out, "grid output").startswith("12 x 12 x 5")
    assert fact(out, "cell size") == "8 px"


def test_bad_numbers_are_one_line_errors():
    """Config.validate refuses them before any network is built (no Keras traceback), and
    the CLI names the flag (cli.as_flag_message) where the library names the field."""
    for flags, message in ((["--alpha", "-1"], "--alpha -1.0: must be a finite number > 0"),
                           (["--alpha", "nan"], "--alpha nan: must be a finite number > 0"),
                           (["--head-channels", "0"], "--head-channels 0: must be >= 1"),
                           (["--input-height", "100"], "--input-height 100: must be 0 (the "
                            "square) or a multiple of 32 up to input_size=224")):
        result = run(*flags)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.startswith("print_model.py")]
        assert lines == [f"print_model.py: error: {message}"]
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_facts_read_grid_and_cell_size_and_finer_grids_cost_more_flops():
    """model_summary_facts reads the shapes off the model; 8-px cells cost more than 32."""
    from model.network import create_model

    small = Config(input_size=96, grid_size=3, alpha=0.35, backbone_weights="none",
                   head_channels=32)
    flops = []
    for grid_size in (3, 6, 12):
        facts = model_summary_facts(create_model(small.replace(grid_size=grid_size)))
        assert facts["input_shape"] == (96, 96, 3) and facts["input_dtype"] == "uint8"
        assert facts["grid_shape"] == (grid_size, grid_size, 5)
        assert facts["cell_size"] == 96 // grid_size
        assert facts["backbone_params"] > 0 and facts["head_params"] > 0
        assert facts["flops"] == 2 * facts["macs"]
        flops.append(facts["flops"])
    assert 0 < flops[0] < flops[1] < flops[2]


def test_mac_count_matches_published_mobilenetv2():
    """MobileNetV2 paper: 0.35 width at 224 px is 59M multiply-adds (classifier included)."""
    import keras

    model = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=0.35, include_top=True, weights=None
    )
    assert count_macs(model) / 1e6 == pytest.approx(59, abs=1)


def test_prints_every_grid_level_and_its_cells():
    from print_model import model_summary_facts

    from config import Config
    from model.network import create_model

    model = create_model(Config(input_size=64, grid_size=8, grid_levels=3, alpha=0.35,
                                backbone_weights="none", head_channels=16))
    facts = model_summary_facts(model)
    assert facts["grid_shape"] == (84, 5) and facts["grid_sizes"] == (8, 4, 2)
    assert facts["cell_size"] == 8


def test_band_input_prints_its_rows_and_costs_their_share(monkeypatch, capsys):
    """--input-height: the network on the band of H rows of its square input; the levels
    and cells stay the square's, the multiply-adds are about the band's share."""
    flags = ["--input-size", "128", "--grid-size", "16", "--grid-levels", "3", "--alpha",
             "0.35", "--head-channels", "16"]
    code, square = run_here(monkeypatch, capsys, *flags)
    assert code == 0
    code, band = run_here(monkeypatch, capsys, *flags, "--input-height", "64")
    assert code == 0
    assert fact(band, "input shape").startswith("64 x 128 x 3 uint8")
    assert fact(band, "grid output").startswith("16 x 16 + 8 x 8 + 4 x 4 x 5")
    assert fact(band, "cell size") == "8 px / 16 px / 32 px"
    assert "rows 64 of its 128x128 input" in fact(band, "model")
    macs = [float(fact(out, "FLOPs per image").split()[0].replace(",", ""))
            for out in (square, band)]
    assert 0.4 < macs[1] / macs[0] < 0.6, macs
