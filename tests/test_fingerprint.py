"""benchmarks/fingerprint.py: the hash that says a refactor kept a component's outputs bit
for bit is reproducible, is the hash of the part's real outputs, and moves when one moves."""

import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import fingerprint  # noqa: E402


def _hash(capsys, *argv):
    fingerprint.main(list(argv))
    match = re.fullmatch(r"(\w+): (\d+) cases, (\d+) arrays, sha256 ([0-9a-f]{64})\n",
                         capsys.readouterr().out)
    assert match, "one line: the part, the case and array counts, and the hash"
    return int(match.group(2)), int(match.group(3)), match.group(4)


def test_the_grid_fingerprint_is_reproducible_and_its_arrays_are_the_encodings(
        capsys, tmp_path, monkeypatch):
    out = str(tmp_path / "grids.npz")
    cases, arrays, first = _hash(capsys, "grid", "--cases", "12", "--out", out)
    assert (cases, arrays) == (12, 24)
    assert _hash(capsys, "grid", "--cases", "12")[2] == first
    listed = list(fingerprint.grid_cases(12))
    assert any(kwargs["points"] is not None for *_, kwargs in listed)
    assert {kwargs["neighbours"] for *_, kwargs in listed} == {False, True}
    boxes, ignore, size, grid, kwargs = listed[5]
    expected = fingerprint.encode_grid(boxes, ignore, size, grid, **kwargs)
    np.testing.assert_array_equal(np.load(out)["output10"], expected.grid)  # case 5's grid

    # One cell of one case moved is another hash.
    real = fingerprint.encode_grid

    def shifted(*args, **kw):
        targets = real(*args, **kw)
        targets.grid[0, 0, 0] += 1e-3
        return targets

    monkeypatch.setattr(fingerprint, "encode_grid", shifted)
    assert _hash(capsys, "grid", "--cases", "12")[2] != first


def test_the_augment_fingerprint_covers_boxes_and_points(capsys):
    cases, arrays, first = _hash(capsys, "augment", "--cases", "6")
    # Three arrays per case (input, boxes, ignore), a fourth (points) every other case.
    assert (cases, arrays) == (6, 21)
    assert _hash(capsys, "augment", "--cases", "6")[2] == first


def test_the_demo_fingerprint_hashes_every_field_of_each_scene(capsys):
    cases, arrays, first = _hash(capsys, "demo", "--cases", "2")
    assert (cases, arrays) == (2, 8)  # image, boxes, attributes, event
    assert _hash(capsys, "demo", "--cases", "2")[2] == first
    assert _hash(capsys, "demo", "--cases", "3")[2] != first
