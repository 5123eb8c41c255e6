"""Checkpoints: named by score and epoch, the best N kept, committed atomically, found again.

A run's checkpoint folder holds
    model-{score:.2f}-e{epoch:03d}.keras
                     the best `keep_best` networks by the monitored metric (no optimizer or
                     loss: they load anywhere with keras.models.load_model). The epoch in
                     the name means two epochs never share a file, so saving one can never
                     replace another epoch's model, whatever their rounded scores.
    last-e{epoch:03d}.keras
                     the latest committed epoch's model with its optimizer state (--resume);
                     its compile config names the project's loss, so outside
                     `load_checkpoint` load it with `import model.loss` first (the loss
                     registers itself with Keras on import), or with
                     `keras.models.load_model(path, compile=False)` for the network alone
    state.json       the commit point: {"epoch": epochs completed, "stage", "monitor",
                     "last": "last-e005.keras", "optimizer_steps": the optimizer's step
                     counter in that file, "best": [[score, "model-0.81-e004.keras"], ...]};
                     file names are relative to the folder, so a copied run folder works
                     and never touches the original's files.

Every epoch commits in this order: (1) the weights (and optimizer state) are checked finite,
else nothing is written; (2) the new best model, if it is one; (3) `last-eNNN.keras`;
(4) `state.json`, naming both; (5) only then the files state.json no longer names are
deleted. Each file is written to a temporary name and renamed into place, so a process
killed at any moment leaves a state.json that names complete files of one epoch: a kill
before (4) loses that one epoch (the resume starts from the previous `last-e*.keras`, which
survives until (5)), a kill after it loses nothing, and no epoch is ever trained twice.
The files of an uncommitted epoch and the temporaries of killed writes are removed by
`clean_checkpoint_folder` when training starts again.

Older runs still work: a state.json without "last" resumes from `last.keras`, "best"
entries with absolute paths are read by their base name in the current folder, and plain
`model-0.81.keras` names are found by `find_best_checkpoint`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import zipfile
from typing import List, Optional, Tuple

import keras
import numpy as np

from common.errors import CheckpointError, TrainingDiverged, first_line
from common.files import atomic_path, atomic_write_text, os_error_reason, remove_temporaries
from model.contract import ModelContract, add_keras_entry

# model-0.81-e007.keras, and the plain model-0.81.keras of older runs.
_SCORE_NAME = re.compile(r"^model-(-?\d+(?:\.\d+)?)(?:-e(\d+))?\.keras$")
_LAST_NAME = re.compile(r"^last-e(\d+)\.keras$")
STATE_FILE = "state.json"
LEGACY_LAST_FILE = "last.keras"  # the resumable file of runs before epoch-named ones


def best_name(score: float, epoch: int) -> str:
    """`model-0.81-e007.keras`: the file of a best model (epoch counted from 1)."""
    return f"model-{score:.2f}-e{epoch:03d}.keras"


def last_name(epoch: int) -> str:
    """`last-e007.keras`: the resumable file of epoch `epoch` (counted from 1)."""
    return f"last-e{epoch:03d}.keras"


def parse_best_name(name: str) -> Optional[Tuple[float, Optional[int]]]:
    """(score, epoch or None for the old plain names) of a best-model file name, else None."""
    match = _SCORE_NAME.match(os.path.basename(name))
    if not match:
        return None
    return float(match.group(1)), int(match.group(2)) if match.group(2) else None


def _epoch_of(name: str) -> int:
    """The epoch in a best-model name; 0 for the old plain names."""
    parsed = parse_best_name(name)
    return (parsed[1] or 0) if parsed else 0


def first_nonfinite_variable(model: keras.Model, optimizer: bool = True) -> Optional[str]:
    """The path of the first weight (or optimizer variable) holding a NaN or Inf, else None.

    One pass over the variables already in memory, on the host: milliseconds for this
    project's networks, against seconds for an epoch. Integer variables (the optimizer's
    step counter) cannot be non-finite and are skipped.
    """
    variables = list(model.weights)
    if optimizer and getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    for variable in variables:
        if not np.issubdtype(np.dtype(variable.dtype), np.floating):
            continue
        if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
            return getattr(variable, "path", None) or variable.name
    return None


def save_model_atomically(model: keras.Model, path: str, with_training_state: bool = True,
                          contract: Optional[ModelContract] = None) -> None:
    """Save a `.keras` file atomically; CheckpointError (one line) if it cannot be written.

    Without training state, the file holds the network alone (no loss, metrics or optimizer):
    it loads with a plain `keras.models.load_model(path)` in any program, no project import.
    `contract`, the way the network must be fed, goes into the same file
    (`model.contract`), so detection, evaluation and export need no preprocessing flag.
    A failed write (a full disk, a file-size limit) leaves the previous file at `path` as it
    was and no temporary behind.
    """
    if not with_training_state and model.compiled:
        # A new functional model over the same layers: shares the weights, is not compiled.
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    try:
        with atomic_path(path) as tmp:
            model.save(tmp)
            if contract is not None:
                add_keras_entry(tmp, contract.to_json())
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({os_error_reason(e)})") from None


def load_checkpoint(path: str, compile: bool = True) -> keras.Model:
    """Load a `.keras` checkpoint; CheckpointError (one line) if missing or unusable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        # Keras says "File not found" of a file that exists but is no zip archive.
        raise CheckpointError(f"{path}: not a .keras checkpoint (not a zip archive: corrupt, "
                              f"truncated or another format)")
    # Importing registers the project's custom objects with Keras' serialization.
    import model.loss  # noqa: F401
    import model.network  # noqa: F401

    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as e:  # Keras raises many types for a bad file; report them in one line
        raise CheckpointError(f"{path}: cannot load checkpoint ({first_line(e)})") from None


def read_state(checkpoint_dir: str) -> Optional[dict]:
    """The run's committed state.json, or None if there is none yet."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable training state ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise CheckpointError(f"{path}: not a training state (no integer \"epoch\")")
    return state


def write_state(checkpoint_dir: str, state: dict) -> None:
    """Write state.json atomically: the rename is the epoch's commit (module docstring)."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    try:
        atomic_write_text(path, json.dumps(state, indent=2) + "\n")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write training state ({os_error_reason(e)})") from None


def best_entries(checkpoint_dir: str, state: Optional[dict]) -> List[Tuple[float, str]]:
    """state.json's best models as (score, file name in `checkpoint_dir`), existing ones only.

    Entries are reduced to their base name: older runs stored absolute paths, which in a
    copied run folder point into the original run (deleting those would destroy it).
    """
    entries = []
    for entry in (state or {}).get("best", []):
        try:
            score, name = float(entry[0]), os.path.basename(str(entry[1]))
        except (TypeError, ValueError, IndexError):
            raise CheckpointError(
                f"{os.path.join(checkpoint_dir, STATE_FILE)}: bad \"best\" entry {entry!r}"
            ) from None
        if os.path.isfile(os.path.join(checkpoint_dir, name)):
            entries.append((score, name))
    return entries


def best_checkpoints(checkpoint_dir: str) -> List[Tuple[float, str]]:
    """The run's kept best models, best first, as (score, path)."""
    state = read_state(checkpoint_dir)
    return [(s, os.path.join(checkpoint_dir, n)) for s, n in best_entries(checkpoint_dir, state)]


def resume_file(checkpoint_dir: str, state: dict) -> str:
    """The weights file state.json commits to, checked to belong to its epoch.

    The file name carries the epoch, and a file of that name is only ever written for that
    epoch and before the state.json naming it, so name and epoch agree unless the folder was
    edited by hand; `check_resumed_model` then compares the optimizer's step counter.
    """
    state_path = os.path.join(checkpoint_dir, STATE_FILE)
    name = os.path.basename(str(state.get("last", LEGACY_LAST_FILE)))
    path = os.path.join(checkpoint_dir, name)
    match = _LAST_NAME.match(name)
    if match and int(match.group(1)) != state["epoch"]:
        raise CheckpointError(
            f"{state_path}: epoch {state['epoch']} names {name}, a file of epoch "
            f"{int(match.group(1))}; the run folder was edited: restore it or start a new run")
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path}: missing, but {state_path} commits epoch {state['epoch']} to it; "
            "restore it or start a new run")
    return path


def check_resumed_model(model: keras.Model, path: str, state: dict) -> None:
    """CheckpointError unless the loaded resumable model is the one state.json committed:
    its optimizer step counter matches, and no weight is NaN or Inf."""
    expected = state.get("optimizer_steps")
    optimizer = getattr(model, "optimizer", None)
    if expected is not None and optimizer is not None:
        steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
        if steps != int(expected):
            raise CheckpointError(
                f"{path}: optimizer at step {steps}, but state.json committed step {expected} "
                f"for epoch {state['epoch']}; the file does not belong to this state")
    bad = first_nonfinite_variable(model)
    if bad:
        raise CheckpointError(f"{path}: holds non-finite values ({bad}); it cannot be "
                              "resumed (start a new run from one of its model-*.keras files)")


def clean_checkpoint_folder(checkpoint_dir: str) -> List[str]:
    """Remove what interrupted saves left in a run folder; returns the removed names.

    Temporaries of killed writes always go. With a state.json, so do the `last-e*.keras`
    and `model-*.keras` files it does not name (an epoch that was saved but not committed,
    or files rotated out whose deletion was cut short). Without a state.json nothing but
    temporaries is touched: no file of this run has been committed yet. Nothing outside
    `checkpoint_dir` is ever removed.
    """
    removed = remove_temporaries(checkpoint_dir)
    state = read_state(checkpoint_dir)
    if state is not None:
        removed += _remove_unnamed(checkpoint_dir, state)
    return removed


def _named_files(checkpoint_dir: str, state: dict) -> set:
    """The file names `state` commits to: its resumable file and its best models."""
    names = {os.path.basename(str(state.get("last", LEGACY_LAST_FILE)))}
    return names | {name for _, name in best_entries(checkpoint_dir, state)}


def _remove_unnamed(checkpoint_dir: str, state: dict) -> List[str]:
    """Delete the resumable and best-model files in the folder that `state` does not name."""
    keep = _named_files(checkpoint_dir, state)
    removed = []
    for name in sorted(os.listdir(checkpoint_dir)):
        resumable = name == LEGACY_LAST_FILE or _LAST_NAME.match(name)
        if name in keep or not (resumable or _SCORE_NAME.match(name)):
            continue
        path = os.path.join(checkpoint_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def describe_kept(checkpoint_dir: str) -> str:
    """What a stopped run keeps, for its last message: the committed epoch and best model."""
    state = read_state(checkpoint_dir)
    if state is None:
        return f"no epoch was saved, nothing is kept in {checkpoint_dir}"
    kept = (f"{os.path.basename(str(state.get('last', LEGACY_LAST_FILE)))} (epoch "
            f"{state['epoch']}, to resume from)")
    best = best_entries(checkpoint_dir, state)
    if best:
        kept += f" and the best {best[0][1]} ({state.get('monitor', 'score')} {best[0][0]:.4f})"
    return f"the last good checkpoint is kept in {checkpoint_dir}: {kept}"


def find_best_checkpoint(root: str) -> str:
    """The best `model-*.keras` under `root` (searched recursively).

    A run folder's state.json ranks its files by their exact scores, in its monitor's
    direction (val_mse and losses: lowest first), so two epochs whose scores round alike
    in the names are told apart. Files without a readable state.json (and the plain
    `model-0.81.keras` of older runs) rank by the score in their names, highest first.
    Ties go to the later epoch, then the newest file: later epochs trained longer.
    Raises CheckpointError if there is none, naming `root` and what to do.
    """
    best, best_key = None, None
    exact_of_folder = {}
    for path in glob.glob(os.path.join(root, "**", "model-*.keras"), recursive=True):
        parsed = parse_best_name(path)
        if parsed is None:
            continue
        folder = os.path.dirname(path)
        if folder not in exact_of_folder:
            exact_of_folder[folder] = _exact_scores(folder)
        exact, sign = exact_of_folder[folder]
        score = exact.get(os.path.basename(path), parsed[0])
        key = (sign * score, _epoch_of(path), os.path.getmtime(path))
        if best_key is None or key > best_key:
            best, best_key = path, key
    if best is None:
        raise CheckpointError(
            f"{root}: no model-*.keras checkpoint found; train one with `python train.py` "
            "or name a model file"
        )
    return best


def _exact_scores(folder: str) -> Tuple[dict, int]:
    """({file name: exact score} from the folder's state.json, +1 where higher is better
    or -1 where lower is); ({}, +1) without a readable one, so the names alone rank."""
    from model.training import monitor_mode  # imports this module: only when searching

    try:
        state = read_state(folder)
        entries = best_entries(folder, state)
    except CheckpointError:
        return {}, 1  # a damaged state.json: the file names still rank the files
    if state is None:
        return {}, 1
    sign = -1 if monitor_mode(str(state.get("monitor", "val_ap"))) == "min" else 1
    return {name: score for score, name in entries}, sign


class ScoreCheckpoint(keras.callbacks.Callback):
    """Save `model-{score:.2f}-e{epoch:03d}.keras` when the monitored metric is among the
    best N, and commit every epoch for `--resume` (see the module docstring).

    Place it after the validation callback, which puts the monitored `val_*` metrics into
    `logs`. Weights or optimizer state that went NaN or Inf are never saved: with a `guard`
    (a NonFiniteLossGuard) the guard is marked and training stops; without one the
    callback raises TrainingDiverged.

    Every file it writes carries `contract` (how the network is fed); the score threshold
    in it is the epoch's threshold metric of `operating_point` (model.validation's best-F1
    cut) when the validation callback logs one, else the contract's own.
    """

    def __init__(self, checkpoint_dir: str, monitor: str = "val_ap", mode: str = "max",
                 keep_best: int = 3, stage: str = "", guard=None,
                 contract: Optional[ModelContract] = None,
                 operating_point: Optional[Tuple[str, str]] = None):
        super().__init__()
        # (threshold metric, its F1 metric) of the validation callback, whose names it
        # declares (model.validation.OPERATING_POINT); None keeps the contract's threshold.
        self.operating_point = operating_point
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: must be 'max' or 'min'")
        self.checkpoint_dir = checkpoint_dir
        self.monitor = monitor
        self.mode = mode
        self.keep_best = max(1, keep_best)
        self.stage = stage
        self.guard = guard
        self.contract = contract
        self._epoch_contract = contract
        state = read_state(checkpoint_dir)
        self.best = self._ranked(best_entries(checkpoint_dir, state))  # (score, file name)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _ranked(self, entries):
        """Best first; on a tie the later epoch first, as `find_best_checkpoint` picks."""
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(entries, key=lambda b: (sign * b[0], -_epoch_of(b[1])))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.guard is not None and self.guard.triggered:
            return
        bad = first_nonfinite_variable(self.model)
        if bad:
            reason = f"non-finite weights ({bad}) after epoch {epoch + 1}"
            if self.guard is None:
                raise TrainingDiverged(f"{reason}; {describe_kept(self.checkpoint_dir)}")
            self.guard.triggered = reason
            self.model.stop_training = True
            return
        score = logs.get(self.monitor)
        if score is None:
            raise CheckpointError(
                f"monitor={self.monitor!r} is not among the epoch's metrics "
                f"({', '.join(sorted(logs))})"
            )
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        score = float(score)
        self._epoch_contract = self.contract
        threshold_name, f1_name = self.operating_point or (None, None)
        threshold = logs.get(threshold_name) if threshold_name else None
        # A model that matched no face yet (F1 0) has no operating point to keep.
        if self.contract is not None and threshold is not None and math.isfinite(threshold) \
                and logs.get(f1_name, 0.0) > 0:
            self._epoch_contract = self.contract.replace(score_threshold=float(threshold))
        best, written = self.best[: self.keep_best], None
        if math.isfinite(score):
            best, written = self._save_if_best(score, epoch + 1)
        last = last_name(epoch + 1)
        state = {
            "epoch": epoch + 1,
            "stage": self.stage,
            "monitor": self.monitor,
            "last": last,
            "optimizer_steps": self._optimizer_steps(),
            "best": [list(b) for b in best],
        }
        try:
            save_model_atomically(self.model, os.path.join(self.checkpoint_dir, last),
                                  contract=self._epoch_contract)
            write_state(self.checkpoint_dir, state)  # the commit
        except CheckpointError:
            # A failed write (full disk): the epoch is not committed, so the files just
            # saved for it must not stay behind looking like kept ones.
            self._remove_uncommitted([written, last])
            raise
        self.best = best
        _remove_unnamed(self.checkpoint_dir, state)

    def _remove_uncommitted(self, names) -> None:
        """Delete these files of this folder unless the committed state.json names them
        (a fresh run retraining an old run's epoch writes names that state may hold)."""
        committed = read_state(self.checkpoint_dir)
        keep = _named_files(self.checkpoint_dir, committed) if committed else set()
        for name in names:
            path = os.path.join(self.checkpoint_dir, name) if name else None
            if path and name not in keep and os.path.isfile(path):
                os.remove(path)

    def _optimizer_steps(self) -> Optional[int]:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def _save_if_best(self, score: float, epoch: int):
        """Write the best-model file if `score` ranks; return the best list to commit (the
        files it drops are deleted after the commit, not here) and the file written."""
        # A resume with a smaller --keep-best drops the surplus at this commit.
        kept = self.best[: self.keep_best]
        if len(kept) >= self.keep_best and not self._better(score, kept[-1][0]):
            return kept, None
        name = best_name(score, epoch)
        save_model_atomically(self.model, os.path.join(self.checkpoint_dir, name),
                              with_training_state=False, contract=self._epoch_contract)
        # A retrained epoch (a fresh run in an old run's folder) replaces its own entry.
        ranked = self._ranked([b for b in kept if b[1] != name] + [(score, name)])
        return ranked[: self.keep_best], name
