"""benchmarks/bench_precision.py: a wrong policy or preset is one line naming the argument,
before any network is built."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_precision  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--policies", "float32,fp8"], "--policies: 'fp8' is not a Keras dtype policy"),
    (["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
])
def test_bad_arguments_are_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(bench_precision, "step_seconds",
                        lambda *a, **k: pytest.fail("no model may be timed"))
    with pytest.raises(SystemExit) as stop:
        bench_precision.main(argv)
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in last and last.startswith("bench_precision.py: error:")
