"""Score-named checkpoints (model/checkpoints.py): best N kept, atomic, found again.

The fault cases (non-finite weights, kills between the saves, full disks, copied run
folders) are in test_training_faults.py."""

import os

import keras
import numpy as np
import pytest

from common.errors import CheckpointError
from model.checkpoints import (
    ScoreCheckpoint,
    best_name,
    find_best_checkpoint,
    last_name,
    load_checkpoint,
    parse_best_name,
    read_state,
)


def _tiny_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def _epochs(callback, scores):
    for epoch, score in enumerate(scores):
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_ap": score})


def test_keeps_best_n_named_by_score_and_state(tmp_path):
    root, tmp_path = tmp_path, tmp_path / "run"  # a run folder, searched from its parent
    cb = ScoreCheckpoint(str(tmp_path), "val_ap", "max", keep_best=2)
    cb.set_model(_tiny_model())
    _epochs(cb, [0.10, 0.50, 0.30, 0.70, 0.20])
    names = sorted(f for f in os.listdir(tmp_path) if f.startswith("model-"))
    assert names == ["model-0.50-e002.keras", "model-0.70-e004.keras"]
    state = read_state(str(tmp_path))
    assert state["epoch"] == 5 and state["last"] == "last-e005.keras"
    # Names relative to the run folder, best first.
    assert state["best"] == [[0.70, "model-0.70-e004.keras"], [0.50, "model-0.50-e002.keras"]]
    # Only the committed epoch's resumable file is kept.
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("last")) == ["last-e005.keras"]
    assert find_best_checkpoint(str(root)) == str(tmp_path / "model-0.70-e004.keras")
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
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model-")) == [
        "model-0.20-e002.keras"]
    assert read_state(str(tmp_path))["epoch"] == 3


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
    loaded = load_checkpoint(str(tmp_path / "model-0.42-e001.keras"))
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(CheckpointError, match="nope.keras: checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.keras"))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    # Keras calls a file that is no zip "File not found": the message says what it is.
    for data in (b"not a zip", open(tmp_path / "model-0.42-e001.keras", "rb").read()[:300]):
        broken.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(str(broken))
        assert str(e.value) == (f"{broken}: not a .keras checkpoint (not a zip archive: corrupt, "
                                f"truncated or another format)")
        assert "File not found" not in str(e.value)
    with pytest.raises(CheckpointError, match="no model-\\*.keras checkpoint found"):
        find_best_checkpoint(str(tmp_path / "empty"))


def test_equal_rounded_scores_get_distinct_names_and_ties_go_to_the_later_epoch(tmp_path):
    """Two epochs scoring 0.81 once mapped to one file, the second replacing the first."""
    cb = ScoreCheckpoint(str(tmp_path), "val_ap", "max", keep_best=3)
    cb.set_model(_tiny_model())
    _epochs(cb, [0.812, 0.811, 0.8])
    names = sorted(f for f in os.listdir(tmp_path) if f.startswith("model-"))
    assert names == ["model-0.80-e003.keras", "model-0.81-e001.keras", "model-0.81-e002.keras"]
    assert [b[1] for b in read_state(str(tmp_path))["best"]] == [
        "model-0.81-e001.keras", "model-0.81-e002.keras", "model-0.80-e003.keras"]
    assert best_name(0.5, 12) == "model-0.50-e012.keras" and last_name(7) == "last-e007.keras"
    assert parse_best_name("model-0.81-e007.keras") == (0.81, 7)
    assert parse_best_name("model-0.81.keras") == (0.81, None)
    assert parse_best_name("last-e007.keras") is None


def test_find_best_reads_old_plain_names_too(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    for name in ("model-0.30.keras", "model-0.64.keras", "model-0.64-e003.keras",
                 "model-0.64-e011.keras", "model-0.50-e020.keras", "last.keras"):
        (run / name).write_bytes(b"x")
    # Equal scores: the later epoch; plain (epoch-less) names count as the earliest.
    assert find_best_checkpoint(str(tmp_path)) == str(run / "model-0.64-e011.keras")
    (run / "model-0.90.keras").write_bytes(b"x")
    assert find_best_checkpoint(str(tmp_path)) == str(run / "model-0.90.keras")


def test_find_best_ranks_by_the_exact_scores_of_state_json(tmp_path):
    """0.812 (epoch 1) and 0.811 (epoch 2) are both named 0.81: the names alone would pick
    the later, worse one; state.json's exact scores pick the better."""
    run = tmp_path / "run"
    cb = ScoreCheckpoint(str(run), "val_ap", "max", keep_best=3)
    cb.set_model(_tiny_model())
    _epochs(cb, [0.812, 0.811, 0.8])
    assert find_best_checkpoint(str(tmp_path)) == str(run / "model-0.81-e001.keras")
    # A damaged state.json: the names still rank, ties to the later epoch.
    (run / "state.json").write_text("{not json")
    assert find_best_checkpoint(str(tmp_path)) == str(run / "model-0.81-e002.keras")


def test_find_best_takes_the_lowest_score_of_a_min_monitor(tmp_path):
    """A run monitoring val_mse keeps its lowest errors: the best is the lowest, not the
    highest name (which the search took before it read the monitor)."""
    cb = ScoreCheckpoint(str(tmp_path), "val_mse", "min", keep_best=2)
    cb.set_model(_tiny_model())
    for epoch, score in enumerate([0.5, 0.2, 0.3]):
        cb.on_epoch_end(epoch, {"val_mse": score})
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model-")) == [
        "model-0.20-e002.keras", "model-0.30-e003.keras"]
    assert find_best_checkpoint(str(tmp_path)) == str(tmp_path / "model-0.20-e002.keras")


def test_last_checkpoint_loads_in_plain_keras_as_documented(tmp_path):
    """`last-e*.keras` holds the optimizer and the project's loss: as the module doc says,
    a plain program loads it with `import model.loss` first, or the network alone with
    compile=False; without either Keras cannot find the loss class."""
    import subprocess
    import sys

    from config import Config
    from model.checkpoints import save_model_atomically
    from model.training import _compile

    model = _tiny_model()
    _compile(model, Config(), 1e-3)
    path = str(tmp_path / "last-e001.keras")
    save_model_atomically(model, path, with_training_state=True)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = ("import sys, keras\n"
              "if sys.argv[2] == 'import': import model.loss\n"
              "m = keras.models.load_model(sys.argv[1], compile=sys.argv[2] != 'plain-nocompile')\n"
              "print('loaded', m.compiled)\n")
    # The three programs at once: each spends its seconds importing TensorFlow.
    procs = {mode: subprocess.Popen([sys.executable, "-c", script, path, mode], cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode in ("import", "plain-nocompile", "plain")}
    results = {}
    try:
        for mode, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            results[mode] = (proc.returncode, out.strip(), err.strip()[-300:])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert results["import"][:2] == (0, "loaded True"), results["import"]
    assert results["plain-nocompile"][:2] == (0, "loaded False"), results["plain-nocompile"]
    assert results["plain"][0] != 0 and "GridLoss" in results["plain"][2], results["plain"]
    assert load_checkpoint(path).compiled  # the project's own loader imports the loss
