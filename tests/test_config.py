"""Config (config.py), its CLI flags (common/cli.py) and atomic writes (common/files.py)."""

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from common import cli
from common.cli import add_config_arguments, config_from_args
from config import DEMO_ROOT, Config, demo_config, load_config, save_config
from common.errors import ConfigError
from common.files import atomic_path, atomic_write_text


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


def test_config_files_from_before_the_augmentation_fields_still_load(tmp_path):
    """A run's config.json written before the augmentation strengths were fields gets
    their defaults, the values the constants of data/augment.py had."""
    new = ["face_centred_prob", "min_visible_fraction", "flip_prob", "jitter_prob",
           "brightness_delta", "contrast_min", "contrast_max", "saturation_min",
           "saturation_max", "hue_delta"]
    old = {k: v for k, v in Config(grid_size=14).to_dict().items() if k not in new}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    c = load_config(str(path))
    assert c == Config(grid_size=14)
    assert [getattr(c, k) for k in new] == [0.8, 0.5, 0.5, 0.5, 32.0, 0.75, 1.25, 0.7, 1.3, 8]


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
        "from common.cli import run_main\n"
        "from common.errors import DatasetError\n"
        "def main():\n    raise DatasetError('data/x.txt:3: expected a count')\n"
        "run_main(main)\n" % os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
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
    small = PRESETS["small"](Config())
    assert (small.alpha, small.head_separable, small.grid_levels, small.cell_size) == (
        0.35, True, 3, 8)  # cells of 8, 16 and 32 px
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


# Bad values for every numeric field of Config: each must be refused by Config.validate
# (so by every CLI) with a ConfigError naming the field.
NAN, INF = float("nan"), float("inf")
BAD_NUMBERS = {
    "input_size": [0, -32, 100],
    "grid_size": [0, -7],
    "grid_levels": [0, -1],
    "alpha": [-1.0, 0.0, NAN, INF],
    "head_channels": [0, -1],
    "min_face_size": [-1.0, NAN, INF],
    "crop_prob": [-0.1, 1.5, NAN],
    "crop_min_scale": [0.0, -0.1, NAN],
    "crop_max_scale": [INF, NAN, 0.0],
    "face_centred_prob": [-0.1, 1.5, NAN],
    "min_visible_fraction": [-0.5, 1.1, NAN],
    "mosaic_prob": [-0.1, 1.5, NAN],
    "mosaic_tiles": [1, 5, 0],
    "flip_prob": [1.5, -1.0, NAN],
    "jitter_prob": [-0.1, 2.0, NAN],
    "brightness_delta": [-1.0, 256.0, NAN, INF],
    "contrast_min": [-0.1, NAN],
    "contrast_max": [-1.0, NAN, INF],
    "saturation_min": [-0.5, NAN],
    "saturation_max": [NAN, INF, -1.0],
    "hue_delta": [-1, 91],
    "max_images": [-1],
    "max_image_pixels": [0, -5],
    "workers": [-1],
    "seed": [-1, 2**32, 99999999999],
    "batch_size": [0, -4],
    "head_epochs": [-1],
    "finetune_epochs": [-3],
    "learning_rate": [-1e-3, 0.0, NAN, INF],
    "finetune_learning_rate": [-1.0, 0.0, NAN],
    "warmup_epochs": [NAN, -1.0, INF],
    "weight_decay": [-1e-4, NAN],
    "early_stopping_patience": [-1],
    "reduce_lr_patience": [-1],
    "reduce_lr_factor": [0.0, 1.0, 1.5, NAN],
    "keep_best": [0],
    "steps_per_epoch": [-5],
    "validation_steps": [-1],
    "focal_gamma": [-1.0, NAN],
    "focal_alpha": [1.5, -0.1, NAN],
    "ema_decay": [-0.1, 1.0, NAN],
    "centre_radius": [-1.0, 0.2, 9.0, NAN],
    "box_loss_weight": [-1.0, INF],
    "landmark_loss_weight": [-1.0, INF],
    "objectness_loss_weight": [NAN, -2.0],
    "score_threshold": [1.5, -0.5, NAN],
    "eval_score_threshold": [-0.1, NAN],
    "nms_iou": [0.0, 1.1, NAN],
    "max_detections": [-1],
}


def test_every_numeric_field_has_bad_values_below():
    import dataclasses

    numeric = {f.name for f in dataclasses.fields(Config) if str(f.type) in ("int", "float")}
    assert numeric == set(BAD_NUMBERS)


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_NUMBERS.items() for v in vs])
def test_every_numeric_field_refuses_bad_values_naming_it(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}=") as caught:
        Config(**{field: value})
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=rf"^{field}="):  # replace() validates too
        Config().replace(**{field: value})


def test_edge_values_that_mean_something_are_accepted():
    c = Config(max_images=0, workers=0, seed=0, head_epochs=0, steps_per_epoch=0,
               validation_steps=0, warmup_epochs=0.0, weight_decay=0.0, max_detections=0,
               min_face_size=0, early_stopping_patience=0, reduce_lr_patience=0,
               crop_prob=1.0, score_threshold=0.0, focal_alpha=1.0, nms_iou=1.0)
    assert c.min_face_size == 0  # an int for a float field is a number too
    assert Config(seed=2**32 - 1).seed == 2**32 - 1


@pytest.mark.parametrize("changes,message", [
    ({"batch_size": "16"}, "batch_size='16': must be an integer"),
    ({"seed": 1.5}, "seed=1.5: must be an integer"),
    ({"batch_size": True}, "batch_size=True: must be an integer"),
    ({"learning_rate": "0.001"}, "learning_rate='0.001': must be a number"),
    ({"learning_rate": None}, "learning_rate=None: must be a number"),
    ({"augment": 1}, "augment=1: must be true or false"),
    ({"letterbox": "no"}, "letterbox='no': must be true or false"),
    ({"dataset": None}, "dataset=None: must be a string"),
    ({"lr_schedule": 3}, "lr_schedule=3: must be a string"),
])
def test_wrong_types_name_the_field(changes, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        Config(**changes)


@pytest.mark.parametrize("text,message", [
    ('{"batch_size": "16"}', "batch_size='16': must be an integer"),
    ('{"augment": "false"}', "augment='false': must be true or false"),
    ('{"warmup_epochs": null}', "warmup_epochs=None: must be a number"),
    ('{"finetune_epochs": -3}', "finetune_epochs=-3: must be >= 0"),
    ("null", "expected a JSON object of config fields, got null"),
    ("[1, 2]", "expected a JSON object of config fields, got list"),
    ("16", "expected a JSON object of config fields, got int"),
    ('"text"', "expected a JSON object of config fields, got str"),
])
def test_config_files_with_wrong_values_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: {message}"


def test_bad_flags_are_refused_through_validate():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    for flags, field in ((["--seed", "-1"], "seed"), (["--warmup-epochs", "nan"], "warmup_epochs"),
                         (["--alpha", "-1"], "alpha"), (["--learning-rate", "inf"], "learning_rate"),
                         (["--max-image-pixels", "0"], "max_image_pixels")):
        with pytest.raises(ConfigError, match=rf"^{field}="):
            config_from_args(parser.parse_args(flags))


@pytest.mark.parametrize("script,flags,message", [
    ("train.py", ["--finetune-epochs", "-3"], "--finetune-epochs -3: must be >= 0"),
    ("train.py", ["--max-images", "-1"], "--max-images -1: must be >= 0 (0 = all)"),
    ("train.py", ["--seed", "99999999999"], "--seed 99999999999: must be in [0, 4294967295]"),
    ("train.py", ["--warmup-epochs", "nan"], "--warmup-epochs nan: must be a finite number >= 0"),
    ("train.py", ["--head-channels", "0"], "--head-channels 0: must be >= 1"),
    ("train.py", ["--validation-steps", "-1"],
     "--validation-steps -1: must be >= 0 (0 = one pass over the validation data)"),
    ("train.py", ["--contrast-min", "2"], "--contrast-min 2.0: must be <= contrast_max=1.25"),
])
def test_clis_exit_2_with_one_line_for_bad_numbers(script, flags, message):
    """As a user runs them: no traceback, exit 2 (train.py -3 epochs used to exit 0), and
    the value named by the flag the user typed (cli.as_flag_message)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
    done = subprocess.run([sys.executable, script, *flags], cwd=repo, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=repo))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(script)]
    assert lines == [f"{script}: error: {message}"]
    assert "Traceback" not in done.stderr


def test_overwritten_input_finds_the_same_file_by_any_name(tmp_path):
    from common.cli import overwritten_input

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"photo")
    os.link(photo, tmp_path / "hard.jpg")
    os.symlink(photo, tmp_path / "soft.jpg")
    for name in ("a.jpg", "hard.jpg", "soft.jpg", "sub/../a.jpg"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        out = str(tmp_path / name)
        assert overwritten_input(["elsewhere.jpg", out], [str(photo)]) == (out, str(photo))
    assert overwritten_input([str(tmp_path / "new.jpg")], [str(photo)]) is None


def test_every_field_has_its_config_py_comment_as_help():
    """field_docs reads each field's comment in config.py (trailing, else the lines above):
    every field has one, and every CLI's --help shows it beside the default."""
    import dataclasses

    from config import field_docs

    docs = field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(Config)}
    assert all(docs.values()), [name for name, doc in docs.items() if not doc]
    assert docs["input_size"] == "side of the square network input, pixels"
    assert docs["neighbour_cells"].startswith("Faces also predicted by up to 3 neighbouring")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shown = subprocess.run([sys.executable, os.path.join(repo, "train.py"), "--help"],
                           capture_output=True, text=True, check=True).stdout
    shown = " ".join(shown.split())  # argparse wraps the help text
    assert "side of the square network input, pixels (default: 224)" in shown
    assert "constant or cosine (to 1% at stage end) (default: 'constant')" in shown


def test_grid_levels_stop_at_the_backbones_coarsest_cells():
    """Levels double the cell size from the grid's; the backbone's coarsest is 32 px."""
    assert Config(input_size=320, grid_size=40, grid_levels=3).grid_levels == 3  # 8, 16, 32
    with pytest.raises(ConfigError, match=r"grid_levels=3: from 16-px cells .* 64-px cells"):
        Config(input_size=320, grid_size=20, grid_levels=3)
    with pytest.raises(ConfigError, match=r"grid_levels=0: must be >= 1"):
        Config(grid_levels=0)
