"""Checkpoints: named by score, the best N kept, written atomically, found again by detect.py.

A run's checkpoint folder holds
    model-{score:.2f}.keras   the best `keep_best` networks by the monitored metric (no
                              optimizer or loss: they load anywhere with keras.models.load_model)
    last.keras                the latest epoch's model with its optimizer state (for --resume)
    state.json                {"epoch": epochs completed, "stage": ..., "best": [...]}
Every file is written to a temporary name and moved into place, so an interrupted save never
leaves a broken file where a good one was.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Optional

import keras

from errors import CheckpointError
from files import atomic_path, atomic_write_text

_SCORE_NAME = re.compile(r"^model-(-?\d+(?:\.\d+)?)\.keras$")
STATE_FILE = "state.json"
LAST_FILE = "last.keras"


def save_model_atomically(model: keras.Model, path: str, with_training_state: bool = True) -> None:
    """Save a `.keras` file atomically.

    Without training state, the file holds the network alone (no loss, metrics or optimizer):
    it loads with a plain `keras.models.load_model(path)` in any program, no project import.
    """
    if not with_training_state and model.compiled:
        # A new functional model over the same layers: shares the weights, is not compiled.
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_checkpoint(path: str, compile: bool = True) -> keras.Model:
    """Load a `.keras` checkpoint; CheckpointError (one line) if missing or unusable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    # Importing registers the project's custom objects with Keras' serialization.
    import model.loss  # noqa: F401
    import model.network  # noqa: F401

    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as e:  # Keras raises many types for a bad file; report them in one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot load checkpoint ({reason[:200]})") from None


def read_state(checkpoint_dir: str) -> Optional[dict]:
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable training state ({e})") from None


def write_state(checkpoint_dir: str, state: dict) -> None:
    atomic_write_text(os.path.join(checkpoint_dir, STATE_FILE), json.dumps(state, indent=2) + "\n")


def find_best_checkpoint(root: str) -> str:
    """The highest-scoring `model-*.keras` under `root` (searched recursively).

    Raises CheckpointError if there is none, naming `root` and what to do.
    """
    best, best_score = None, -math.inf
    for path in glob.glob(os.path.join(root, "**", "model-*.keras"), recursive=True):
        match = _SCORE_NAME.match(os.path.basename(path))
        if not match:
            continue
        score = float(match.group(1))
        # Ties go to the newest file: later epochs were trained longer.
        if score > best_score or (score == best_score and os.path.getmtime(path) > os.path.getmtime(best)):
            best, best_score = path, score
    if best is None:
        raise CheckpointError(
            f"{root}: no model-*.keras checkpoint found; train one with `python train.py` "
            "or pass --weights FILE"
        )
    return best


class ScoreCheckpoint(keras.callbacks.Callback):
    """Save `model-{score:.2f}.keras` when the monitored metric is among the best N.

    Also saves `last.keras` (with optimizer state) and `state.json` every epoch, so
    `train.py --resume` continues from the last completed epoch. Place it after the
    validation callback, which puts the monitored `val_*` metrics into `logs`.
    """

    def __init__(self, checkpoint_dir: str, monitor: str = "val_ap", mode: str = "max",
                 keep_best: int = 3, stage: str = "", guard=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: must be 'max' or 'min'")
        self.checkpoint_dir = checkpoint_dir
        self.monitor = monitor
        self.mode = mode
        self.keep_best = max(1, keep_best)
        self.stage = stage
        self.guard = guard  # a NonFiniteLossGuard: never save weights that went NaN
        state = read_state(checkpoint_dir) or {}
        self.best = [tuple(b) for b in state.get("best", [])]  # (score, path)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.guard is not None and self.guard.triggered:
            return
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        score = logs.get(self.monitor)
        if score is None:
            raise CheckpointError(
                f"monitor={self.monitor!r} is not among the epoch's metrics "
                f"({', '.join(sorted(logs))})"
            )
        score = float(score)
        if math.isfinite(score):
            self._maybe_save_best(score)
        save_model_atomically(self.model, os.path.join(self.checkpoint_dir, LAST_FILE))
        write_state(self.checkpoint_dir, {
            "epoch": epoch + 1,
            "stage": self.stage,
            "monitor": self.monitor,
            "best": [list(b) for b in self.best],
        })

    def _maybe_save_best(self, score: float) -> None:
        path = os.path.join(self.checkpoint_dir, f"model-{score:.2f}.keras")
        ranked = sorted(self.best, key=lambda b: b[0], reverse=self.mode == "max")
        if len(ranked) >= self.keep_best and not self._better(score, ranked[-1][0]):
            return
        same_name = [b for b in self.best if b[1] == path]
        if same_name and self._better(same_name[0][0], score):
            return  # a better model already carries this rounded name
        save_model_atomically(self.model, path, with_training_state=False)
        self.best = [b for b in self.best if b[1] != path] + [(score, path)]
        self.best.sort(key=lambda b: b[0], reverse=self.mode == "max")
        for _, old in self.best[self.keep_best:]:
            if os.path.exists(old):
                os.remove(old)
        self.best = self.best[: self.keep_best]
