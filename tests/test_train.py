"""End to end: train.py's library path on generated data (model/training.py).

One tiny configuration (96 px input, 3x3 grid, MobileNetV2 alpha 0.35, no ImageNet weights)
trains for a few epochs; the tests then check what a user relies on: the loss falls, the
validation metrics reach the history and TensorBoard, checkpoints are named by their score
and epoch and reload, `--resume` continues at the saved epoch, and a NaN loss stops training
cleanly. The fault cases (kills, full disks, weights gone NaN) are in test_training_faults.py.

Only the `trained` run (and the seeded initial weights) use MobileNetV2: the NaN stop, the
mixed sources and the MirroredStrategy run test the training loop and the data pipeline,
so they train `helpers.tiny_grid_model` in its place (tracing MobileNetV2's training step
takes tens of seconds on a CPU, the tiny network's a fraction of one).
"""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import tiny_grid_model, tiny_train_config
from config import Config
from conftest import make_demo_root
from common.errors import CheckpointError, ConfigError, TrainingDiverged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_root(tmp_path_factory, num_train=48, num_val=16)




def _scalar_tags(event_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(event_dir, size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"]), acc


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """Two epochs, then `resume` to a third: the run every test below inspects. Trained
    on stretched images (letterbox off), which every later use must repeat unasked."""
    from model.training import train

    tmp_path = tmp_path_factory.mktemp("run")
    first = train(tiny_train_config(demo_root, tmp_path, finetune_epochs=2, letterbox=False))
    resumed = train(tiny_train_config(demo_root, tmp_path, finetune_epochs=3, letterbox=False),
                    resume=True)
    return tmp_path, first, resumed


def test_loss_falls_and_metrics_reach_the_history(trained):
    _, first, resumed = trained
    history = resumed.history
    assert history["epoch"] == [1, 2, 3]
    from model.validation import METRICS

    # Every metric the validation callback declares reaches the history, and no other val_*;
    # this model has no landmarks, so no val_nme.
    box_metrics = set(METRICS) - {"val_nme"}
    assert {k for k in history if k.startswith("val_")} == box_metrics
    for key in ("loss", "box_loss", "obj_loss", *box_metrics):
        assert len(history[key]) == 3 and np.all(np.isfinite(history[key])), key
    assert history["loss"][-1] < history["loss"][0]
    assert 0.0 <= min(history["val_ap"]) and max(history["val_ap"]) <= 1.0


def test_resume_continues_from_the_saved_epoch(trained):
    tmp_path, first, resumed = trained
    assert first.epochs_done == 2 and resumed.epochs_done == 3
    with open(tmp_path / "ckpt" / "run" / "state.json") as f:
        state = json.load(f)
    # 48 images in batches of 8: 6 steps an epoch; the resumed epoch was trained once.
    assert state["epoch"] == 3 and state["last"] == "last-e003.keras"
    assert state["optimizer_steps"] == 3 * 6
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "ckpt/run/last*"))) == [
        "last-e003.keras"]
    with open(tmp_path / "logs" / "fit" / "run" / "history.json") as f:
        assert json.load(f)["epoch"] == [1, 2, 3]


def test_config_is_recorded_beside_logs_and_checkpoints(trained):
    tmp_path, _, _ = trained
    for folder in (tmp_path / "logs" / "fit" / "run", tmp_path / "ckpt" / "run"):
        with open(folder / "config.json") as f:
            saved = json.load(f)
        assert saved["grid_size"] == 3 and saved["run_name"] == "run"


def test_checkpoints_are_named_by_score_and_reload_without_custom_objects(trained):
    tmp_path, _, resumed = trained
    names = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "ckpt/run/model-*.keras")))
    assert 1 <= len(names) <= 2  # keep_best=2
    assert re.fullmatch(rf"model-{resumed.best_score:.2f}-e00[123]\.keras",
                        os.path.basename(resumed.best_checkpoint))
    assert os.path.isfile(resumed.best_checkpoint)
    # A fresh interpreter that imports nothing of this project loads it.
    code = (
        "import keras, numpy as np, sys; m = keras.models.load_model(sys.argv[1]); "
        "y = m.predict(np.zeros((1, 96, 96, 3), 'uint8'), verbose=0); print(y.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code, resumed.best_checkpoint],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(1, 3, 3, 5)"


def test_a_stretch_trained_model_detects_as_trained_with_no_flag(trained, demo_root,
                                                                  tmp_path, capsys):
    """The checkpoint and its TFLite export carry letterbox=False: detect.py with no
    preprocessing flag gives exactly the faces of an explicit stretch call, and differs
    from a letterboxed one; --letterbox against the model is refused naming both."""
    import detect
    import export
    from data.image import read_image
    from model.detector import FaceDetector, face_rows

    _, _, resumed = trained
    checkpoint = resumed.best_checkpoint
    image_path = sorted(glob.glob(os.path.join(demo_root, "WIDER_val", "images", "*", "*.jpg")))[0]
    image = read_image(image_path)
    assert image.shape[0] != image.shape[1]  # an oblong photo: stretch and pad differ
    lite = str(tmp_path / "stretched.tflite")
    assert export.main(["--weights", checkpoint, "--format", "tflite", "--output", lite]) == 0
    assert "stretch" in capsys.readouterr().out
    stretched = FaceDetector.load(checkpoint, letterbox=False)
    padded = FaceDetector.from_keras(stretched.model, letterbox=True)
    for weights in (checkpoint, lite):
        assert detect.main(["--image", image_path, "--weights", weights, "--json", "--no-save",
                            "--threshold", "0"]) == 0
        faces = json.loads(capsys.readouterr().out)[0]["faces"]
        explicit = stretched if weights == checkpoint else FaceDetector.load(
            weights, letterbox=False)
        assert faces == face_rows(explicit.detect(image, score_threshold=0.0)) and faces, weights
        assert face_rows(padded.detect(image, score_threshold=0.0)) != faces
        with pytest.raises(ConfigError, match=r"letterbox=True: .* stretched images "
                                              r"\(letterbox=False, stored in the model\)"):
            detect.main(["--image", image_path, "--weights", weights, "--letterbox"])


def test_tensorboard_holds_scalars_images_and_the_pr_curve(trained):
    """Every epoch: the scalars, validation images, and validation's PR curve in the
    layout of TensorBoard's PR-curves plugin (6 rows: TP, FP, TN, FN, precision, recall)."""
    import tensorflow as tf

    tmp_path, _, _ = trained
    run = tmp_path / "logs" / "fit" / "run"
    train_tags, _ = _scalar_tags(str(run / "train"))
    assert {"epoch_loss", "epoch_learning_rate"} <= train_tags
    val_tags, _ = _scalar_tags(str(run / "validation"))
    assert {"epoch_ap", "epoch_iou", "epoch_mse"} <= val_tags
    image_tags, acc = _scalar_tags(str(run / "images"))
    assert {"validation_detections", "validation_pr_curve/pr_curves"} <= image_tags
    assert acc.SummaryMetadata("validation_pr_curve/pr_curves").plugin_data.plugin_name == \
        "pr_curves"
    events = acc.Tensors("validation_pr_curve/pr_curves")
    assert [e.step for e in events] == [0, 1, 2]  # one curve per epoch, resumed one included
    curve = tf.make_ndarray(events[-1].tensor_proto)
    assert curve.shape == (6, 101)
    tp, fp, tn, fn, precision, recall = curve
    faces = tp[0] + fn[0]  # the same valid faces at every cut
    assert faces > 0 and np.all(tp + fn == faces) and np.all(tn == 0)
    assert np.all(np.diff(tp) <= 0) and np.all(np.diff(fp) <= 0)  # fewer kept as cuts rise
    np.testing.assert_allclose(recall, tp / faces, rtol=1e-6)
    images = acc.Tensors("validation_detections")
    assert len(images) == 3


def test_nan_loss_stops_naming_epoch_and_batch_and_saves_nothing(demo_root, tmp_path, monkeypatch):
    import keras

    import model.loss as loss_module
    from model.training import train

    class NanLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.mean(y_pred) * np.nan

    monkeypatch.setattr(loss_module, "make_loss", lambda config: NanLoss())
    monkeypatch.setattr("model.network.create_model", tiny_grid_model)
    # Nothing was saved before the NaN, and the message says so (it once claimed a kept
    # "last good checkpoint" that did not exist).
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 1; stopped, no epoch was "
                                               r"saved, nothing is kept in .*ckpt/run"):
        train(tiny_train_config(demo_root, tmp_path, finetune_epochs=1, steps_per_epoch=2))
    assert not glob.glob(str(tmp_path / "ckpt" / "run" / "*.keras"))


def test_resume_without_a_run_and_conflicting_flags_are_clear(demo_root, tmp_path):
    from model.training import train

    with pytest.raises(CheckpointError, match="no run to resume"):
        train(tiny_train_config(demo_root, tmp_path, run_name=""), resume=True)
    with pytest.raises(ConfigError, match=r"^resume=True: cannot also start from "
                                          r"weights='x.keras'") as error:
        train(tiny_train_config(demo_root, tmp_path), resume=True, weights="x.keras")
    # The command line names its flags.
    from common.cli import as_flag_message

    assert as_flag_message(str(error.value), ("resume", "weights")).startswith(
        "--resume: cannot also start from weights='x.keras'")


def test_missing_dataset_names_download_and_demo(tmp_path):
    r = subprocess.run(
        [sys.executable, "train.py", "--dataset", str(tmp_path / "WIDER"), "--backbone-weights",
         "none"], capture_output=True, text=True, cwd=REPO,
    )
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:") and "python tools/download.py" in last
    assert "--demo" in last


def test_mixed_sources_with_negatives_train(demo_root, tmp_path, monkeypatch):
    """A WIDER root mixed with a labelme folder (weight 2) plus face-free negatives trains."""
    monkeypatch.setattr("model.network.create_model", tiny_grid_model)
    from helpers import make_flat_labelme, write_image

    from data.datasets import training_records
    from model.training import train

    labelme = make_flat_labelme(tmp_path / "mine", 10)
    for i in range(3):
        write_image(str(tmp_path / "negatives" / f"bg_{i}.jpg"), 64, 48)
    config = tiny_train_config(demo_root, tmp_path, dataset=f"{demo_root}:1,labelme={labelme}:2",
                     negatives=str(tmp_path / "negatives"), finetune_epochs=1,
                     steps_per_epoch=2, validation_steps=1)
    records = training_records(config)
    mine = [r for r in records if os.path.dirname(r.path) == labelme]
    negatives = [r for r in records if "bg_" in r.name]
    assert len(negatives) == 3 and all(len(r.boxes) == 0 for r in negatives)
    assert len(mine) == 2 * len({r.path for r in mine})  # weight 2: each image twice
    result = train(config)
    assert result.epochs_done == 1 and np.isfinite(result.history["loss"][0])


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import model.network
from helpers import tiny_grid_model  # tests/ is on the path (PYTHONPATH)
model.network.create_model = tiny_grid_model
from config import Config
from model.training import make_strategy, train
config = Config(**json.loads(sys.argv[1]))
strategy = make_strategy(config)
result = train(config)
print("REPLICAS", strategy.num_replicas_in_sync, "EPOCHS", result.epochs_done,
      "LOSS", result.history["loss"][-1])
"""


def test_mirrored_strategy_on_two_logical_cpus(demo_root, tmp_path):
    """The multi-GPU path (MirroredStrategy, global batch scaled) runs on two CPU devices
    (the tiny stand-in network: the strategy, not MobileNetV2, is what is tested)."""
    values = tiny_train_config(demo_root, tmp_path, distribute="mirrored", batch_size=4,
                     finetune_epochs=1, steps_per_epoch=2, validation_steps=1).to_dict()
    r = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(values)],
                       capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           [REPO, os.path.join(REPO, "tests")])})
    assert r.returncode == 0, r.stderr[-3000:]
    words = r.stdout.split("REPLICAS", 1)[1].split()
    assert words[0] == "2" and words[2] == "1"
    assert np.isfinite(float(words[4]))


def test_learning_rate_warms_up_then_follows_the_schedule():
    from model.training import LearningRateSchedule

    cosine = LearningRateSchedule(1e-2, warmup_steps=10, schedule="cosine", total_steps=110)
    assert cosine.rate(0) == pytest.approx(1e-3)  # warm-up starts at 10%
    assert cosine.rate(5) == pytest.approx(5.5e-3)
    assert cosine.rate(10) == pytest.approx(1e-2)  # full rate when warm-up ends
    assert cosine.rate(60) == pytest.approx((1e-2 + 1e-4) / 2)  # half-way down the cosine
    assert cosine.rate(110) == pytest.approx(1e-4) == cosine.rate(500)  # floor: 1%
    rates = [cosine.rate(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # decays monotonically
    constant = LearningRateSchedule(1e-2, warmup_steps=10, schedule="constant")
    assert constant.rate(0) == pytest.approx(1e-3) and constant.rate(1000) == 1e-2
    with pytest.raises(ConfigError, match="lr_schedule='step'"):
        LearningRateSchedule(1e-2, 0, schedule="step")
    with pytest.raises(ConfigError, match="lr_schedule='step'"):
        Config(lr_schedule="step")


def test_learning_rate_schedule_sets_the_optimizer_and_resumes_mid_stage():
    import keras

    from model.training import LearningRateSchedule

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.zeros((8, 1), np.float32)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda b, logs: seen.append(float(model.optimizer.learning_rate)))
    # A resumed stage: 4 of 8 batches done, so no warm-up and the cosine continues.
    schedule = LearningRateSchedule(0.1, warmup_steps=2, schedule="cosine", total_steps=8,
                                    start_step=4)
    model.fit(x, x, batch_size=2, epochs=1, verbose=0, callbacks=[schedule, record])
    assert seen == pytest.approx([schedule.rate(s) for s in range(4, 8)])
    assert seen[0] < 0.1 and seen[-1] < seen[0]


def test_initial_weights_follow_the_seed(demo_root, tmp_path):
    """Two runs with one seed start from the same weights (runs repeat); another seed
    starts elsewhere."""
    from model.training import initial_model

    def weights(seed):
        model = initial_model(tiny_train_config(demo_root, tmp_path, seed=seed))
        return [np.asarray(w) for w in model.get_weights()]

    first, again, other = weights(7), weights(7), weights(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_validation_scores_rank_higher_is_better_and_losses_lower():
    """--monitor picks the checkpoint direction: every val_* score the validation callback
    logs (val_f1 included) is better higher; losses and val_mse are better lower."""
    from model.training import monitor_mode

    for score in ("val_ap", "val_iou", "val_recall", "val_f1"):
        assert monitor_mode(score) == "max", score
    for loss in ("val_mse", "loss", "box_loss"):
        assert monitor_mode(loss) == "min", loss


def test_demo_reads_the_config_file(tmp_path, monkeypatch):
    """`train.py --demo --config FILE` never read the file: the demo recipe now starts from
    it (fields the recipe sets still take the recipe's values; flags override both)."""
    import data.synthetic
    import model.training
    import train as train_cli
    from config import PRESETS, save_config

    seen = {}

    class Done(Exception):
        pass

    def fake_train(config, resume=False, weights=None):
        seen["config"] = config
        raise Done

    monkeypatch.setattr(model.training, "train", fake_train)
    monkeypatch.setattr(data.synthetic, "ensure_demo_dataset", lambda root: root)
    path = str(tmp_path / "my.json")
    save_config(Config(keep_best=7, nms_iou=0.3, log_dir=str(tmp_path / "mylogs")), path)
    with pytest.raises(Done):
        train_cli.main(["--demo", "--config", path, "--nms-iou", "0.35"])
    config = seen["config"]
    expected = PRESETS["demo"](Config(keep_best=7, nms_iou=0.3, log_dir=str(tmp_path / "mylogs")))
    assert config == expected.replace(nms_iou=0.35)
    assert config.keep_best == 7 and config.log_dir == str(tmp_path / "mylogs")


def test_compile_builds_the_optimizer_so_the_first_step_is_traced_once():
    """model.training._compile builds the optimizer's variables itself: left to Keras, they
    are made inside the first traced step, which TensorFlow then traces a second time
    (about 20 s for MobileNetV2 on a CPU, at every training start)."""
    from model.training import _compile

    config = Config(input_size=64, grid_size=8, backbone_weights="none")
    model = tiny_grid_model(config)
    _compile(model, config, 1e-3)
    assert model.optimizer.built
    # AdamW: a first and a second moment for every trainable variable, made now.
    moments = {v.path for v in model.optimizer.variables if "momentum" in v.path
               or "velocity" in v.path}
    assert len(moments) == 2 * len(model.trainable_variables) > 0


def test_training_stages_are_the_frozen_head_then_the_whole_network():
    """The order and rates `train` runs its stages in (a resume counts epochs across them)."""
    from model.training import Stage, training_stages

    config = Config(head_epochs=2, finetune_epochs=5, learning_rate=0.01,
                    finetune_learning_rate=0.001)
    assert training_stages(config) == [Stage("head", 2, 0.01, False),
                                       Stage("finetune", 5, 0.001, True)]
