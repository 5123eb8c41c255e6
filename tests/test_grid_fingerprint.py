"""benchmarks/grid_fingerprint.py: the hash that says a refactor kept encode_grid's targets
bit for bit is reproducible, covers every case it lists, and moves when a target moves."""

import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import grid_fingerprint  # noqa: E402


def _hash(capsys, *argv):
    grid_fingerprint.main(list(argv))
    match = re.fullmatch(r"(\d+) cases, sha256 ([0-9a-f]{64})\n", capsys.readouterr().out)
    assert match, "one line: the case count and the hash"
    return int(match.group(1)), match.group(2)


def test_the_fingerprint_is_reproducible_and_its_arrays_are_the_encodings(capsys, tmp_path,
                                                                          monkeypatch):
    out = str(tmp_path / "grids.npz")
    count, first = _hash(capsys, "--cases", "12", "--out", out)
    assert count == 12 and _hash(capsys, "--cases", "12")[1] == first
    saved = np.load(out)
    cases = list(grid_fingerprint.cases(12))
    assert len(saved.files) == 24
    assert any(kwargs["points"] is not None for *_, kwargs in cases)
    assert {kwargs["neighbours"] for *_, kwargs in cases} == {False, True}
    boxes, ignore, size, grid, kwargs = cases[5]
    expected = grid_fingerprint.encode_grid(boxes, ignore, size, grid, **kwargs)
    np.testing.assert_array_equal(saved["grid5"], expected.grid)

    # One cell of one case moved is another hash.
    real = grid_fingerprint.encode_grid

    def shifted(*args, **kw):
        targets = real(*args, **kw)
        targets.grid[0, 0, 0] += 1e-3
        return targets

    monkeypatch.setattr(grid_fingerprint, "encode_grid", shifted)
    assert _hash(capsys, "--cases", "12")[1] != first
