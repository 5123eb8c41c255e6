"""Training on several machines: MultiWorkerMirroredStrategy from TF_CONFIG, and the
training loop it needs.

Which strategy (`make_strategy` in model/training.py asks `wants_multiworker` first):
`distribute="multiworker"`, or `"auto"` when TF_CONFIG names more than one worker,
trains with `tf.distribute.MultiWorkerMirroredStrategy`: one process per machine, each
with its local devices, gradients all-reduced over the network every step. The strategy
must exist before any other TensorFlow operation of the process, and only once, so it is
made once and kept (`multiworker_strategy`).

Why a loop of its own: Keras 3.15's `model.fit` fails under this strategy (its symbolic
build reduces a nested PerReplica, then its logs are reduced along an axis they do not
have: keras-team/keras#20585), while MirroredStrategy on one machine works with it.
`fit_multiworker` is the part of `model.fit` that training needs: the same callbacks in
the same order, driven through `keras.callbacks.CallbackList`, one `strategy.run` per
step inside a `tf.function`, `model.stop_training` honoured, `model.history` returned.

What each step computes, so that N workers reach the weights one process reaches on the
same global batch (tests/test_multiworker.py measures it):
- every worker builds the same global batch order (the dataset's per-epoch seeds) and
  takes its slice of each global batch (`FaceGridDataset(shard_index, shard_count)`), so
  each reads only its part of the records and all run the same number of steps; the
  batches are read in model.fit's order (see `fit_multiworker`);
- the loss is the global batch's: GridLoss divides by the batch's face count, so each
  replica divides its sums by the face count of the whole global batch (all-reduced);
- the gradients are all-reduced (a SUM of the replicas' shares: the gradient of the
  global loss) before the optimizer clips them (`gradients_already_reduced`);
- BatchNorm computes its batch statistics over the global batch (`synchronized=True`
  while the step is traced, so the saved models keep the plain layer): per-replica
  statistics would make the result depend on the number of workers, and each worker's
  moving averages on its own shard. It costs 3 small all-reduces per BatchNorm layer
  each way (on two local CPU workers, a fine-tuning step took ~0.7 s against ~0.2 s);
  `fit_multiworker(sync_batchnorm=False)` trades that for per-replica statistics.

Chief and the other workers (`Cluster`): the chief (the "chief" task, else worker 0)
writes the checkpoints, state.json, history, TensorBoard logs and config copies; every
other worker runs the same callbacks, so it takes the same decisions (learning rate,
early stopping, a diverged loss), but writes them into a temporary folder of its own that
is removed at the end. The decisions read one set of numbers: `AgreeOnLogs` gives every
worker the chief's epoch logs (validation runs on every worker, and two machines' float
arithmetic need not agree to the last bit).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import keras
import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster.

    workers: the training tasks ("chief" and "worker" tasks together).
    index: this task's rank among them, 0 for the chief; also its data shard and the
        order of its replicas in the strategy (MultiWorkerMirroredStrategy counts the
        chief first, then the workers by index).
    """

    workers: int
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def parse_tf_config(text: Optional[str]) -> Optional[Cluster]:
    """The Cluster a TF_CONFIG value describes; None when it is unset or names no cluster.

    The chief is the "chief" task when the cluster has one, else worker 0 (TensorFlow's
    rule). ConfigError, naming TF_CONFIG, for JSON that is not a cluster description.
    """
    if not text or not text.strip():
        return None
    try:
        spec = json.loads(text)
        cluster = spec.get("cluster") or {}
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        task = spec.get("task") or {}
        task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"TF_CONFIG: not a cluster description ({e})") from None
    if not chiefs and not workers:
        return None
    if task_type not in ("chief", "worker"):
        raise ConfigError(f"TF_CONFIG: task type {task_type!r} does not train "
                          "(only chief and worker tasks do)")
    tasks = chiefs if task_type == "chief" else workers
    if not 0 <= index < len(tasks):
        raise ConfigError(f"TF_CONFIG: task index {index} is not among the "
                          f"{len(tasks)} {task_type} address(es)")
    rank = index + (len(chiefs) if task_type == "worker" else 0)  # TensorFlow's task order
    return Cluster(len(chiefs) + len(workers), rank)


def cluster_from_env(environ: Mapping[str, str] = os.environ) -> Optional[Cluster]:
    """The Cluster of the TF_CONFIG environment variable (MultiWorkerMirroredStrategy's
    default cluster resolver reads the same variable)."""
    return parse_tf_config(environ.get("TF_CONFIG"))


def wants_multiworker(config) -> bool:
    """Whether `config.distribute` asks for MultiWorkerMirroredStrategy here: always for
    "multiworker", for "auto" when TF_CONFIG names more than one worker."""
    if config.distribute == "multiworker":
        return True
    cluster = cluster_from_env()
    return config.distribute == "auto" and cluster is not None and cluster.workers > 1


def training_cluster(config) -> Optional[Cluster]:
    """This process's Cluster when it trains with several workers, else None. (A
    "multiworker" run without TF_CONFIG is a cluster of one: it trains alone.)"""
    return (cluster_from_env() or Cluster(1, 0)) if wants_multiworker(config) else None


_STRATEGY = None  # the process's one MultiWorkerMirroredStrategy


def multiworker_strategy():
    """The process's MultiWorkerMirroredStrategy, made on the first call."""
    global _STRATEGY
    if _STRATEGY is None:
        import tensorflow as tf

        try:
            _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # TensorFlow already started in this process
            raise ConfigError(
                "distribute=multiworker: MultiWorkerMirroredStrategy must be made before "
                f"any other TensorFlow operation of the process ({str(e).splitlines()[0]})"
            ) from None
    return _STRATEGY


def scratch_folder(cluster: Optional[Cluster]) -> Optional[tempfile.TemporaryDirectory]:
    """A temporary folder for what a non-chief worker's callbacks write, else None.

    Removed by its `cleanup()`, or when it is garbage-collected or at exit when training
    ends with an error (tempfile.TemporaryDirectory's finaliser)."""
    if cluster is None or cluster.is_chief:
        return None
    return tempfile.TemporaryDirectory(prefix=f"face-detector-worker{cluster.index}-")


def broadcast_from_chief(strategy, values: np.ndarray) -> np.ndarray:
    """The chief's `values` on every worker (a collective: every worker must call it with
    an array of the same shape). The sum of the chief's first replica's values and zeros
    elsewhere, so the chief's numbers arrive unchanged."""
    import tensorflow as tf

    values = np.asarray(values, dtype=np.float64)
    zeros = np.zeros_like(values)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(values if ctx.replica_id_in_sync_group == 0 else zeros))
    return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))


class AgreeOnLogs(keras.callbacks.Callback):
    """Replace every worker's numeric epoch logs by the chief's.

    Place it after the validation callback and before those that decide (learning rate,
    early stopping, checkpoints): all workers then decide on the same numbers, as they
    must, or one stops while the others wait for it in the next all-reduce.
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        keys = sorted(k for k, v in logs.items() if np.isscalar(v) and not isinstance(v, str))
        agreed = broadcast_from_chief(self.strategy, [float(logs[k]) for k in keys])
        logs.update((k, float(v)) for k, v in zip(keys, agreed))


def replica_loss_terms(loss, y_true, y_pred) -> dict:
    """This replica's share of the global batch's loss terms, in replica context: summed
    over the replicas they give the loss of the whole global batch ("loss" and, for a
    GridLoss, its terms under model.loss.TERM_NAMES).

    GridLoss returns per-image values whose mean is (the batch's sums) / max(face cells
    of the batch, 1) (model/loss.py); here the sums are divided by the face cells of the
    global batch instead, all-reduced. Any other Keras loss already divides its mean by
    the number of replicas inside a strategy (Keras' `scale_loss_for_distribution`).
    """
    import tensorflow as tf
    from keras import ops

    from data.grid import CLASS
    from model.loss import TERM_NAMES, GridLoss

    if not isinstance(loss, GridLoss):
        return {"loss": loss(y_true, y_pred)}
    local = ops.sum(ops.cast(ops.equal(ops.cast(y_true[..., CLASS], "float32"), 1.0), "float32"))
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
    batch = ops.cast(ops.shape(y_true)[0], "float32")
    share = ops.maximum(local, 1.0) / (batch * ops.maximum(total, 1.0))
    terms = {name: ops.sum(term) * share
             for name, term in zip(TERM_NAMES, loss.components(y_true, y_pred))}
    return {"loss": sum(terms.values()), **terms}


def _batchnorm_layers(layer) -> Iterable[keras.layers.BatchNormalization]:
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.layers.BatchNormalization):
            yield sub
        else:
            yield from _batchnorm_layers(sub)


@contextlib.contextmanager
def synchronized_batchnorm(layers):
    """BatchNormalization layers with `synchronized=True` (statistics of the global batch,
    all-reduced) while inside; the layers read the flag when a step is traced."""
    saved = [layer.synchronized for layer in layers]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer, flag in zip(layers, saved):
            layer.synchronized = flag


@contextlib.contextmanager
def gradients_already_reduced(optimizer):
    """Inside, the optimizer applies the gradients it is given as they are.

    Keras 3's TF optimizer clips each replica's gradients and only then all-reduces them
    (a SUM, `_all_reduce_sum_gradients`), so `clipnorm` would act on each replica's part
    of the gradient: with more replicas it clips another gradient than one process does,
    and with synchronised BatchNorm a replica's part can be larger than the whole. The
    step all-reduces the gradients itself, before `apply_gradients`, and this skips the
    optimizer's own all-reduce (of the inner optimizer too, under mixed precision's
    LossScaleOptimizer), so clipping sees the global batch's gradient.
    """
    optimizers = [o for o in (optimizer, getattr(optimizer, "inner_optimizer", None)) if o]
    for o in optimizers:
        if not callable(getattr(o, "_all_reduce_sum_gradients", None)):
            raise RuntimeError(f"{type(o).__name__} has no _all_reduce_sum_gradients: this "
                               "Keras version reduces gradients elsewhere; update "
                               "model/distributed.py")
        o._all_reduce_sum_gradients = list
    try:
        yield
    finally:
        for o in optimizers:
            del o._all_reduce_sum_gradients


def make_train_step(model: keras.Model, strategy, sync_batchnorm: bool = True):
    """A traced step: (per-replica images, per-replica targets) -> {name: global value}.

    Each replica computes its share of the global loss (`replica_loss_terms`), scales it
    for mixed precision as Keras' train_step does, all-reduces its gradients (SUM: the
    gradient of the global loss) and applies them (`gradients_already_reduced`).
    """
    import tensorflow as tf
    from keras import ops

    variables = model.trainable_variables
    batchnorm = list(_batchnorm_layers(model)) if sync_batchnorm else []

    def replica_step(images, targets):
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            terms = replica_loss_terms(model.loss, targets, predictions)
            loss = terms["loss"]
            if model.losses:  # regularisers: each replica's share of them
                loss = loss + ops.sum(model.losses) / strategy.num_replicas_in_sync
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        present = [i for i, g in enumerate(gradients) if g is not None]
        reduced = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
        for i, g in zip(present, reduced):
            gradients[i] = g
        with gradients_already_reduced(model.optimizer):
            model.optimizer.apply_gradients(zip(gradients, variables))
        return terms

    # Not converted by AutoGraph (as Keras' own train function): tracing a network
    # through it takes far longer, and the step has no Python control flow on tensors.
    @tf.function(autograph=False)
    def step(images, targets):
        with synchronized_batchnorm(batchnorm):
            terms = strategy.run(replica_step, args=(images, targets))
        return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in terms.items()}

    return step


def _per_replica(strategy, array: np.ndarray):
    """This worker's batch split over its local replicas (replica ids are numbered worker
    by worker, so the local position is the id modulo the local replica count)."""
    import tensorflow as tf

    local = strategy.extended.worker_devices
    parts = np.array_split(array, len(local))
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group % len(local)]))


def _batches(dataset, indices):
    """The dataset's batches `indices` (of its current epoch), made `dataset.workers`
    ahead in threads (model.fit overlaps loading and training the same way)."""
    indices = list(indices)
    ahead = max(1, getattr(dataset, "workers", 1))
    with ThreadPoolExecutor(ahead) as pool:
        pending = collections.deque(pool.submit(dataset.__getitem__, i)
                                    for i in indices[:ahead])
        for i in range(len(indices)):
            batch = pending.popleft().result()
            if i + ahead < len(indices):
                pending.append(pool.submit(dataset.__getitem__, indices[i + ahead]))
            yield batch


def fit_multiworker(model: keras.Model, train_data, epochs: int, initial_epoch: int = 0,
                    steps_per_epoch: Optional[int] = None, callbacks=(), strategy=None,
                    verbose: int = 0, sync_batchnorm: bool = True):
    """`model.fit(train_data, ...)` for MultiWorkerMirroredStrategy (see the module
    docstring); returns `model.history`.

    Args:
        model: compiled in `strategy.scope()`.
        train_data: this worker's shard, a FaceGridDataset-like PyDataset: `len()`, batch
            `i` as (images, targets) of the current epoch, `on_epoch_end()`; the same
            length on every worker.
        epochs, initial_epoch, steps_per_epoch, callbacks, verbose: as for `model.fit`
            (steps_per_epoch None: `len(train_data)`).
        strategy: the MultiWorkerMirroredStrategy (default: the current one).
        sync_batchnorm: BatchNorm statistics over the global batch (True) or each
            replica's own batch (False, as model.fit under MirroredStrategy).
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    steps = steps_per_epoch or len(train_data)
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    step = make_train_step(model, strategy, sync_batchnorm)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps)
    # The data as model.fit reads it, so that both reach the same weights: its epoch
    # iterator's reset() ends one epoch of the dataset before training (epoch e trains on
    # the dataset's epoch e + 1), and the batch numbers run on from epoch to epoch (an
    # endless dataset takes them modulo its length itself).
    train_data.on_epoch_end()
    endless = getattr(train_data, "num_batches", len(train_data)) is None
    position = 0
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        indices = range(position, position + steps)
        indices = indices if endless else [i % len(train_data) for i in indices]
        position += steps
        sums: dict = {}
        for i, (images, targets) in enumerate(_batches(train_data, indices)):
            callback_list.on_train_batch_begin(i)
            values = step(_per_replica(strategy, images), _per_replica(strategy, targets))
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            logs = {name: total / (i + 1) for name, total in sums.items()}  # as Keras' means
            callback_list.on_train_batch_end(i, logs)
            if model.stop_training:
                break
        train_data.on_epoch_end()
        epoch_logs = dict(logs)
        callback_list.on_epoch_end(epoch, epoch_logs)
        logs = epoch_logs
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
