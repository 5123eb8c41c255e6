"""The demo dataset generator: official WIDER layout, parseable annotations, determinism,
documented face counts / sizes / flags, and the completion marker of ensure_demo_dataset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data.synthetic as synthetic
from config import Config
from data.boxes import InputMapping, box_sizes
from data.grid import encode_grid
from data.image import read_image
from data.synthetic import (
    EVENTS, MARKER, MAX_FACE_FRACTION, MAX_FACES, MIN_VALID_FACE, TINY_FACE,
    ensure_demo_dataset, make_demo_dataset, synthesize_image,
)
from data.wider import DUMMY_LINE, read_wider_annotations, wider_split_paths
from common.errors import ConfigError, DatasetError
from tools.make_demo import main as make_demo_main

def images_dir(root, split):
    return wider_split_paths(root, split)[0]


def annotation_path(root, split):
    return wider_split_paths(root, split)[1]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_VAL = 16, 6


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo set (seed 0) and the counts make_demo_dataset returned."""
    root = str(tmp_path_factory.mktemp("demo"))
    counts = make_demo_dataset(root, NUM_TRAIN, NUM_VAL, seed=0, progress=False)
    return root, counts


@pytest.fixture(scope="module")
def samples():
    """60 drawn images from one stream family, for distribution checks without disk."""
    return [synthesize_image(np.random.default_rng([7, 0, i])) for i in range(60)]


def _read(root, split):
    return read_wider_annotations(annotation_path(root, split), images_dir(root, split))


def _files(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_layout_is_the_official_wider_layout(demo):
    root, _ = demo
    assert sorted(os.listdir(os.path.join(root, "wider_face_split"))) == [
        "wider_face_train_bbx_gt.txt", "wider_face_val_bbx_gt.txt"]
    for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        folder = os.path.join(root, f"WIDER_{split}", "images")
        assert set(os.listdir(folder)) <= set(EVENTS)
        jpgs = [f for e in os.listdir(folder) for f in os.listdir(os.path.join(folder, e))]
        assert len(jpgs) == n and all(f.endswith(".jpg") for f in jpgs)
    assert os.path.isfile(os.path.join(root, MARKER))


def test_annotations_parse_and_boxes_lie_inside_their_images(demo):
    root, counts = demo
    for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        annotations = _read(root, split)
        assert annotations.num_images == n and annotations.dropped_boxes == 0
        assert counts[split] == {"images": n, "faces": annotations.num_boxes,
                                 "invalid": annotations.num_ignored}
        for record in annotations.records:
            assert record.name.split("/")[0] in EVENTS
            h, w = read_image(record.path).shape[:2]
            b = record.boxes
            assert np.all(b == np.round(b)), "WIDER boxes are integers"
            assert np.all(box_sizes(b) > 0)
            assert np.all(b[:, :2] >= 0)
            assert np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h)
            assert record.attributes.shape == (len(b), 6)


def test_images_without_faces_are_written_with_the_dummy_line(demo):
    root, _ = demo
    found = 0
    for split in ("train", "val"):
        empty = {r.name for r in _read(root, split).records if len(r.boxes) == 0}
        found += len(empty)
        with open(annotation_path(root, split), encoding="utf-8") as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if line in empty:
                assert lines[i + 1] == "0" and lines[i + 2].split() == DUMMY_LINE.split()
    assert found, "seed 0 draws some images without faces"


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    make_demo_dataset(a, 4, 2, seed=3, progress=False)
    make_demo_dataset(b, 4, 2, seed=3, progress=False)
    make_demo_dataset(c, 4, 2, seed=4, progress=False)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    for split in ("train", "val"):
        rel = os.path.relpath(annotation_path(a, split), a)
        assert files_a[rel] != files_c[rel]
    images = lambda files: {v for k, v in files.items() if k.endswith(".jpg")}  # noqa: E731
    assert not images(files_a) & images(files_c)


def test_val_is_a_fresh_draw_not_a_copy_of_train(demo):
    root, _ = demo
    train = {open(r.path, "rb").read() for r in _read(root, "train").records}
    val = {open(r.path, "rb").read() for r in _read(root, "val").records}
    assert not train & val


def test_face_counts_sizes_and_image_sizes_are_as_documented(samples):
    counts = [len(s.boxes) for s in samples]
    assert min(counts) == 0 and max(counts) <= MAX_FACES and max(counts) >= 5
    widths = []
    for s in samples:
        h, w = s.image.shape[:2]
        assert 320 <= w <= 640 and 0.6 - 0.01 <= w / h <= 1.6 + 0.01
        sizes, invalid = box_sizes(s.boxes), s.attributes[:, 3] == 1
        assert np.all(sizes[:, 0] <= MAX_FACE_FRACTION * min(h, w) * 1.6 + 2)  # roll widens
        tiny = sizes.min(axis=1) < TINY_FACE
        assert np.all(invalid[tiny]), "faces below TINY_FACE px are marked invalid"
        # Valid faces are either drawn at MIN_VALID_FACE or more, or tiny ones whose
        # rolled box reached TINY_FACE; either way not below TINY_FACE.
        assert np.all(sizes[~invalid].min(axis=1) >= TINY_FACE)
        widths.extend(sizes[~invalid, 0])
    widths = np.array(widths)
    assert np.mean((widths >= 20) & (widths <= 120)) > 0.75, "the bulk is 20-120 px"
    assert np.mean(widths < 22) < 0.15 and np.mean(widths >= MIN_VALID_FACE) > 0.97
    assert 30 <= np.median(widths) <= 70


def test_faces_fall_in_distinct_cells_of_the_default_grid(samples):
    config = Config()
    for s in samples:
        h, w = s.image.shape[:2]
        boxes = InputMapping.fit(w, h, config.input_size).to_input(s.boxes)
        targets = encode_grid(boxes, s.attributes[:, 3] > 0, config.input_size, config.grid_size)
        assert targets.collisions == 0


def test_flags_take_wider_values_and_each_level_occurs(samples):
    attributes = np.concatenate([s.attributes for s in samples])
    maxima = [2, 1, 1, 1, 2, 1]  # blur expression illumination invalid occlusion pose
    assert attributes.min() >= 0 and np.all(attributes.max(axis=0) == maxima)
    # Heavily occluded or tiny explains every invalid face.
    for s in samples:
        bad = s.attributes[:, 3] == 1
        tiny = box_sizes(s.boxes).min(axis=1) < TINY_FACE
        assert np.all(tiny[bad] | (s.attributes[bad, 4] == 2))


def test_ensure_keeps_a_complete_set_and_regenerates_an_incomplete_one(tmp_path, monkeypatch):
    root = str(tmp_path / "demo")
    assert ensure_demo_dataset(root, 3, 2, seed=0, progress=False) == root
    calls = []
    real = synthetic.make_demo_dataset
    monkeypatch.setattr(synthetic, "make_demo_dataset",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    ensure_demo_dataset(root, 3, 2, seed=0, progress=False)
    assert calls == [], "a complete set with the same parameters is kept"

    os.remove(os.path.join(root, MARKER))
    ensure_demo_dataset(root, 3, 2, seed=0, progress=False)
    assert len(calls) == 1 and os.path.isfile(os.path.join(root, MARKER))

    ensure_demo_dataset(root, 2, 2, seed=0, progress=False)  # other parameters
    assert len(calls) == 2
    with open(os.path.join(root, MARKER), encoding="utf-8") as f:
        assert json.load(f)["num_train"] == 2
    jpgs = [f for _, _, fs in os.walk(images_dir(root, "train")) for f in fs]
    assert len(jpgs) == 2, "images of the larger earlier set are removed"


def test_an_interrupted_generation_leaves_no_marker(tmp_path, monkeypatch):
    root = str(tmp_path / "demo")
    make_demo_dataset(root, 3, 1, seed=0, progress=False)

    def fail(rng):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "synthesize_image", fail)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(root, 5, 1, seed=1, progress=False)
    assert not os.path.exists(os.path.join(root, MARKER))
    assert synthetic.read_marker(root) is None


@pytest.mark.parametrize("kwargs, name", [({"num_train": -1}, "num_train"),
                                          ({"num_val": 2.5}, "num_val"),
                                          ({"seed": -3}, "seed")])
def test_bad_arguments_raise_a_config_error_naming_them(tmp_path, kwargs, name):
    with pytest.raises(ConfigError, match=name):
        make_demo_dataset(str(tmp_path), progress=False, **kwargs)


def test_cli_prints_counts_and_reports_bad_arguments_in_one_line(tmp_path, capsys):
    root = str(tmp_path / "cli")
    assert make_demo_main(["--root", root, "--train", "3", "--val", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 images" in out and "val: 2 images" in out
    done = subprocess.run([sys.executable, "tools/make_demo.py", "--root", root, "--train", "-1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "num_train=-1" in done.stderr


def test_a_folder_that_is_not_a_demo_set_is_refused_unless_overwrite(tmp_path):
    """`make_demo.py --root EXISTING` replaced a user's photo named like a demo image: a
    non-empty folder that is not a demo set is refused naming a file of it, and left as
    it was; --overwrite writes anyway. A demo set (complete or interrupted) is rewritten."""
    root = tmp_path / "photos"
    photo = root / "WIDER_train" / "images" / "0--Parade" / "0_Parade_demo_0.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"my holiday photo")
    (root / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError) as info:
        make_demo_dataset(str(root), 2, 1, progress=False)
    message = str(info.value)
    assert message.startswith(f"{root}: not empty and not a demo set (it holds ")
    assert "make_demo.py --overwrite" in message and "\n" not in message
    assert photo.read_bytes() == b"my holiday photo"
    done = subprocess.run([sys.executable, "tools/make_demo.py", "--root", str(root), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("make_demo.py: error: ")
    assert done.stderr.strip().count("\n") == 0 and photo.read_bytes() == b"my holiday photo"
    make_demo_dataset(str(root), 2, 1, progress=False, overwrite=True)
    assert synthetic.read_marker(str(root)) is not None
    # A demo set, complete or interrupted (no marker), is the generator's to rewrite.
    demo = str(tmp_path / "demo")
    make_demo_dataset(demo, 2, 1, progress=False)
    make_demo_dataset(demo, 3, 1, progress=False)
    os.remove(os.path.join(demo, synthetic.MARKER))
    make_demo_dataset(demo, 2, 1, progress=False)


@pytest.mark.parametrize("args, expected", [
    (["--seed", str(2**32)], f"--seed {2**32}: must be in [0, {2**32 - 1}]"),
    (["--root", ""], "argument --root: empty path (it would mean the current folder)"),
])
def test_cli_refuses_what_train_py_refuses_and_empty_roots(tmp_path, args, expected):
    """make_demo.py --seed takes train.py's range (Config.seed), and --root '' would write
    into the current folder."""
    done = subprocess.run([sys.executable, "tools/make_demo.py", "--quiet", "--train", "1", "--val", "1",
                           "--root", str(tmp_path / "d")] + args,
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr.strip().splitlines()[-1]  # one line (after argparse's usage)
    assert not os.path.exists(tmp_path / "d")
