"""Quiet command lines: TensorFlow's C++ start-up lines are filtered, real errors are not."""

import os
import subprocess
import sys

from common.cli import START_UP_NOISE, native_stderr_filtered

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What TF 2.21 printed to a CPU user before any output of ours (train.py, detect.py).
SAMPLE = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796213710.854308   10592 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1796213721.657495   10592 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1796213721.700000   10592 some_kernel.cc:12] a real error: out of memory
"""


def test_the_start_up_lines_match_and_a_real_error_does_not():
    lines = SAMPLE.splitlines()
    assert [bool(START_UP_NOISE.search(line)) for line in lines] == [True, True, True, False]


def test_native_lines_written_to_fd_2_are_filtered_and_the_rest_written_back(capfd):
    with native_stderr_filtered(START_UP_NOISE):
        os.write(2, SAMPLE.encode())
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1796213721.700000   10592 some_kernel.cc:12] a real error: out of memory\n"
    with native_stderr_filtered(None):  # --verbose: every line
        os.write(2, SAMPLE.encode())
    assert capfd.readouterr().err == SAMPLE


def test_starting_tensorflow_through_the_cli_prints_no_start_up_line():
    code = ("import config; from common import cli; cli.start_runtime(config.Config()); "
            "import tensorflow as tf; print(float(tf.constant(2.0) + 1))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3.0"
    noise = [line for line in done.stderr.splitlines() if START_UP_NOISE.search(line)]
    assert noise == [], noise


def test_detect_py_prints_faces_and_no_start_up_line(shared_subset):
    """The README's detect command as a new user runs it (the shipped TFLite model):
    stderr holds our one line about the model and nothing of TensorFlow's."""
    folder = os.path.join(shared_subset, "WIDER_val", "images", "0--Parade")
    photo = os.path.join(folder, sorted(os.listdir(folder))[0])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, os.path.join(REPO, "detect.py"), "--image", photo,
                           "--no-save", "--checkpoint-dir", os.path.join(REPO, "no-such-dir")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "no faces printed"
    assert [l for l in done.stderr.splitlines() if START_UP_NOISE.search(l)] == []
    assert done.stderr.startswith("detect.py: no checkpoint under")
