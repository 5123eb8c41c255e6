"""Training on several machines (model/distributed.py), with two worker processes on
127.0.0.1: MultiWorkerMirroredStrategy from TF_CONFIG, each worker reading its own half
of every global batch, reaches the weights one process reaches on the same global batch;
only the chief writes; a restarted pair resumes from the chief's last epoch.

Everything runs in subprocesses (CPU only, free ports, a timeout that kills them all):
the strategy must be made before any other TensorFlow operation of a process. This file
is also the worker program (`python tests/test_multiworker.py CONFIG_JSON new|resume`).
"""

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from config import Config
from conftest import make_demo_root
from common.errors import ConfigError, DatasetError
from model.distributed import Cluster, parse_tf_config, training_cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240  # one round of processes; a healthy round takes 40 to 60 s on 2 cores

# The tiny network's check: SGD, its update linear in the gradient, and a clipnorm that
# clips, so a gradient that is not the global batch's shows at once.
TINY_LEARNING_RATE, TINY_CLIPNORM = 0.5, 0.05
# Float reduction order alone, on ~300 weights (measured 1.5e-8 to 1.6e-7).
TINY_TOLERANCE = 1e-5
# The detector after 4 steps: |weights - reference| / |reference - initial weights|
# (the test's docstring says why; measured 2e-5).
DETECTOR_TOLERANCE = 1e-3


# --- the worker program ---------------------------------------------------------------


def _record_writes(roots):
    """The set that every file opened for writing, renamed, removed or made under `roots`
    is added to (relative to the first root's parent). Python's audit hook sees every
    write of the project but TensorBoard's event files, which TensorFlow writes in C++."""
    roots = tuple(os.path.abspath(r) for r in roots)
    written = set()

    def audit(event, args):
        if event == "open":
            if not isinstance(args[0], str) or not (args[2] or 0) & (os.O_WRONLY | os.O_RDWR):
                return
        elif event not in ("os.rename", "os.remove", "os.mkdir"):
            return
        for path in args[:2] if event == "os.rename" else args[:1]:  # os.replace too
            if isinstance(path, str) and os.path.abspath(path).startswith(roots):
                written.add(os.path.relpath(os.path.abspath(path), os.path.dirname(roots[0])))

    sys.addaudithook(audit)
    return written


def _tiny_network_weights(config, sync_batchnorm=True):
    """One epoch (2 steps) of SGD on a tiny grid network (pooling, a conv, BatchNorm, a
    1x1 conv) over the run's data, trained as train() trains (fit_multiworker or
    model.fit); its weights after, flattened."""
    import keras

    from model.distributed import fit_multiworker
    from model.loss import make_loss
    from model.training import _datasets, make_strategy

    strategy, cluster = make_strategy(config), training_cluster(config)
    train_data, _ = _datasets(config, config.batch_size * strategy.num_replicas_in_sync,
                              cluster)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((config.input_size, config.input_size, 3), dtype="uint8"),
            keras.layers.Rescaling(1 / 127.5, offset=-1),
            keras.layers.AveragePooling2D(config.input_size // (4 * config.grid_size)),
            keras.layers.Conv2D(8, 4, strides=4, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(5, 1, activation="sigmoid"),
        ])
        model.compile(keras.optimizers.SGD(TINY_LEARNING_RATE, clipnorm=TINY_CLIPNORM),
                      loss=make_loss(config))
    if cluster is None:
        model.fit(train_data, epochs=1, shuffle=False, verbose=0)
    else:
        fit_multiworker(model, train_data, epochs=1, strategy=strategy,
                        sync_batchnorm=sync_batchnorm)
    return np.concatenate([np.ravel(w) for w in model.get_weights()]).tolist()


def _worker(values_json, mode):
    values = json.loads(values_json)
    written = _record_writes([values["log_dir"], values["checkpoint_dir"]])
    from model.training import train

    config = Config(**values)
    result = train(config, resume=mode == "resume")
    report = {"epochs": result.epochs_done, "loss": result.history["loss"],
              "written": sorted(written), "tiny": _tiny_network_weights(config)}
    if training_cluster(config) is not None:
        report["tiny_unsynchronized"] = _tiny_network_weights(config, sync_batchnorm=False)
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    _worker(*sys.argv[1:])


# --- the tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_root(tmp_path_factory, num_train=16, num_val=8)


def _config(root, tmp_path, **changes):
    """test_train.py's tiny detector, its head stage (the backbone frozen), as a dict;
    16 images: 2 steps an epoch of a global batch of 8 (a finite dataset: model.fit reads
    it in a fixed order)."""
    from helpers import tiny_train_config as tiny_detector

    values = dict(head_epochs=2, finetune_epochs=0, learning_rate=1e-3, augment=False,
                  keep_best=1, validation_steps=1)
    return tiny_detector(root, tmp_path, **{**values, **changes}).to_dict()


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_processes(jobs, timeout=TIMEOUT_S):
    """Run (argv, env) jobs at once; their outputs and pids. All are killed on a timeout
    or as soon as one fails (its peers would wait for it), and the test fails."""
    procs = [subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for argv, env in jobs]
    outputs = [None] * len(procs)
    deadline = time.monotonic() + timeout
    try:
        while None in outputs:
            for i, p in enumerate(procs):
                if outputs[i] is None and p.poll() is not None:
                    outputs[i] = p.stdout.read()
                    if p.returncode != 0:
                        pytest.fail(f"process {i} exited {p.returncode}:\n{outputs[i][-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s")
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
    return outputs, [p.pid for p in procs]


def _job(values, mode, tf_config=None, tmpdir=None):
    # One thread per operation: 2 or 3 processes share the 2 cores of CI.
    env = {**os.environ, "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": "", "CI": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if tmpdir is not None:
        os.makedirs(tmpdir, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return [sys.executable, os.path.abspath(__file__), json.dumps(values), mode], env


def worker_jobs(values, mode, scratch_root):
    """Two workers of one cluster on free local ports, each with a TMPDIR of its own."""
    ports = free_ports(2)
    return [_job(values, mode, {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                "task": {"type": "worker", "index": i}},
                 scratch_root / f"tmp{i}") for i in range(2)]


def result_of(output):
    return json.loads(output.split("RESULT ", 1)[1].splitlines()[0])


def trained_weights(checkpoint_dir):
    """The committed epoch and the weights of its last-eNNN.keras, by path."""
    from model.checkpoints import load_checkpoint, read_state

    state = read_state(checkpoint_dir)
    model = load_checkpoint(os.path.join(checkpoint_dir, state["last"]))
    return state, {w.path: np.asarray(w) for w in model.weights}


def relative_difference(weights, reference, initial):
    """|weights - reference| / |reference - initial| over all the arrays: the difference
    as a fraction of the change training made."""
    num = sum(float(np.sum((weights[k] - reference[k]) ** 2)) for k in reference)
    den = sum(float(np.sum((reference[k] - initial[k]) ** 2)) for k in reference)
    return (num / den) ** 0.5


def test_two_workers_match_one_process_write_only_on_the_chief_and_resume(demo_root, tmp_path):
    """Two workers (batch 4 each) train one epoch, are restarted with --resume for a
    second, and end on the weights of one process (batch 8) trained two epochs.

    The detector trains its head stage (AdamW, the backbone frozen, as a run's first
    stage), where only float reduction order separates the runs: measured 2e-5 of the
    change training made, and 0.9 with each worker's own BatchNorm statistics, so
    DETECTOR_TOLERANCE (1e-3) leaves a margin both ways. Not the fine-tuning stage:
    trained from scratch through 17 BatchNorm'd blocks, AdamW's sign-like first steps
    amplify rounding: the same single process fed its batch in reverse order (the same
    sums in another order) ends 70% away after 4 steps at learning rate 3e-3 (20% at
    1e-4), so no tolerance there tells a bug from rounding.

    BatchNorm synchronised in training mode, the gradient's scale and gradient clipping
    are checked on a tiny network with SGD, whose update is linear in the gradient and whose
    clipnorm clips: equal to float rounding (1.5e-8; TINY_TOLERANCE 1e-5), where
    per-replica BatchNorm statistics differ by 1e-2, and Keras' own clipping of each
    replica's part of the gradient by 3e-2.
    """
    from model.training import initial_model

    ref_values = _config(demo_root, tmp_path / "one", distribute="none")
    values = _config(demo_root, tmp_path / "two", batch_size=4, head_epochs=1)
    start = time.monotonic()
    # The reference shares the 2 cores with the first round.
    jobs = [_job(ref_values, "new")] + worker_jobs(values, "new", tmp_path / "round1")
    outputs, pids = run_processes(jobs)
    reference, chief, other = (result_of(o) for o in outputs)
    assert reference["epochs"] == 2 and chief["epochs"] == other["epochs"] == 1

    # Only the chief wrote the checkpoints, state, history, logs and config copies.
    assert {"ckpt/run/state.json", "ckpt/run/last-e001.keras", "ckpt/run/config.json",
            "logs/fit/run/history.json", "logs/fit/run/config.json"} <= set(chief["written"])
    assert other["written"] == []
    events = glob.glob(str(tmp_path / "two" / "logs" / "**" / "events.out.*"), recursive=True)
    assert events and all(f".{pids[1]}." in os.path.basename(e) for e in events)
    assert not glob.glob(str(tmp_path / "round1" / "tmp1" / "face-detector-worker*"))

    # The tiny network: the global batch's gradient, BatchNorm over the global batch.
    tiny = np.array(reference["tiny"])
    assert np.max(np.abs(np.array(chief["tiny"]) - tiny)) < TINY_TOLERANCE
    assert chief["tiny"] == other["tiny"]  # one model on every worker
    unsynchronized = np.max(np.abs(np.array(chief["tiny_unsynchronized"]) - tiny))
    assert unsynchronized > 100 * TINY_TOLERANCE  # what synchronised BatchNorm avoids

    # A restart of both workers continues from the chief's committed epoch.
    values = _config(demo_root, tmp_path / "two", batch_size=4)
    outputs, _ = run_processes(worker_jobs(values, "resume", tmp_path / "round2"))
    chief, other = (result_of(o) for o in outputs)
    assert chief["epochs"] == other["epochs"] == 2
    print(f"wall time of the processes {time.monotonic() - start:.0f} s")

    state, weights = trained_weights(str(tmp_path / "two" / "ckpt" / "run"))
    ref_state, ref_weights = trained_weights(str(tmp_path / "one" / "ckpt" / "run"))
    assert state["epoch"] == ref_state["epoch"] == 2
    assert state["optimizer_steps"] == ref_state["optimizer_steps"] == 4
    with open(tmp_path / "two" / "logs" / "fit" / "run" / "history.json") as f:
        assert json.load(f)["epoch"] == [1, 2]
    np.testing.assert_allclose(chief["loss"], reference["loss"], rtol=1e-4)
    initial = {w.path: np.asarray(w) for w in initial_model(Config(**ref_values)).weights}
    difference = relative_difference(weights, ref_weights, initial)
    print(f"detector: relative difference {difference:.1e}; tiny network: "
          f"{np.max(np.abs(np.array(chief['tiny']) - tiny)):.1e} synchronised, "
          f"{unsynchronized:.1e} per replica")
    assert difference < DETECTOR_TOLERANCE


def test_tf_config_gives_the_cluster_and_the_chief():
    workers = {"cluster": {"worker": ["a:1", "b:1", "c:1"]},
               "task": {"type": "worker", "index": 2}}
    assert parse_tf_config(json.dumps(workers)) == Cluster(3, 2)
    first = {**workers, "task": {"type": "worker", "index": 0}}
    assert parse_tf_config(json.dumps(first)).is_chief
    chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
             "task": {"type": "worker", "index": 0}}
    assert parse_tf_config(json.dumps(chief)) == Cluster(3, 1)  # the chief task is 0
    assert parse_tf_config(json.dumps({**chief, "task": {"type": "chief"}})).is_chief
    assert parse_tf_config("") is None and parse_tf_config('{"cluster": {}}') is None
    with pytest.raises(ConfigError, match="TF_CONFIG: not a cluster"):
        parse_tf_config("{not json")
    with pytest.raises(ConfigError, match="task type 'evaluator' does not train"):
        parse_tf_config(json.dumps({**chief, "task": {"type": "evaluator", "index": 0}}))
    with pytest.raises(ConfigError, match="task index 2 is not among the 2 worker"):
        parse_tf_config(json.dumps({**chief, "task": {"type": "worker", "index": 2}}))


def test_distribute_auto_picks_multiworker_only_for_a_cluster(monkeypatch):
    two = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    one = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(two))
    assert training_cluster(Config(distribute="auto")) == Cluster(2, 1)
    assert training_cluster(Config(distribute="mirrored")) is None
    assert training_cluster(Config(distribute="none")) is None
    monkeypatch.setenv("TF_CONFIG", json.dumps(one))
    assert training_cluster(Config(distribute="auto")) is None
    monkeypatch.delenv("TF_CONFIG")
    assert training_cluster(Config(distribute="auto")) is None
    assert training_cluster(Config(distribute="multiworker")) == Cluster(1, 0)
    with pytest.raises(ConfigError, match="distribute='tpu': must be one of auto, mirrored, "
                                          "multiworker, none"):
        Config(distribute="tpu")


def test_shards_split_every_global_batch_and_drop_the_partial_one(demo_root, tmp_path):
    from data.data_generator import FaceGridDataset
    from data.datasets import training_records

    config = Config(**_config(demo_root, tmp_path, batch_size=6))
    records = training_records(config)  # 16 images: 2 global batches of 6, 4 left over
    whole = FaceGridDataset(records, config, training=True, shuffle=False)
    shards = [FaceGridDataset(records, config, training=True, shuffle=False,
                              shard_index=i, shard_count=2) for i in range(2)]
    assert len(whole) == 3 and [len(s) for s in shards] == [2, 2]
    for i in range(2):
        images, targets = whole[i]
        parts = [s[i] for s in shards]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), targets)
    shuffled = [FaceGridDataset(records, config, training=True, shard_index=i, shard_count=2)
                for i in range(2)]
    for d in shuffled:
        d.set_epoch(3)
    np.testing.assert_array_equal(shuffled[0]._order, shuffled[1]._order)  # one global order
    with pytest.raises(DatasetError, match="shard 0 of 4 for a global batch of 6"):
        FaceGridDataset(records, config, training=True, shard_index=0, shard_count=4)
    with pytest.raises(DatasetError, match="16 images, fewer than one global batch of 32"):
        FaceGridDataset(records, config.replace(batch_size=32), training=True,
                        shard_index=0, shard_count=2)
