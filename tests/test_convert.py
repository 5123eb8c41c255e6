"""data/convert.py: any format -> the official WIDER layout -> data.wider reads it back exactly;
the input is never written and existing splits are protected."""

import hashlib
import os

import numpy as np
import pytest

from tools.convert import main
from data.convert import convert_to_wider, wider_names
from data.datasets import load_records
from data.formats import AnnotationWarning
from data.formats.coco import read_coco
from data.formats.labelme import read_labelme
from data.formats.yolo import read_yolo
from data.wider import load_wider_split, read_wider_annotations, wider_split_paths
from common.errors import DatasetError
from helpers import make_coco, make_labelme, make_yolo, write_image


def digest(folder):
    """Hash of every file's path and bytes under `folder`: proves nothing was written there."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            path = os.path.join(root, f)
            h.update(path.encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def assert_exact_round_trip(records, out_root, split="train"):
    images_dir, annotation_path = wider_split_paths(out_root, split)
    back = read_wider_annotations(annotation_path, images_dir).records
    assert len(back) == len(records)
    for original, read in zip(records, back):
        np.testing.assert_array_equal(read.boxes, original.boxes)  # exact, not approximately
        np.testing.assert_array_equal(read.ignore, original.ignore)
        with open(original.path, "rb") as a, open(read.path, "rb") as b:
            assert a.read() == b.read()
    return back


@pytest.mark.parametrize("fmt", ["labelme", "yolo", "coco"])
def test_round_trip_each_format_through_the_wider_layout_is_exact(tmp_path, fmt):
    if fmt == "labelme":
        records, _ = read_labelme(make_labelme(str(tmp_path / "in")))
    elif fmt == "yolo":
        records, _ = read_yolo(make_yolo(str(tmp_path / "in")))
    else:
        records, _ = read_coco(make_coco(str(tmp_path / "in")))
    before = digest(tmp_path / "in")
    result = convert_to_wider(records, str(tmp_path / "out"), "train", progress=False)
    back = assert_exact_round_trip(records, str(tmp_path / "out"))
    assert [r.name for r in back] == ["0--custom/a.jpg", "0--custom/b.jpg", "0--custom/c.jpg"]
    assert result.linked + result.copied == 3
    assert digest(tmp_path / "in") == before
    # The converted root is a WIDER root for the rest of the project.
    assert len(load_records(str(tmp_path / "out"), "train", holdout=False)) == 3


def test_images_are_hard_linked_or_copied(tmp_path):
    records, _ = read_labelme(make_labelme(str(tmp_path / "in")))
    linked = convert_to_wider(records, str(tmp_path / "linked"), progress=False)
    assert linked.linked == 3 and linked.copied == 0
    assert os.path.samefile(linked.records[0].path, records[0].path)
    copied = convert_to_wider(records, str(tmp_path / "copied"), copy=True, progress=False)
    assert copied.copied == 3 and not os.path.samefile(copied.records[0].path, records[0].path)


def test_event_names_from_subfolders():
    names = ["top.jpg", "alice/1.jpg", "bob/x y.jpg", "a/b/c.jpg", "3--Riot/r.jpg", "bob/x_y.jpg"]
    assert wider_names(names) == [
        "0--custom/top.jpg", "2--alice/1.jpg", "3--bob/x_y.jpg", "1--a_b/c.jpg",
        "3--Riot/r.jpg", "3--bob/x_y_1.jpg",
    ]


def test_existing_split_is_refused_without_overwrite(tmp_path):
    records, _ = read_labelme(make_labelme(str(tmp_path / "in")))
    out = str(tmp_path / "out")
    convert_to_wider(records, out, progress=False)
    with pytest.raises(DatasetError, match=r"the train split already exists .* overwrite=True replaces it"):
        convert_to_wider(records[:1], out, progress=False)
    assert len(load_records(out, "train", holdout=False)) == 3  # untouched
    convert_to_wider(records[:1], out, overwrite=True, progress=False)
    assert len(load_records(out, "train", holdout=False)) == 1
    convert_to_wider(records, out, "val", progress=False)  # another split is free
    assert len(load_wider_split(out, "val").records) == 3


def test_output_overlapping_the_input_is_refused(tmp_path, capsys):
    root = make_labelme(str(tmp_path / "in"))
    before = digest(root)
    records, _ = read_labelme(root)
    with pytest.raises(DatasetError, match="lies inside the output"):
        convert_to_wider(records, str(tmp_path), progress=False)
    with pytest.raises(DatasetError, match="lies inside the input"):
        main(["--input", root, "--out", os.path.join(root, "wider")])
    assert digest(root) == before


def test_cli_converts_a_folder(tmp_path, capsys):
    root = make_labelme(str(tmp_path / "in"))
    write_image(tmp_path / "in" / "holiday" / "d.jpg", 90, 70)
    (tmp_path / "in" / "holiday" / "d.json").write_text(
        '{"imagePath": "d.jpg", "shapes": [{"label": "face", "shape_type": "rectangle",'
        ' "points": [[50, 40], [20, 10]]}]}')
    with pytest.warns(AnnotationWarning, match="1 non-rectangle shapes skipped"):
        assert main(["--input", root, "--out", str(tmp_path / "out"), "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 images, 5 faces (1 ignored)" in printed
    back = load_wider_split(str(tmp_path / "out"), "val").records
    assert [r.name for r in back] == ["0--custom/a.jpg", "0--custom/b.jpg", "0--custom/c.jpg",
                                      "1--holiday/d.jpg"]
    np.testing.assert_array_equal(back[3].boxes, [[20, 10, 50, 40]])  # the drawn corners


@pytest.mark.parametrize("flag", ["--out", "--input"])
def test_cli_refuses_an_empty_path(tmp_path, capsys, flag):
    """`--out ''` wrote into the current folder: an empty path is refused in one line."""
    args = {"--input": str(tmp_path / "in"), "--out": str(tmp_path / "out")}
    args[flag] = ""
    with pytest.raises(SystemExit) as info:
        main([x for pair in args.items() for x in pair])
    assert info.value.code == 2
    assert f"argument {flag}: empty path (it would mean the current folder)" in capsys.readouterr().err
