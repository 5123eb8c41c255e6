"""Score-named checkpoints (model/checkpoints.py): best N kept, atomic, found again."""

import os

import keras
import numpy as np
import pytest

from errors import CheckpointError
from model.checkpoints import (
    ScoreCheckpoint,
    find_best_checkpoint,
    load_checkpoint,
    read_state,
)


def _tiny_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def _epochs(callback, scores):
    for epoch, score in enumerate(scores):
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_ap": score})


def test_keeps_best_n_named_by_score_and_state(tmp_path):
    cb = ScoreCheckpoint(str(tmp_path), "val_ap", "max", keep_best=2)
    cb.set_model(_tiny_model())
    _epochs(cb, [0.10, 0.50, 0.30, 0.70, 0.20])
    names = sorted(f for f in os.listdir(tmp_path) if f.startswith("model-"))
    assert names == ["model-0.50.keras", "model-0.70.keras"]
    state = read_state(str(tmp_path))
    assert state["epoch"] == 5 and state["best"][0][0] == 0.70
    assert os.path.isfile(tmp_path / "last.keras")
    assert find_best_checkpoint(str(tmp_path.parent)) == str(tmp_path / "model-0.70.keras")
    # no temporary files left behind
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_min_mode_and_state_survives_a_restart(tmp_path):
    cb = ScoreCheckpoint(str(tmp_path), "val_mse", "min", keep_best=1)
    cb.set_model(_tiny_model())
    for epoch, score in enumerate([0.5, 0.2]):
        cb.on_epoch_end(epoch, {"val_mse": score})
    again = ScoreCheckpoint(str(tmp_path), "val_mse", "min", keep_best=1)
    again.set_model(_tiny_model())
    again.on_epoch_end(2, {"val_mse": 0.3})  # worse than the kept 0.2: not saved
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model-")) == ["model-0.20.keras"]


def test_missing_monitor_is_a_clear_error(tmp_path):
    cb = ScoreCheckpoint(str(tmp_path), "val_ap")
    cb.set_model(_tiny_model())
    with pytest.raises(CheckpointError, match="monitor='val_ap'.*loss"):
        cb.on_epoch_end(0, {"loss": 1.0})


def test_guard_prevents_saving_nonfinite_weights(tmp_path):
    class Fired:
        triggered = "non-finite loss at epoch 2, batch 3"

    cb = ScoreCheckpoint(str(tmp_path), "val_ap", guard=Fired())
    cb.set_model(_tiny_model())
    cb.on_epoch_end(0, {"val_ap": 0.9})
    assert os.listdir(tmp_path) == []


def test_checkpoint_reloads_and_bad_files_give_one_line(tmp_path):
    cb = ScoreCheckpoint(str(tmp_path), "val_ap")
    model = _tiny_model()
    cb.set_model(model)
    cb.on_epoch_end(0, {"val_ap": 0.42})
    loaded = load_checkpoint(str(tmp_path / "model-0.42.keras"))
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(CheckpointError, match="nope.keras: checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.keras"))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="broken.keras: cannot load checkpoint") as e:
        load_checkpoint(str(broken))
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="no model-\\*.keras checkpoint found"):
        find_best_checkpoint(str(tmp_path / "empty"))
