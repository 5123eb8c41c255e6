"""data/stats.py (and stats.py, its command line) on a tiny dataset whose every count is known: faces, ignored, missing,
too small, size histogram in grid cells and collisions at the default 224 / 7 grid."""

import json
import os

import numpy as np
import pytest

from config import Config
from data.boxes import xywh_to_xyxy, xyxy_to_xywh
from data.formats import AnnotationWarning
from data.records import ImageRecord
from data.stats import SIZE_EDGES, dataset_stats, format_stats, size_bin_labels
from tools.stats import main
from helpers import labelme_shape, write_image

# At input 224, grid 7, a cell is 32 px; a 224x224 image maps onto the input 1:1. Boxes x y w h
# (the records get their corners).
A_FACES = [
    ([0, 0, 6, 6], False),         # 0.19 cells                     -> <0.25
    ([100, 100, 3, 8], False),     # smaller side 3 < 4 px: too small -> <0.25
    ([40, 150, 20, 20], False),    # 0.62 cells                     -> 0.5-1
    ([150, 10, 48, 48], False),    # 1.5 cells, centre cell (1, 5)  -> 1-2
    ([165, 40, 10, 10], False),    # 0.31 cells, also cell (1, 5): collides with the 48 px face
    ([10, 100, 30, 30], True),     # ignored in the annotations
]
B_FACE = [0, 0, 400, 200]  # in a 448x224 image: letterbox halves it, 200x100 -> 4.4 cells
EXPECTED_BINS = [2, 1, 1, 1, 0, 1]


def tiny_records(tmp_path):
    a = write_image(tmp_path / "a.jpg", 224, 224)
    b = write_image(tmp_path / "b.jpg", 448, 224)
    c = write_image(tmp_path / "c.jpg", 100, 80)
    boxes, ignore = zip(*A_FACES)
    return [
        ImageRecord(a, "a.jpg", xywh_to_xyxy(boxes), ignore),
        ImageRecord(b, "b.jpg", xywh_to_xyxy([B_FACE]), [False]),
        ImageRecord(c, "c.jpg"),
        ImageRecord(str(tmp_path / "gone.jpg"), "gone.jpg", xywh_to_xyxy([[1, 1, 10, 10]]), [False]),
    ]


def test_size_bin_labels():
    assert size_bin_labels() == ["<0.25", "0.25-0.5", "0.5-1", "1-2", "2-4", ">4"]
    assert len(SIZE_EDGES) + 1 == len(EXPECTED_BINS)


def test_dataset_stats_counts(tmp_path):
    stats = dataset_stats(tiny_records(tmp_path), Config(), progress=False)
    assert (stats.images, stats.negatives, stats.faces, stats.ignored) == (4, 1, 7, 1)
    assert stats.missing == 1 and stats.small == 1
    assert stats.size_counts == EXPECTED_BINS
    assert (stats.collisions, stats.images_with_collisions) == (1, 1)
    # A finer grid (cells of 8 px at grid 28) separates the two faces; sizes grow in cells.
    fine = dataset_stats(tiny_records(tmp_path), Config(grid_size=28), progress=False)
    assert fine.collisions == 0
    assert fine.size_counts == [0, 0, 2, 1, 1, 2]


def test_cli_prints_the_counts_of_a_labelme_folder(tmp_path, capsys):
    records = tiny_records(tmp_path / "ds")
    for record in records:
        shapes = [labelme_shape(box, ignore=bool(ign))
                  for box, ign in zip(xyxy_to_xywh(record.boxes).tolist(), record.ignore)]
        doc = {"imagePath": os.path.basename(record.path), "shapes": shapes}
        with open(os.path.splitext(record.path)[0] + ".json", "w") as f:
            json.dump(doc, f)
    with pytest.warns(AnnotationWarning, match=r"gone.json: imagePath: gone.jpg not found"):
        assert main(["--dataset", str(tmp_path / "ds"), "--format", "labelme"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line[:16].strip(): line[16:].strip() for line in lines}
    assert table["images"] == "3  (1 without faces)"  # gone.json's image is missing: left out
    assert table["faces"] == "6"
    assert table["ignored faces"] == "1"
    assert table["missing files"] == "1"
    assert table["too small"].startswith("1 ")
    assert table["collisions"].startswith("1  in 1 images")
    bins = [int(line.split()[1]) for line in lines if line.startswith("  ") and "%" in line]
    assert bins == EXPECTED_BINS


def test_format_stats_histogram_rows(tmp_path):
    stats = dataset_stats(tiny_records(tmp_path), Config(), progress=False)
    text = format_stats(stats)
    assert "at input 224, grid 7x7 (cell 32 px), 3 images measured:" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert [r[0] for r in rows] == size_bin_labels()
    assert [float(r[2].rstrip("%")) for r in rows] == [round(100 * n / 6, 1) for n in EXPECTED_BINS]
    assert np.isclose(sum(float(r[2].rstrip("%")) for r in rows), 100, atol=0.5)
