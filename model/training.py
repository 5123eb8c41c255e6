"""Training: two stages (head on a frozen backbone, then fine-tuning), with validation,
score-named checkpoints, TensorBoard, warm-up, early stopping, LR reduction and resume.

`train(config)` is what `train.py` calls; it returns a `TrainResult` and raises project
errors (one line each) for bad data, bad checkpoints, failed writes or a diverged loss.

Nothing is lost to faults (the checkpoint folder's commit scheme is in model/checkpoints.py):
- a NaN or Inf loss, or weights that went non-finite by an epoch's end, stop training with
  TrainingDiverged naming what is kept; a non-finite model is never saved;
- a process killed at any moment resumes (`--resume`) from the last committed epoch: at
  most the epoch in progress is lost and none is trained twice; what the killed saves left
  behind is removed when training starts;
- a failed write (a full disk) is one CheckpointError naming the file, the previous files
  intact;
- a resume with another architecture than the run's, or a log/checkpoint folder that is a
  file, is a ConfigError before any work.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Tuple

import keras
import numpy as np

from config import RUN_CONFIG_FILE, Config, check_lr_schedule, load_config, save_config
from data.grid import LANDMARK_OUTPUT_CHANNELS, NUM_CHANNELS, GridSpec
from common.errors import CheckpointError, ConfigError, TrainingDiverged
from common.files import atomic_write_text, os_error_reason
from model.checkpoints import (
    STATE_FILE,
    ScoreCheckpoint,
    best_checkpoints,
    check_resumed_model,
    clean_checkpoint_folder,
    describe_kept,
    load_checkpoint,
    read_state,
    resume_file,
)
from model.contract import ModelContract
from model.ema import RestoreTrainedWeights, WeightEMA
from model.distributed import (
    AgreeOnLogs,
    fit_multiworker,
    multiworker_strategy,
    scratch_folder,
    training_cluster,
    wants_multiworker,
)

def monitor_mode(monitor: str) -> str:
    """'max' for a metric the validation callback declares better higher, else 'min'
    (losses and val_mse)."""
    from model.validation import METRICS

    return "max" if METRICS.get(monitor) == "max" else "min"


@dataclass
class RunPaths:
    name: str
    log_dir: str  # TensorBoard: <log_dir>/train, /validation, /images
    checkpoint_dir: str

    @classmethod
    def for_config(cls, config: Config, name: str) -> "RunPaths":
        return cls(name, os.path.join(config.log_dir, "fit", name),
                   os.path.join(config.checkpoint_dir, name))


@dataclass
class TrainResult:
    paths: RunPaths
    history: dict = field(default_factory=dict)  # metric -> list over epochs
    epochs_done: int = 0
    best_checkpoint: Optional[str] = None
    best_score: Optional[float] = None
    minutes: float = 0.0


# The fields that fix the network's shapes and what its outputs mean: its grid (the
# GridSpec its contract carries) and the backbone's and head's widths. A resume must use
# the run's values, or loading its weights fails on a shape (or the targets change).
ARCHITECTURE_FIELDS = GridSpec.config_fields() + ("alpha", "head_channels", "head_separable")


# The fields a resume cannot change: the saved optimizer (AdamW) holds the run's rates and
# weight decay, and the stage compiled in it keeps training at them, so a changed value
# would be recorded in config.json but not used. Applying one instead would also undo
# what ReduceLROnPlateau lowered; a resume refuses a change (issue 22).
RESUME_FIXED_FIELDS = ("learning_rate", "finetune_learning_rate", "weight_decay")


def latest_run(checkpoint_dir: str) -> str:
    """Name of the most recently committed run under `checkpoint_dir` that can be resumed
    (one with a state.json: the file every completed epoch commits last)."""
    runs = [
        d for d in (os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else [])
        if os.path.isfile(os.path.join(checkpoint_dir, d, STATE_FILE))
    ]
    if not runs:
        raise CheckpointError(f"{checkpoint_dir}: no run to resume (no */{STATE_FILE} found)")
    return max(runs, key=lambda d: os.path.getmtime(os.path.join(checkpoint_dir, d, STATE_FILE)))


def check_folders(*folders: Tuple[str, str]) -> None:
    """ConfigError unless each (field, path) is a folder or can be made one: the path, or
    the nearest of its parents that exists, must not be a file."""
    for field_name, folder in folders:
        path = os.path.abspath(folder)
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            shown = "" if path == os.path.abspath(folder) else f" (in {folder})"
            raise ConfigError(f"{field_name}={folder!r}: {path} is a file, not a folder{shown}")


def check_resume_architecture(config: Config, checkpoint_dir: str) -> None:
    """ConfigError naming the first architecture field in which `config` differs from the
    run's saved config.json (a resume would fail later on a tensor shape), or the first
    RESUME_FIXED_FIELDS one (the saved optimizer would silently keep the run's value)."""
    path = os.path.join(checkpoint_dir, RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        return  # nothing to compare with; loading the weights still checks the shapes
    saved = load_config(path)  # ConfigError naming the file if it is unreadable
    for name in RESUME_FIXED_FIELDS:
        ours, theirs = getattr(config, name), getattr(saved, name)
        if ours != theirs:
            # `name=value: ` first: the CLI shows it as the flag (`--finetune-learning-rate X: `).
            raise ConfigError(
                f"{name}={ours!r}: a resume keeps the run's {name}={theirs!r} ({path}), whose "
                f"optimizer state holds it; resume without the flag, or start a new run "
                f"from a checkpoint (--weights) with the new value")
    for name in ARCHITECTURE_FIELDS:
        ours, theirs = getattr(config, name), getattr(saved, name)
        if ours != theirs:
            raise ConfigError(
                f"{path}: the run was trained with {name}={theirs!r}, this resume asks for "
                f"{name}={ours!r}; resume with {name}={theirs!r} or start a new run")


def make_strategy(config: Config):
    """The distribution strategy: MultiWorkerMirroredStrategy when `config.distribute`
    asks for it (model/distributed.py), else MirroredStrategy over several GPUs, else
    the default. Call it before any other TensorFlow operation of the process."""
    import tensorflow as tf

    if wants_multiworker(config):
        return multiworker_strategy()  # before list_logical_devices starts TensorFlow
    gpus = tf.config.list_logical_devices("GPU")
    if config.distribute == "none" or (config.distribute == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


class LearningRateSchedule(keras.callbacks.Callback):
    """Per-batch learning rate: linear warm-up, then constant or cosine decay.

    Warm-up raises the rate from 10% to `target` over the first `warmup_steps` batches.
    After it, `schedule="constant"` keeps `target` (ReduceLROnPlateau may lower it), and
    `schedule="cosine"` decays it along a half cosine to `target * COSINE_FLOOR` at
    `total_steps`, the end of the stage: a fixed budget ends on small, settling steps.

    Args:
        target: the stage's learning rate.
        warmup_steps: batches of warm-up (0: none).
        schedule: "constant" or "cosine".
        total_steps: batches in the stage (cosine only).
        start_step: batches of the stage already done (a resumed run skips the warm-up
            and continues the cosine where it was).
    """

    COSINE_FLOOR = 0.01

    def __init__(self, target: float, warmup_steps: int, schedule: str = "constant",
                 total_steps: int = 0, start_step: int = 0):
        super().__init__()
        check_lr_schedule(schedule)
        self.target = float(target)
        self.warmup_steps = max(0, int(warmup_steps))
        self.schedule = schedule
        self.total_steps = max(1, int(total_steps))
        self._step = int(start_step)

    def rate(self, step: int) -> float:
        """The learning rate of batch `step` of the stage (0-based)."""
        if step < self.warmup_steps:
            return self.target * (0.1 + 0.9 * step / self.warmup_steps)
        if self.schedule == "constant":
            return self.target
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.target * self.COSINE_FLOOR
        return floor + (self.target - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def on_train_batch_begin(self, batch, logs=None):
        # Constant after warm-up: leave the rate alone, ReduceLROnPlateau owns it then.
        if self.schedule == "cosine" or self._step <= self.warmup_steps:
            self.model.optimizer.learning_rate = self.rate(self._step)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1


class HistoryFile(keras.callbacks.Callback):
    """Write the epoch metrics to `history.json` atomically after every epoch."""

    def __init__(self, path: str, history: dict, start_time: float):
        super().__init__()
        self.path = path
        self.history = history
        self.start_time = start_time

    def on_epoch_end(self, epoch, logs=None):
        record = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)}
        record.update(epoch=epoch + 1, minutes=(time.time() - self.start_time) / 60)
        for k, v in record.items():
            self.history.setdefault(k, []).append(v)
        try:
            atomic_write_text(self.path, json.dumps(self.history, indent=1) + "\n")
        except OSError as e:
            raise CheckpointError(
                f"{self.path}: cannot write the history ({os_error_reason(e)})") from None


def _compile(model: keras.Model, config: Config, learning_rate: float) -> None:
    from model.loss import make_loss, make_loss_metrics

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=learning_rate,
                                         weight_decay=config.weight_decay, clipnorm=10.0),
        loss=make_loss(config),
        metrics=make_loss_metrics(config),
    )
    # Built now, not lazily: Keras would otherwise make the optimizer's variables inside the
    # first traced training step, and TensorFlow then traces that step twice (about 20 s
    # for MobileNetV2 on a 2-core CPU). A strategy's compile has built it already.
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _datasets(config: Config, global_batch: int, cluster=None):
    from data.data_generator import FaceGridDataset
    from data.datasets import training_records, validation_records

    batch_config = config.replace(batch_size=global_batch)
    train_records = training_records(config)
    val_records = validation_records(config)
    # With steps_per_epoch set, every epoch gets that many batches of a fresh shuffle.
    # Several workers: each reads its slice of every global batch.
    shard = dict(shard_index=cluster.index, shard_count=cluster.workers) if cluster else {}
    train = FaceGridDataset(train_records, batch_config, training=True,
                            endless=config.steps_per_epoch > 0, **shard)
    val = FaceGridDataset(val_records, batch_config, training=False, workers=1,
                          use_multiprocessing=False)
    return train, val


def _resumed_history(paths: RunPaths, start_epoch: int) -> dict:
    """The chief's history.json up to the committed epoch ({} if it has none): rows past
    it belong to an epoch that is trained again now."""
    history_path = os.path.join(paths.log_dir, "history.json")
    if not os.path.isfile(history_path):
        return {}
    with open(history_path, encoding="utf-8") as f:
        return {k: v[:start_epoch] for k, v in json.load(f).items()}


@dataclass(frozen=True)
class Stage:
    """One stage of training: `epochs` epochs at peak rate `learning_rate`, the backbone
    frozen or not. A run is the stages of `training_stages` one after the other."""
    name: str
    epochs: int
    learning_rate: float
    backbone_trainable: bool


def training_stages(config: Config) -> list:
    """The stages `config` asks for, in order: the head on a frozen backbone, then the
    whole network (either may have 0 epochs)."""
    return [
        Stage("head", config.head_epochs, config.learning_rate, False),
        Stage("finetune", config.finetune_epochs, config.finetune_learning_rate, True),
    ]


@dataclass
class _Run:
    """What every stage of one `train` call shares."""
    config: Config
    paths: RunPaths  # the run's folders (the chief's, with several workers)
    writes: RunPaths  # where this process writes: `paths`, or a worker's scratch folder
    strategy: object  # tf.distribute strategy
    cluster: object  # the multi-worker cluster, or None
    train_data: object  # FaceGridDataset
    val_data: object
    history: dict
    start_time: float


def train(config: Config, resume: bool = False, weights: Optional[str] = None) -> TrainResult:
    """Train as `config` says; see the module docstring.

    Args:
        config: the resolved configuration (written beside the logs and checkpoints).
        resume: continue the run named by `config.run_name` (or the latest run) from its
            last completed epoch, with its optimizer state.
        weights: start from this checkpoint's weights (fine-tuning), fresh optimizer.
    """
    if resume and weights:
        raise ConfigError(f"resume=True: cannot also start from weights={weights!r} (a resume "
                          "continues a run; weights start a new one from a checkpoint)")
    config, paths, state, resume_path = _open_run(config, resume)
    cluster = training_cluster(config)
    scratch, writes = _write_folders(paths, cluster)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config)
    train_data, val_data = _datasets(config, config.batch_size * strategy.num_replicas_in_sync,
                                     cluster)
    start_epoch = int(state["epoch"]) if state else 0
    train_data.set_epoch(start_epoch)  # the resumed epoch's order and augmentation
    for d in (writes.log_dir, writes.checkpoint_dir):
        _save_config(config, os.path.join(d, RUN_CONFIG_FILE))  # makes the folder
    history = _resumed_history(paths, start_epoch) if resume else {}
    start_time = time.time() - 60 * (history.get("minutes") or [0.0])[-1]
    run = _Run(config, paths, writes, strategy, cluster, train_data, val_data, history,
               start_time)

    with strategy.scope():
        if resume:
            model = load_checkpoint(resume_path)
            check_resumed_model(model, resume_path, state)
        else:
            model = initial_model(config, weights)
    compiled_stage = state.get("stage") if resume else None
    stage_end = 0
    for stage in training_stages(config):
        stage_start, stage_end = stage_end, stage_end + stage.epochs
        begin = max(start_epoch, stage_start)  # later than stage_start when resuming
        if stage.epochs <= 0 or begin >= stage_end:
            continue
        if compiled_stage != stage.name:
            _prepare_stage(run, model, stage)
            compiled_stage = stage.name
        if _fit_stage(run, model, stage, stage_start, begin):
            break  # stopped early
    if scratch is not None:
        scratch.cleanup()
    return _result(run)


def _write_folders(paths: RunPaths, cluster):
    """(the scratch folder or None, the RunPaths this process writes). Several workers: the
    chief writes into `paths`; every other one reads the chief's files but writes into a
    temporary folder of its own (model/distributed.py). The chief first removes what
    interrupted saves left in the checkpoint folder."""
    scratch = scratch_folder(cluster)
    if scratch is not None:
        return scratch, RunPaths(paths.name, os.path.join(scratch.name, "logs"),
                                 os.path.join(scratch.name, "checkpoints"))
    removed = clean_checkpoint_folder(paths.checkpoint_dir)
    if removed:
        print(f"{paths.checkpoint_dir}: removed what interrupted saves left: {', '.join(removed)}")
    return None, paths


def _prepare_stage(run: _Run, model: keras.Model, stage: Stage) -> None:
    """Freeze or unfreeze the backbone for `stage` and compile at its rate."""
    from model.network import set_backbone_trainable

    with run.strategy.scope():
        # BatchNorm statistics of ImageNet weights stay frozen when fine-tuning with small
        # batches; a backbone trained from scratch needs them to learn.
        set_backbone_trainable(model, stage.backbone_trainable,
                               train_batchnorm=run.config.backbone_weights == "none")
        _compile(model, run.config, stage.learning_rate)


def _fit_stage(run: _Run, model: keras.Model, stage: Stage, stage_start: int,
               begin: int) -> bool:
    """Train `stage` from epoch `begin` (its first is `stage_start`) to its end; True if
    early stopping ended it. Raises TrainingDiverged if the loss or weights went non-finite."""
    config = run.config
    steps = config.steps_per_epoch or len(run.train_data)
    schedule = LearningRateSchedule(
        stage.learning_rate, config.warmup_epochs * steps, config.lr_schedule,
        total_steps=stage.epochs * steps, start_step=(begin - stage_start) * steps)
    callbacks, guard, early = epoch_end_callbacks(
        config, stage.name, schedule, run.val_data, run.writes, run.history, run.start_time,
        run.strategy if run.cluster is not None else None)
    fit_args = dict(
        initial_epoch=begin,
        epochs=stage_start + stage.epochs,
        steps_per_epoch=config.steps_per_epoch or None,
        callbacks=callbacks,
        verbose=(1 if os.environ.get("CI") is None else 2) if run.writes is run.paths else 0,
    )
    if run.cluster is None:
        # shuffle=False: the dataset shuffles itself, seeded per epoch.
        model.fit(run.train_data, shuffle=False, **fit_args)
    else:  # model.fit fails under MultiWorkerMirroredStrategy (model/distributed.py)
        fit_multiworker(model, run.train_data, strategy=run.strategy, **fit_args)
    if guard.triggered:
        raise TrainingDiverged(
            f"{guard.triggered}; stopped, {describe_kept(run.paths.checkpoint_dir)} "
            "(try a lower learning_rate)")
    return early is not None and early.stopped_epoch > 0


def _result(run: _Run) -> TrainResult:
    """The run's TrainResult: its history, epochs, minutes and best checkpoint."""
    result = TrainResult(run.paths, run.history,
                         epochs_done=len(run.history.get("epoch", [])),
                         minutes=(time.time() - run.start_time) / 60)
    best = best_checkpoints(run.paths.checkpoint_dir)
    if best:
        result.best_score, result.best_checkpoint = best[0]
    return result


def _open_run(config: Config, resume: bool):
    """(config with its run name, RunPaths, state.json or None, the checkpoint to resume
    from or None): the run's name and folders, checked; a resume's state and architecture."""
    check_folders(("log_dir", config.log_dir), ("checkpoint_dir", config.checkpoint_dir))
    if resume:
        name = config.run_name or latest_run(config.checkpoint_dir)
    else:
        name = config.run_name or time.strftime("%Y%m%d-%H%M%S")
    paths = RunPaths.for_config(config, name)
    config = config.replace(run_name=name)
    check_folders(("log_dir", paths.log_dir), ("checkpoint_dir", paths.checkpoint_dir))
    if not resume:
        return config, paths, None, None
    state = read_state(paths.checkpoint_dir)
    if state is None:
        raise CheckpointError(f"{paths.checkpoint_dir}: no state.json to resume from")
    check_resume_architecture(config, paths.checkpoint_dir)
    return config, paths, state, resume_file(paths.checkpoint_dir, state)


def epoch_end_callbacks(config: Config, stage: str, schedule, val_data, writes: RunPaths,
                        history: dict, start_time: float, strategy=None):
    """The callbacks of one stage, in the one order that makes each epoch's end correct;
    (callbacks, the non-finite guard, the early-stopping callback or None).

    Keras runs callbacks in list order, so this list is where the order is decided:
      1. WeightEMA (with `ema_decay`): swaps the averaged weights in, so that everything
         below validates, checks, saves and logs the weights that ship;
      2. the learning-rate schedule (per step; its epoch end only logs the rate);
      3. the non-finite guard, then validation: it skips the epoch the guard stopped, and
         puts val_* (model.validation.METRICS) into the logs everything below reads;
      4. with several workers (`strategy`), AgreeOnLogs: every worker's decisions below
         read the chief's numbers;
      5. the decisions: ReduceLROnPlateau, EarlyStopping;
      6. HistoryFile before ScoreCheckpoint: a kill between the two leaves a history row
         past the committed epoch, which a resume drops; the other order would lose one;
      7. TensorBoard; and RestoreTrainedWeights last, which swaps the trained weights back.
    The single-machine (`Model.fit`) and multi-worker (`fit_multiworker`) loops both run
    this list as it is.
    """
    from model.validation import OPERATING_POINT, GridValidation, NonFiniteLossGuard

    guard = NonFiniteLossGuard()
    ema = WeightEMA(config.ema_decay) if config.ema_decay > 0 else None
    callbacks = [ema] if ema else []
    callbacks += [
        schedule,
        guard,
        GridValidation(val_data, config, max_batches=config.validation_steps, guard=guard,
                       image_log_dir=os.path.join(writes.log_dir, "images")),
    ]
    if strategy is not None:
        callbacks.append(AgreeOnLogs(strategy))
    mode = monitor_mode(config.monitor)
    if config.reduce_lr_patience > 0 and config.lr_schedule == "constant":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor, mode=mode, factor=config.reduce_lr_factor,
            patience=config.reduce_lr_patience, min_lr=schedule.target * 1e-3))
    early = None
    if config.early_stopping_patience > 0:
        early = keras.callbacks.EarlyStopping(
            monitor=config.monitor, mode=mode, patience=config.early_stopping_patience)
        callbacks.append(early)
    callbacks += [
        HistoryFile(os.path.join(writes.log_dir, "history.json"), history, start_time),
        ScoreCheckpoint(writes.checkpoint_dir, config.monitor, mode, config.keep_best,
                        stage=stage, guard=guard, contract=ModelContract.from_config(config),
                        operating_point=OPERATING_POINT),
        keras.callbacks.TensorBoard(writes.log_dir, write_graph=False, update_freq="epoch",
                                    profile_batch=0),
    ]
    if ema:
        callbacks.append(RestoreTrainedWeights(ema))
    return callbacks, guard, early


def _save_config(config: Config, path: str) -> None:
    """save_config into a new or existing folder, a failed write (a full disk) reported
    in one line naming the file."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_config(config, path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write the configuration "
                              f"({os_error_reason(e)})") from None


def initial_model(config: Config, weights: Optional[str] = None) -> keras.Model:
    """The network before training: initial weights drawn from `config.seed`, then
    replaced by a checkpoint's weights if `weights` is given.

    The same seed gives the same initial weights, so runs repeat unless threaded kernels
    sum in a different order (two seeded demo runs on one machine matched exactly). The
    seed is set with `keras.utils.set_random_seed`: Python's, NumPy's and the backend's
    global generators (the data pipeline has seeded generators of its own).
    """
    from model.network import create_model

    keras.utils.set_random_seed(config.seed)
    model = create_model(config)
    if weights:
        _load_weights(model, weights)
    return model


def _load_weights(model: keras.Model, path: str) -> None:
    """Initialise `model` from a checkpoint of the same architecture, or, for a network
    with landmarks, from one without them: every layer of the checkpoint by name, the
    landmark layers (`head_landmarks*`) keeping their initial weights (a trained box
    detector learns its points)."""
    source = load_checkpoint(path, compile=False)
    try:
        model.set_weights(source.get_weights())
        return
    except ValueError as e:
        reason = str(e).splitlines()[0][:160]
    names = {layer.name for layer in model.layers}
    adds_landmarks = (model.output_shape[-1] == LANDMARK_OUTPUT_CHANNELS
                      and source.output_shape[-1] == NUM_CHANNELS
                      and {layer.name for layer in source.layers} <= names)
    try:
        if not adds_landmarks:
            raise ValueError(reason)
        for layer in source.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    except ValueError as e:
        raise CheckpointError(
            f"{path}: incompatible with the configured network "
            f"(input_size/grid_size/alpha differ?): {str(e).splitlines()[0][:160]}") from None
