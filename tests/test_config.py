"""Config (config.py), its CLI flags (cli.py) and atomic writes (files.py)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

import cli
from cli import add_config_arguments, config_from_args
from config import DEMO_ROOT, Config, demo_config, load_config, save_config
from errors import ConfigError
from files import atomic_path, atomic_write_text


def test_defaults_are_the_original_design():
    c = Config()
    assert (c.input_size, c.grid_size, c.alpha, c.batch_size) == (224, 7, 0.75, 16)
    assert c.cell_size == 32
    assert c.backbone_weights == "imagenet"
    assert c.dataset == os.path.join("data", "WIDER")


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"input_size": 200}, "input_size"),
        ({"grid_size": 5}, "grid_size"),
        ({"grid_size": 56}, "grid_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"nms_iou": 0.0}, "nms_iou"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"crop_prob": -0.1}, "crop_prob"),
    ],
)
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        Config(**changes)


def test_flags_override_fields_and_booleans_negate():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--grid-size", "14", "--alpha", "0.35", "--no-augment"])
    c = config_from_args(args)
    assert (c.grid_size, c.alpha, c.augment, c.input_size) == (14, 0.35, False, 224)


def test_demo_preset_trains_from_scratch_and_flags_still_override():
    """The README's main job needs no download and no ImageNet weights; flags win over it."""
    demo = demo_config(Config())
    assert demo.dataset == DEMO_ROOT and demo.backbone_weights == "none"
    assert demo.head_epochs == 0 and demo.finetune_epochs > 0  # no frozen-backbone stage
    # The user's 224 px input; 16-px cells (grid 14) for the demo's small faces, while
    # the default stays the user's 7x7.
    assert (demo.input_size, demo.grid_size) == (224, 14)
    assert (Config().input_size, Config().grid_size) == (224, 7)
    assert demo.lr_schedule == "cosine"
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--finetune-epochs", "2", "--lr-schedule", "constant"])
    c = config_from_args(args, base=demo)
    assert (c.finetune_epochs, c.lr_schedule, c.dataset) == (2, "constant", DEMO_ROOT)


def test_save_load_round_trip_and_config_flag(tmp_path):
    path = str(tmp_path / "run" / "config.json")
    save_config(Config(grid_size=14, seed=7), path)
    assert load_config(path) == Config(grid_size=14, seed=7)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    c = config_from_args(parser.parse_args(["--config", path, "--seed", "8"]))
    assert (c.grid_size, c.seed) == (14, 8)


def test_load_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"grid_size": 7,,}')
    with pytest.raises(ConfigError, match=r"bad.json:1: not valid JSON"):
        load_config(str(bad))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"grid_sise": 7}))
    with pytest.raises(ConfigError, match="unknown config field.*grid_sise"):
        load_config(str(unknown))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.json"))


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = str(tmp_path / "best.keras")
    atomic_write_text(path, "good")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.endswith(".keras")  # writers that pick the format by extension work
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash mid-save")
    assert open(path).read() == "good"
    assert os.listdir(tmp_path) == ["best.keras"]  # no temporary left behind


def test_run_main_turns_project_errors_into_one_line(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from cli import run_main\n"
        "from errors import DatasetError\n"
        "def main():\n    raise DatasetError('data/x.txt:3: expected a count')\n"
        "run_main(main)\n" % os.path.dirname(os.path.abspath(cli.__file__))
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "prog.py: error: data/x.txt:3: expected a count"


def test_presets_are_valid_and_train_py_starts_from_them(monkeypatch):
    """`train.py --preset NAME` starts from PRESETS[NAME], flags still override, and
    --demo with another preset is refused in one line."""
    import train
    from config import PRESETS, demo_config, real_config

    assert PRESETS["demo"] is demo_config and PRESETS["real"] is real_config
    real = real_config(Config())
    assert (real.input_size, real.grid_size, real.alpha, real.neighbour_cells) == (320, 40, 1.0, True)
    seen = []

    class Stop(Exception):
        pass

    def fake_train(config, **kwargs):  # records the resolved config, trains nothing
        seen.append(config)
        raise Stop

    monkeypatch.setattr("model.training.train", fake_train)
    with pytest.raises(Stop):
        train.main(["--preset", "real", "--batch-size", "4"])
    assert seen[0].input_size == 320 and seen[0].batch_size == 4
    with pytest.raises(ConfigError, match="--demo and --preset real"):
        train.main(["--demo", "--preset", "real"])
