"""Kill -9 a real training run at random moments; after each kill, check that nothing is lost.

    python benchmarks/bench_faults.py [--kills 20] [--seed 0] [--out faults.json]

A tiny `python train.py` run (a few generated WIDER-layout images, 64 px input, 2x2 grid,
MobileNetV2 alpha 0.35 from scratch, 2 steps an epoch, one validation batch) is started,
SIGKILLed at a random (seeded) moment, inspected, and continued with `--resume`, `--kills`
times; a last resume then runs to its end without a kill and is inspected the same way.

Kill moments (seeded): every fifth kill is "early", uniform in [0, t_commit] after the
process starts (imports, the start-up cleanup of the previous kill's leftovers, graph
tracing, the first epoch), t_commit being when a process last committed its first epoch;
the others are "late", uniform within two epochs after the process's second commit
(state.json replaced), so they hit the training steps, the validation and the saves of an
epoch in proportion to the time each takes.

What is checked after every kill, in the run folder as the kill left it:
- corrupt files: every `*.keras` (temporaries excepted) must load (the resumable file with
  its optimizer, as --resume loads it), state.json, history.json and config.json must parse.
  Must be 0. Temporaries of killed writes are counted apart: they are allowed (a write
  was cut short; the file it was replacing is intact), and the next start removes them
  (the final inspection finds none).
- epochs lost: the last epoch the killed process began (its `Epoch N/...` line, stdout
  unbuffered) minus the epoch state.json commits. The epoch in progress is lost by nature
  (1); a finished but uncommitted epoch would be more. Must be at most 1.
- epochs trained twice: the optimizer's step counter in the committed resumable file,
  divided by the steps per epoch, minus the committed epoch. A file ahead of its state
  means the resume trains that epoch a second time on weights already past it (what the
  old `last.keras` + `state.json` pair did after a kill between the two). Must be 0. At
  the end, history.json must list each epoch once, in order, and the optimizer must have
  made exactly epochs x steps steps.

`--repo PATH` runs another checkout's train.py (e.g. an export of an older commit, to see
the faults this guards against); the inspection reads both the new and the old layout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RUN = "bench"
STEPS = 2  # steps per epoch: short epochs, so the saves are a large share of the time
EARLY_EVERY = 5  # every fifth kill lands in start-up or the first epoch
_EPOCH_LINE = re.compile(r"^Epoch (\d+)/\d+")


def train_command(repo: str, data: str, work: str, epochs: int, resume: bool, seed: int):
    """The `python train.py` command line of the benchmark's run."""
    command = [
        sys.executable, os.path.join(repo, "train.py"), "--dataset", data,
        "--input-size", "64", "--grid-size", "2", "--alpha", "0.35",
        "--backbone-weights", "none", "--head-channels", "8", "--batch-size", "4",
        "--head-epochs", "0", "--finetune-epochs", str(epochs),
        # Constant rate, no warm-up: the number of epochs asked for changes nothing of the
        # training, so the last run may ask for fewer epochs than the killed ones.
        "--lr-schedule", "constant", "--warmup-epochs", "0", "--reduce-lr-patience", "0",
        "--early-stopping-patience", "0", "--steps-per-epoch", str(STEPS),
        "--validation-steps", "1", "--keep-best", "2", "--workers", "1", "--seed", str(seed),
        "--checkpoint-dir", os.path.join(work, "ckpt"), "--log-dir", os.path.join(work, "logs"),
        "--run-name", RUN,
    ]
    return command + (["--resume"] if resume else [])


def _load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def inspect_run(checkpoint_dir: str, log_dir: str, steps_per_epoch: int) -> dict:
    """What a run folder holds after a kill.

    Returns a dict: `corrupt` (list of "file: reason", checkpoints by name, the JSON files
    by path), `temporaries` (names),
    `committed_epoch` (state.json's, 0 without one), `optimizer_epochs` (the committed
    resumable file's optimizer steps / steps_per_epoch, None without a file),
    `history_epochs` (history.json's epoch column, [] without one), `files` (names).
    """
    import keras

    from common.files import is_temporary
    from model.checkpoints import LEGACY_LAST_FILE, load_checkpoint

    report = {"corrupt": [], "temporaries": [], "committed_epoch": 0,
              "optimizer_epochs": None, "history_epochs": [],
              "files": sorted(os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else [])}
    state = None
    for path in (os.path.join(checkpoint_dir, "state.json"),
                 os.path.join(checkpoint_dir, "config.json"),
                 os.path.join(log_dir, "history.json"), os.path.join(log_dir, "config.json")):
        if not os.path.isfile(path):
            continue
        try:
            data = _load_json(path)
        except (OSError, ValueError) as e:
            report["corrupt"].append(f"{path}: {e}")
            continue
        if path.endswith("state.json"):
            state = data
        elif path.endswith("history.json"):
            report["history_epochs"] = [int(e) for e in data.get("epoch", [])]
    resumable = None
    if state is not None:
        report["committed_epoch"] = int(state.get("epoch", 0))
        resumable = os.path.basename(str(state.get("last", LEGACY_LAST_FILE)))
    for name in report["files"]:
        path = os.path.join(checkpoint_dir, name)
        if is_temporary(name):
            report["temporaries"].append(name)
            continue
        if not name.endswith(".keras"):
            continue
        try:
            model = load_checkpoint(path, compile=name == resumable)
        except Exception as e:  # a corrupt file: any error of the loader
            report["corrupt"].append(f"{name}: {str(e).splitlines()[0][:160]}")
            continue
        if name == resumable and getattr(model, "optimizer", None) is not None:
            steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            report["optimizer_epochs"] = steps / steps_per_epoch
    if resumable is not None and resumable not in report["files"]:
        report["corrupt"].append(f"{resumable}: named by state.json, missing")
    return report


class Trainer:
    """One `python train.py` process, its stdout read on a thread for the epoch lines."""

    def __init__(self, command, log_path: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CI": "1", "PYTHONPATH": REPO}
        self.log = open(log_path, "a", encoding="utf-8")
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=env, cwd=REPO)
        self.last_epoch_begun = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.log.write(line)
            match = _EPOCH_LINE.match(line.strip())
            if match:
                self.last_epoch_begun = int(match.group(1))

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.finish()

    def finish(self) -> int:
        code = self.process.wait()
        self._reader.join(timeout=10)
        self.log.flush()
        return code


def _state_stamp(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)  # an atomic replace gives a new inode


def wait_for_commit(trainer: Trainer, state_path: str, timeout: float) -> float:
    """Seconds after the start when this process first replaced state.json (else None)."""
    before = _state_stamp(state_path)
    while trainer.elapsed() < timeout and trainer.process.poll() is None:
        if _state_stamp(state_path) != before:
            return trainer.elapsed()
        time.sleep(0.01)
    return None


def one_kill(rng, trainer: Trainer, state_path: str, estimates: dict, early: bool) -> dict:
    """Kill `trainer` at a random moment, early or late (module docstring); what happened,
    as a dict."""
    if early:
        moment = rng.uniform(0.0, estimates["first_commit"])
        while trainer.elapsed() < moment and trainer.process.poll() is None:
            time.sleep(0.005)
    else:
        first = wait_for_commit(trainer, state_path, timeout=600)
        if first is None:
            raise SystemExit("bench_faults: train.py ended or hung before an epoch; see the log")
        estimates["first_commit"] = first
        second = wait_for_commit(trainer, state_path, timeout=first + 120)
        if second is not None:  # one epoch's length, for the next cycles' windows
            estimates["epoch"] = second - first
        delay = rng.uniform(0.0, 2.0 * estimates["epoch"])
        target = trainer.elapsed() + delay
        while trainer.elapsed() < target and trainer.process.poll() is None:
            time.sleep(0.005)
    if trainer.process.poll() is not None:
        raise SystemExit(f"bench_faults: train.py exited ({trainer.process.returncode}) "
                         "before the kill; see the log")
    at = trainer.elapsed()
    trainer.kill()
    return {"phase": "early" if early else "late", "killed_at_s": round(at, 2),
            "epoch_begun": trainer.last_epoch_begun}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--work", help="run folder (default: a fresh temporary folder)")
    parser.add_argument("--repo", default=REPO, help="checkout whose train.py runs")
    parser.add_argument("--out", metavar="JSON", help="write the rows and summary here")
    args = parser.parse_args(argv)

    from data.synthetic import make_demo_dataset

    work = args.work or tempfile.mkdtemp(prefix="bench_faults_")
    if os.path.isdir(os.path.join(work, "ckpt")):
        shutil.rmtree(os.path.join(work, "ckpt"))
        shutil.rmtree(os.path.join(work, "logs"), ignore_errors=True)
    data = os.path.join(work, "data")
    if not os.path.isfile(os.path.join(data, ".complete")):
        make_demo_dataset(data, num_train=16, num_val=8, seed=3, progress=False)
    checkpoint_dir = os.path.join(work, "ckpt", RUN)
    log_dir = os.path.join(work, "logs", "fit", RUN)
    state_path = os.path.join(checkpoint_dir, "state.json")
    log_path = os.path.join(work, "train.log")
    rng = random.Random(args.seed)
    estimates = {"first_commit": 30.0, "epoch": 2.0}
    print(f"bench_faults: {args.kills} kills, seed {args.seed}, work {work} "
          f"(train.py output in {log_path})", flush=True)

    rows = []
    started = time.monotonic()
    while len(rows) < args.kills:
        resume = os.path.isfile(state_path)
        trainer = Trainer(train_command(args.repo, data, work, 1000, resume, seed=1), log_path)
        early = len(rows) % EARLY_EVERY == EARLY_EVERY - 1
        row = one_kill(rng, trainer, state_path, estimates, early)
        report = inspect_run(checkpoint_dir, log_dir, STEPS)
        row.update(committed=report["committed_epoch"], corrupt=report["corrupt"],
                   temporaries=len(report["temporaries"]))
        row["lost"] = max(0, row["epoch_begun"] - report["committed_epoch"])
        ahead = report["optimizer_epochs"]
        row["trained_twice"] = 0 if ahead is None else round(ahead - report["committed_epoch"], 2)
        rows.append(row)
        print(f"kill {len(rows):2d}: {row['phase']:5s} at {row['killed_at_s']:6.2f} s, "
              f"epoch {row['epoch_begun']} begun, {row['committed']} committed, lost "
              f"{row['lost']}, ahead {row['trained_twice']}, corrupt {len(row['corrupt'])}, "
              f"temporaries {row['temporaries']}", flush=True)

    # The last resume runs two more epochs to its end, unkilled.
    final_epochs = inspect_run(checkpoint_dir, log_dir, STEPS)["committed_epoch"] + 2
    trainer = Trainer(train_command(args.repo, data, work, final_epochs, True, seed=1), log_path)
    code = trainer.finish()
    final = inspect_run(checkpoint_dir, log_dir, STEPS)
    final_ok = (code == 0 and final["committed_epoch"] == final_epochs and not final["corrupt"]
                and final["optimizer_epochs"] == final_epochs and not final["temporaries"]
                and final["history_epochs"] == list(range(1, final_epochs + 1)))
    summary = {
        "kills": len(rows),
        "early_kills": sum(r["phase"] == "early" for r in rows),
        "corrupt_files": sum(len(r["corrupt"]) for r in rows) + len(final["corrupt"]),
        "epochs_lost_total": sum(r["lost"] for r in rows),
        "epochs_lost_max_per_kill": max((r["lost"] for r in rows), default=0),
        "epochs_trained_twice": sum(max(0.0, r["trained_twice"]) for r in rows),
        "temporaries_left_by_kills": sum(r["temporaries"] for r in rows),
        "final_exit_code": code,
        "final_epochs": final["committed_epoch"],
        "final_optimizer_epochs": final["optimizer_epochs"],
        "final_history_ok": final["history_epochs"] == list(range(1, final_epochs + 1)),
        "final_ok": final_ok,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    print()
    print(f"{'kills':>6} {'corrupt files':>14} {'epochs lost':>12} {'max lost/kill':>14} "
          f"{'trained twice':>14} {'temporaries':>12} {'final run':>10}")
    print(f"{summary['kills']:>6} {summary['corrupt_files']:>14} {summary['epochs_lost_total']:>12} "
          f"{summary['epochs_lost_max_per_kill']:>14} {summary['epochs_trained_twice']:>14g} "
          f"{summary['temporaries_left_by_kills']:>12} {'ok' if final_ok else 'FAILED':>10}")
    print(f"final: {summary['final_epochs']} epochs committed, optimizer at "
          f"{summary['final_optimizer_epochs']} epochs of steps, exit {code}; "
          f"{summary['minutes']} min")
    if args.out:
        from common.files import atomic_write_text

        atomic_write_text(args.out, json.dumps({"summary": summary, "kills": rows,
                                                "final": final}, indent=1) + "\n")
    ok = (summary["corrupt_files"] == 0 and summary["epochs_lost_max_per_kill"] <= 1
          and summary["epochs_trained_twice"] == 0 and final_ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
