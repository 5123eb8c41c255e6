"""Faults that must lose nothing (model/training.py, model/checkpoints.py, common/files.py).

Each fault is injected deterministically, never by timing a real kill:
- weights that go NaN on an epoch's last step (a callback sets them), whose loss is finite;
- a kill between the saves (a save or `write_state` patched to raise after the files
  before it are in place; a leftover temporary written by hand);
- a full disk (`os`-level ENOSPC raised inside the atomic write, and RLIMIT_FSIZE in a
  subprocess, which makes the kernel refuse the write as a full disk would);
- a copied run folder whose state.json holds absolute paths into the original;
- a resume with another architecture, and folders that are files.

The training runs here use a tiny grid network (`helpers.tiny_grid_model`, patched in for
`model.network.create_model`): the faults live in the training loop and the checkpoint
folder, not in MobileNetV2, and the tiny network trains an epoch in a fraction of a second
instead of compiling MobileNetV2 for tens of seconds (test_train.py trains the real one).
"""

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from common import files
import model.checkpoints as checkpoints
import model.training as training
from config import save_config
from conftest import make_demo_root
from common.errors import CheckpointError, ConfigError, TrainingDiverged
from model.checkpoints import (
    ScoreCheckpoint,
    check_resumed_model,
    clean_checkpoint_folder,
    load_checkpoint,
    read_state,
    resume_file,
    write_state,
)
from model.validation import NonFiniteLossGuard
from helpers import tiny_grid_model, tiny_train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 2  # batches per epoch in the training runs


class SimulatedKill(BaseException):
    """What a SIGKILL does to the code after it: nothing of it runs (no `except
    Exception` catches this)."""


# --- helpers -----------------------------------------------------------------------------

def _dense_model():
    """A compiled two-weight model that trains one step per `_step` call."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def _step(model):
    x = np.ones((4, 3), np.float32)
    model.fit(x, np.zeros((4, 2), np.float32), batch_size=4, epochs=1, verbose=0)


def _epoch(callback, model, epoch, score):
    _step(model)
    callback.on_epoch_end(epoch, {"loss": 1.0, "val_ap": score})


def _snapshot(folder):
    """{name: sha1} of every file in `folder`."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = hashlib.sha1(f.read()).hexdigest()
    return out


def _temporaries(folder):
    return [n for n in os.listdir(folder) if files.is_temporary(n)]


@pytest.fixture(autouse=True)
def tiny_network(monkeypatch):
    monkeypatch.setattr("model.network.create_model", tiny_grid_model)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return make_demo_root(tmp_path_factory, num_train=16, num_val=8)


def _run_config(root, folder, **changes):
    values = dict(input_size=64, grid_size=2, batch_size=4, finetune_epochs=2,
                  steps_per_epoch=STEPS, validation_steps=1, warmup_epochs=0)
    values.update(changes)
    return tiny_train_config(root, folder, **values)


@pytest.fixture(scope="module")
def base_run(small_demo, tmp_path_factory):
    """A run of two committed epochs (tiny network); tests resume copies of it."""
    folder = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("model.network.create_model", tiny_grid_model)
        training.train(_run_config(small_demo, folder))
    return folder


@pytest.fixture
def copied_run(base_run, tmp_path):
    """A copy of `base_run` (logs and checkpoints) under this test's tmp_path."""
    for part in ("logs", "ckpt"):
        shutil.copytree(base_run / part, tmp_path / part)
    return tmp_path


def _optimizer_steps(path):
    return int(keras.ops.convert_to_numpy(load_checkpoint(path).optimizer.iterations))


def _all_finite(path):
    return all(np.isfinite(w).all() for w in load_checkpoint(path, compile=False).get_weights())


# --- 1. weights gone non-finite ------------------------------------------------------------

def test_nonfinite_weights_are_never_saved_and_the_message_names_what_is_kept(tmp_path):
    model = _dense_model()
    guard = NonFiniteLossGuard()
    guard.set_model(model)
    cb = ScoreCheckpoint(str(tmp_path), "val_ap", keep_best=1, guard=guard)
    cb.set_model(model)
    _epoch(cb, model, 0, 0.0)
    _epoch(cb, model, 1, 0.0)  # a tie: not better, so not saved (keep_best=1)
    before = _snapshot(tmp_path)
    assert sorted(before) == ["last-e002.keras", "model-0.00-e001.keras", "state.json"]

    model.layers[-1].kernel.assign(np.full((3, 2), np.nan, np.float32))
    guard.on_train_batch_end(0, {"loss": 0.5})  # the last step's loss is still finite
    assert guard.triggered is None
    guard.on_epoch_end(2, {"loss": 0.5})
    assert "non-finite weights" in guard.triggered and "after epoch 3" in guard.triggered
    assert model.stop_training
    # Even a checkpoint callback whose guard did not look saves nothing.
    blind_guard = type("BlindGuard", (), {"triggered": None})()
    cb.guard = blind_guard
    cb.on_epoch_end(2, {"loss": 0.5, "val_ap": 0.0})
    assert "non-finite weights" in blind_guard.triggered
    assert _snapshot(tmp_path) == before
    # Without a guard it raises, naming what is kept.
    alone = ScoreCheckpoint(str(tmp_path), "val_ap", keep_best=1)
    alone.set_model(model)
    with pytest.raises(TrainingDiverged) as e:
        alone.on_epoch_end(2, {"loss": 0.5, "val_ap": 0.0})
    message = str(e.value)
    assert "after epoch 3" in message and "last-e002.keras (epoch 2, to resume from)" in message
    assert "the best model-0.00-e001.keras" in message and "\n" not in message
    assert _snapshot(tmp_path) == before


def test_nonfinite_optimizer_state_is_caught_too(tmp_path):
    model = _dense_model()
    _step(model)
    assert checkpoints.first_nonfinite_variable(model) is None
    slot = next(v for v in model.optimizer.variables if "momentum" in v.path)
    slot.assign(np.full(slot.shape, np.inf, np.float32))
    assert checkpoints.first_nonfinite_variable(model) == slot.path
    assert checkpoints.first_nonfinite_variable(model, optimizer=False) is None


def test_weights_blown_up_by_an_epochs_last_step_stop_training_keeping_the_good_run(
        small_demo, tmp_path, monkeypatch):
    """The --learning-rate 1e6 case: epoch 3's last step makes the weights NaN while its
    loss is finite. Nothing of epoch 3 is saved, the message is true, and a resume
    continues from epoch 2 instead of stopping again at once."""
    seen = {}

    class BlowUpLastStepOfEpoch3(training.LearningRateSchedule):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                seen["before"] = _snapshot(ckpt)

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if self._step == 3 * STEPS:
                seen["loss"] = float(logs["loss"])
                for w in self.model.trainable_weights:
                    w.assign(np.full(w.shape, np.nan, "float32"))

    ckpt = str(tmp_path / "ckpt" / "run")
    monkeypatch.setattr(training, "LearningRateSchedule", BlowUpLastStepOfEpoch3)
    config = _run_config(small_demo, tmp_path, finetune_epochs=4)
    with pytest.raises(TrainingDiverged) as e:
        training.train(config)
    message = str(e.value)
    assert np.isfinite(seen["loss"])  # the loss guard alone would have let it through
    assert "non-finite weights" in message and "after epoch 3" in message
    assert "last-e002.keras (epoch 2, to resume from)" in message and "\n" not in message
    assert _snapshot(ckpt) == seen["before"]  # not one byte of epoch 3 written
    state = read_state(ckpt)
    assert state["epoch"] == 2 and state["best"]
    assert f"the best {state['best'][0][1]}" in message
    for path in glob.glob(os.path.join(ckpt, "*.keras")):
        assert _all_finite(path), path

    monkeypatch.undo()
    monkeypatch.setattr("model.network.create_model", tiny_grid_model)
    result = training.train(config, resume=True)
    assert result.history["epoch"] == [1, 2, 3, 4]
    assert read_state(ckpt)["epoch"] == 4
    assert _optimizer_steps(os.path.join(ckpt, "last-e004.keras")) == 4 * STEPS


# --- 2. a copied run folder ----------------------------------------------------------------

def test_a_copied_run_never_deletes_the_originals_files(tmp_path):
    """state.json of older runs held absolute paths: rotating a copy's best models
    deleted the original run's."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    model = _dense_model()
    cb = ScoreCheckpoint(str(original), "val_ap", keep_best=1)
    cb.set_model(model)
    _epoch(cb, model, 0, 0.3)
    state = read_state(str(original))
    # What an older version wrote: absolute paths.
    state["best"] = [[s, str(original / n)] for s, n in state["best"]]
    write_state(str(original), state)
    shutil.copytree(original, copy)
    before = _snapshot(original)

    again = ScoreCheckpoint(str(copy), "val_ap", keep_best=1)
    assert again.best == [(0.3, "model-0.30-e001.keras")]  # mapped into the copy
    again.set_model(model)
    _epoch(again, model, 1, 0.6)  # better: the copy's epoch-1 model is rotated out
    assert _snapshot(original) == before
    assert sorted(os.listdir(copy)) == ["last-e002.keras", "model-0.60-e002.keras", "state.json"]
    assert read_state(str(copy))["best"] == [[0.6, "model-0.60-e002.keras"]]


def test_resuming_a_copied_run_folder_trains_in_the_copy(small_demo, base_run, copied_run):
    ckpt = copied_run / "ckpt" / "run"
    state = read_state(str(ckpt))
    state["best"] = [[s, str(base_run / "ckpt" / "run" / n)] for s, n in state["best"]]
    write_state(str(ckpt), state)  # as an older version left it: paths into the original
    original = _snapshot(base_run / "ckpt" / "run")
    training.train(_run_config(small_demo, copied_run, finetune_epochs=3, keep_best=1),
                   resume=True)
    assert _snapshot(base_run / "ckpt" / "run") == original
    state = read_state(str(ckpt))
    assert state["epoch"] == 3 and len(state["best"]) == 1
    name = state["best"][0][1]
    assert os.path.basename(name) == name and os.path.isfile(ckpt / name)
    assert sorted(n for n in os.listdir(ckpt) if n.endswith(".keras")) == sorted(
        ["last-e003.keras", name])


# --- 3. a kill between the saves -------------------------------------------------------------

def test_a_kill_before_the_commit_leaves_the_previous_epoch_resumable(tmp_path, monkeypatch):
    model = _dense_model()
    cb = ScoreCheckpoint(str(tmp_path), "val_ap", keep_best=2)
    cb.set_model(model)
    _epoch(cb, model, 0, 0.2)
    _epoch(cb, model, 1, 0.4)
    committed = _snapshot(tmp_path)

    def killed(*args, **kwargs):
        raise SimulatedKill()

    monkeypatch.setattr(checkpoints, "write_state", killed)
    with pytest.raises(SimulatedKill):
        _epoch(cb, model, 2, 0.9)  # the weights files of epoch 3 are in place, state is not
    monkeypatch.undo()
    orphans = {"last-e003.keras", "model-0.90-e003.keras"}
    assert set(_snapshot(tmp_path)) == set(committed) | orphans
    (tmp_path / ".last-e003.k1ll3d00.tmp.keras").write_bytes(b"half a zip")  # a killed write

    state = read_state(str(tmp_path))
    assert state["epoch"] == 2
    path = resume_file(str(tmp_path), state)
    assert path == str(tmp_path / "last-e002.keras")
    removed = clean_checkpoint_folder(str(tmp_path))
    assert sorted(removed) == [".last-e003.k1ll3d00.tmp.keras", *sorted(orphans)]
    assert _snapshot(tmp_path) == committed
    resumed = load_checkpoint(path)
    check_resumed_model(resumed, path, state)  # steps match: the file is epoch 2's
    assert int(resumed.optimizer.iterations) == 2 == state["optimizer_steps"]


def test_a_resumable_file_that_does_not_match_the_state_is_refused(tmp_path):
    model = _dense_model()
    cb = ScoreCheckpoint(str(tmp_path), "val_ap")
    cb.set_model(model)
    _epoch(cb, model, 0, 0.2)
    _epoch(cb, model, 1, 0.4)
    state = read_state(str(tmp_path))
    # The file replaced by one a step further (e.g. copied from another run).
    _step(model)
    checkpoints.save_model_atomically(model, str(tmp_path / "last-e002.keras"))
    path = resume_file(str(tmp_path), state)
    with pytest.raises(CheckpointError, match=r"last-e002.keras: optimizer at step 3, but "
                                              r"state.json committed step 2 for epoch 2"):
        check_resumed_model(load_checkpoint(path), path, state)
    with pytest.raises(CheckpointError, match="epoch 2 names last-e001.keras, a file of epoch 1"):
        resume_file(str(tmp_path), {**state, "last": "last-e001.keras"})
    os.remove(tmp_path / "last-e002.keras")
    with pytest.raises(CheckpointError, match=r"last-e002.keras: missing, but .*state.json "
                                              r"commits epoch 2 to it"):
        resume_file(str(tmp_path), state)


def test_without_a_state_only_temporaries_are_cleaned(tmp_path):
    for name in ("model-0.50.keras", "last.keras", ".state.abcd1234.tmp.json", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert clean_checkpoint_folder(str(tmp_path)) == [".state.abcd1234.tmp.json"]
    assert sorted(os.listdir(tmp_path)) == ["last.keras", "model-0.50.keras", "notes.txt"]


def test_old_runs_resume_from_last_keras(tmp_path):
    (tmp_path / "last.keras").write_bytes(b"x")
    (tmp_path / "model-0.50.keras").write_bytes(b"x")
    (tmp_path / "last-e004.keras").write_bytes(b"x")  # not named by the old state: an orphan
    state = {"epoch": 3, "stage": "finetune", "best": [[0.5, "/elsewhere/model-0.50.keras"]]}
    write_state(str(tmp_path), state)
    assert resume_file(str(tmp_path), read_state(str(tmp_path))) == str(tmp_path / "last.keras")
    assert clean_checkpoint_folder(str(tmp_path)) == ["last-e004.keras"]


def test_latest_run_is_the_newest_committed_one(tmp_path):
    for run, stamp in (("a", 100), ("b", 300), ("c", 200)):
        write_state(str(tmp_path / run), {"epoch": 1, "last": "last-e001.keras"})
        os.utime(tmp_path / run / "state.json", (stamp, stamp))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "last-e001.keras").write_bytes(b"x")  # saved, never committed
    assert training.latest_run(str(tmp_path)) == "b"
    with pytest.raises(CheckpointError, match=r"no run to resume \(no \*/state.json found\)"):
        training.latest_run(str(tmp_path / "d"))


def test_a_kill_after_the_weights_never_trains_an_epoch_twice(
        small_demo, base_run, copied_run, monkeypatch, capsys):
    """The run is killed after epoch 3's last-e003.keras is in place but before state.json
    names it (and a temporary of a killed write is left). The resume retrains epoch 3
    from epoch 2's weights: the optimizer ends at exactly 4 epochs' steps (the old code,
    resuming epoch 3 on weights already past it, ended one epoch ahead per such kill)."""
    ckpt = copied_run / "ckpt" / "run"
    config = _run_config(small_demo, copied_run, finetune_epochs=4)

    def killed(*args, **kwargs):
        raise SimulatedKill()

    monkeypatch.setattr(checkpoints, "write_state", killed)
    with pytest.raises(SimulatedKill):
        training.train(config, resume=True)
    monkeypatch.setattr(checkpoints, "write_state", write_state)
    assert os.path.isfile(ckpt / "last-e003.keras")  # the kill came after the weights
    assert read_state(str(ckpt))["epoch"] == 2
    (ckpt / ".state.k1ll3d00.tmp.json").write_text('{"epoch": 3, "la')

    capsys.readouterr()
    result = training.train(config, resume=True)
    out = capsys.readouterr().out
    assert "removed what interrupted saves left: .state.k1ll3d00.tmp.json, last-e003.keras" in out
    state = read_state(str(ckpt))
    assert state["epoch"] == 4 and state["last"] == "last-e004.keras"
    assert state["optimizer_steps"] == 4 * STEPS
    assert _optimizer_steps(str(ckpt / "last-e004.keras")) == 4 * STEPS
    assert result.history["epoch"] == [1, 2, 3, 4]
    with open(copied_run / "logs" / "fit" / "run" / "history.json") as f:
        assert json.load(f)["epoch"] == [1, 2, 3, 4]
    assert not _temporaries(ckpt)
    assert sorted(n for n in os.listdir(ckpt) if n.startswith("last")) == ["last-e004.keras"]


# --- 4. write failures -----------------------------------------------------------------------

def _full_disk_on(victim, monkeypatch):
    """Make the atomic write of the file named `victim` fail as a full disk does at fsync:
    the data went to the temporary, then ENOSPC."""
    real = files.atomic_path

    @contextlib.contextmanager
    def atomic_path(path):
        with real(path) as tmp:
            yield tmp
            if os.path.basename(path) == victim:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "atomic_path", atomic_path)
    monkeypatch.setattr(checkpoints, "atomic_path", atomic_path)


@pytest.mark.parametrize("victim", ["model-0.60-e002.keras", "last-e002.keras", "state.json"])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_files(
        tmp_path, monkeypatch, victim):
    model = _dense_model()
    cb = ScoreCheckpoint(str(tmp_path), "val_ap", keep_best=1)
    cb.set_model(model)
    _epoch(cb, model, 0, 0.5)
    before = _snapshot(tmp_path)
    _full_disk_on(victim, monkeypatch)
    with pytest.raises(CheckpointError) as e:
        _epoch(cb, model, 1, 0.6)
    message = str(e.value)
    assert message.startswith(str(tmp_path / victim) + ": cannot write")
    assert message.endswith("(No space left on device)") and "\n" not in message
    assert _snapshot(tmp_path) == before
    assert read_state(str(tmp_path))["epoch"] == 1


def test_a_full_disk_for_the_history_is_one_line(tmp_path, monkeypatch):
    _full_disk_on("history.json", monkeypatch)
    path = str(tmp_path / "history.json")
    with pytest.raises(CheckpointError, match=r"history.json: cannot write the history "
                                              r"\(No space left on device\)$"):
        training.HistoryFile(path, {}, 0.0).on_epoch_end(0, {"loss": 1.0})
    assert os.listdir(tmp_path) == []


FILE_SIZE_LIMIT_SCRIPT = r"""
import json, os, resource, signal, sys
import keras, numpy as np
from common.cli import run_main
from model.checkpoints import ScoreCheckpoint

folder = sys.argv[1]
inputs = keras.Input((64,))
model = keras.Model(inputs, keras.layers.Dense(512)(inputs))  # 133 kB of weights
model.compile("adam", "mse")
cb = ScoreCheckpoint(folder, "val_ap", keep_best=1)
cb.set_model(model)
cb.on_epoch_end(0, {"val_ap": 0.5})

def main():
    # As a full disk would: the kernel refuses to grow a file past 64 kB (EFBIG, with
    # SIGXFSZ ignored so the write returns an error instead of killing the process).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    cb.on_epoch_end(1, {"val_ap": 0.4})  # not a best model: the resumable save comes first

sys.argv[0] = "train.py"
run_main(main)
"""


def test_a_file_size_limit_while_saving_is_one_line_and_keeps_the_files(tmp_path):
    folder = tmp_path / "ckpt"
    r = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT_SCRIPT, str(folder)],
                       capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"train.py: error: {folder}/last-e002.keras: cannot write checkpoint (File too large)"
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(folder)) == ["last-e001.keras", "model-0.50-e001.keras", "state.json"]
    assert read_state(str(folder))["epoch"] == 1
    load_checkpoint(str(folder / "last-e001.keras"), compile=False)  # intact


def test_a_full_disk_during_training_stops_with_one_line(
        small_demo, copied_run, monkeypatch):
    ckpt = copied_run / "ckpt" / "run"
    before = _snapshot(ckpt)
    _full_disk_on("last-e003.keras", monkeypatch)
    config = _run_config(small_demo, copied_run, finetune_epochs=3)
    with pytest.raises(CheckpointError) as e:
        training.train(config, resume=True)
    assert str(e.value) == (f"{ckpt}/last-e003.keras: cannot write checkpoint "
                            "(No space left on device)")
    # config.json is rewritten at the start (finetune_epochs differs); every checkpoint file
    # is as it was, and a best model of epoch 3 saved before the failure is not left behind.
    after = _snapshot(ckpt)
    after.pop("config.json")
    before.pop("config.json")
    assert after == before
    assert read_state(str(ckpt))["epoch"] == 2 and os.path.isfile(ckpt / "last-e002.keras")
    assert not _temporaries(ckpt)


# --- 5. a resume with another architecture ---------------------------------------------------

def committed_run(tmp_path):
    """(config, checkpoint folder, its config.json text) of a run that committed epoch 1."""
    run = tiny_train_config("data/none", tmp_path, input_size=64, grid_size=4, head_channels=8)
    ckpt = tmp_path / "ckpt" / "run"
    save_config(run, str(ckpt / "config.json"))
    write_state(str(ckpt), {"epoch": 1, "last": "last-e001.keras"})
    return run, ckpt, (ckpt / "config.json").read_text()


@pytest.mark.parametrize("field, value", [
    ("input_size", 128), ("grid_size", 8), ("alpha", 0.5), ("head_channels", 16),
    ("neighbour_cells", True), ("head_separable", True), ("centre_radius", 2.5),
    ("grid_levels", 2), ("letterbox", False), ("landmarks", True),
])
def test_resume_with_another_architecture_names_the_field(tmp_path, field, value):
    run, ckpt, saved = committed_run(tmp_path)
    with pytest.raises(ConfigError) as e:
        training.train(run.replace(**{field: value}), resume=True)
    message = str(e.value)
    assert message.startswith(f"{ckpt}/config.json: the run was trained with "
                              f"{field}={getattr(run, field)!r}, this resume asks for "
                              f"{field}={value!r}")
    assert "\n" not in message
    assert (ckpt / "config.json").read_text() == saved  # not overwritten
    assert not (tmp_path / "logs").exists()  # stopped before any work


@pytest.mark.parametrize("field, value", [
    ("finetune_learning_rate", 3e-5), ("learning_rate", 0.01), ("weight_decay", 0.0),
])
def test_resume_refuses_a_changed_rate_naming_the_flag_and_the_stored_value(tmp_path, capsys,
                                                                            field, value):
    """`--resume --finetune-learning-rate X` recorded X but trained at the stored rate (the
    saved optimizer holds it): refused in one line naming the flag and the run's value,
    before anything is written."""
    from common.cli import as_flag_message

    run, ckpt, saved = committed_run(tmp_path)
    with pytest.raises(ConfigError) as e:
        training.train(run.replace(**{field: value}), resume=True)
    shown = as_flag_message(str(e.value))
    flag = "--" + field.replace("_", "-")
    assert shown.startswith(f"{flag} {value!r}: a resume keeps the run's "
                            f"{field}={getattr(run, field)!r} ({ckpt}/config.json)")
    assert "\n" not in shown
    assert (ckpt / "config.json").read_text() == saved
    assert not (tmp_path / "logs").exists()


def test_the_fields_a_resume_keeps_are_the_grid_specs_and_the_widths():
    """Derived from GridSpec, not listed twice: a new grid field is kept on resume too."""
    from data.grid import GridSpec

    assert training.ARCHITECTURE_FIELDS == GridSpec.config_fields() + (
        "alpha", "head_channels", "head_separable")
    assert {"input_size", "grid_levels", "letterbox", "centre_radius"} <= set(
        training.ARCHITECTURE_FIELDS)


# --- 6. folders that are files ---------------------------------------------------------------

def test_log_or_checkpoint_dir_that_is_a_file_is_a_config_error(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    for field in ("log_dir", "checkpoint_dir"):
        with pytest.raises(ConfigError, match=rf"^{field}='{a_file}': {a_file} is a file, "
                                              r"not a folder$"):
            training.train(tiny_train_config("data/none", tmp_path, **{field: str(a_file)}))
    with pytest.raises(ConfigError, match=rf"checkpoint_dir='{a_file}/deeper': {a_file} is a "
                                          r"file, not a folder \(in "):
        training.train(tiny_train_config("data/none", tmp_path, checkpoint_dir=str(a_file / "deeper")))
    with pytest.raises(ConfigError, match=rf"checkpoint_dir='{a_file}'"):
        training.train(tiny_train_config("data/none", tmp_path, checkpoint_dir=str(a_file), run_name=""),
                       resume=True)
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # nothing made before the check


def test_train_py_with_a_checkpoint_dir_that_is_a_file_prints_one_line(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    r = subprocess.run(
        [sys.executable, "train.py", "--dataset", str(tmp_path / "WIDER"), "--backbone-weights",
         "none", "--checkpoint-dir", str(a_file), "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"train.py: error: --checkpoint-dir {a_file}: {a_file} is a file, not a folder")


# --- the kill benchmark's inspection ----------------------------------------------------------

def test_bench_faults_inspection_finds_corrupt_files_and_a_resumable_file_ahead(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_faults", os.path.join(REPO, "benchmarks", "bench_faults.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    ckpt, logs = tmp_path / "ckpt", tmp_path / "logs"
    model = _dense_model()
    cb = ScoreCheckpoint(str(ckpt), "val_ap", keep_best=2)
    cb.set_model(model)
    _epoch(cb, model, 0, 0.2)
    _epoch(cb, model, 1, 0.4)  # one optimizer step an epoch
    clean = bench.inspect_run(str(ckpt), str(logs), steps_per_epoch=1)
    assert clean["corrupt"] == [] and clean["temporaries"] == []
    assert clean["committed_epoch"] == 2 and clean["optimizer_epochs"] == 2.0

    (ckpt / "model-0.90-e003.keras").write_bytes(b"PK\x03\x04 cut short")
    (ckpt / ".last-e003.abcd1234.tmp.keras").write_bytes(b"half")
    logs.mkdir()
    (logs / "history.json").write_text('{"epoch": [1, 2')
    _step(model)  # the resumable file one epoch ahead of the state: the old fault
    checkpoints.save_model_atomically(model, str(ckpt / "last-e002.keras"))
    report = bench.inspect_run(str(ckpt), str(logs), steps_per_epoch=1)
    assert len(report["corrupt"]) == 2
    assert report["corrupt"][0].startswith(f"{logs / 'history.json'}: ")
    assert report["corrupt"][1].startswith("model-0.90-e003.keras: ")
    assert report["temporaries"] == [".last-e003.abcd1234.tmp.keras"]
    assert report["optimizer_epochs"] - report["committed_epoch"] == 1.0
