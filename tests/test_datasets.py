"""data/datasets.py: source specs, format detection, splits, weighted mixing, negatives,
and the records train.py gets, down to the generator's targets."""

import json
import os

import numpy as np
import pytest

from config import Config
from data.datasets import (
    VAL_FRACTION,
    Source,
    detect_format,
    holdout_split,
    load_negatives,
    load_records,
    mix_records,
    parse_sources,
    read_source,
    training_records,
    validation_records,
)
from data.formats import AnnotationWarning
from data.grid import CLASS
from data.records import ImageRecord
from data.wider import write_wider_annotations
from common.errors import ConfigError, DatasetError
from helpers import make_flat_labelme
from helpers import make_coco, make_labelme, make_yolo, write_image

SMALL = dict(input_size=64, grid_size=4, batch_size=4, seed=7)


def make_wider(root, n_train=6, n_val=3):
    """A WIDER-layout root: one 64x48 face per image, in 0--custom."""
    for split, n in (("train", n_train), ("val", n_val)):
        records = []
        for i in range(n):
            name = f"0--custom/{split}_{i}.jpg"
            path = write_image(os.path.join(root, f"WIDER_{split}", "images", name), 96, 64)
            records.append(ImageRecord(path, name, [[20, 10, 40, 44]], [False]))
        write_wider_annotations(
            records, os.path.join(root, "wider_face_split", f"wider_face_{split}_bbx_gt.txt"))
    return str(root)




# --- source specs -----------------------------------------------------------------------------

def test_parse_sources_syntax():
    assert parse_sources("data/WIDER:1.0,labelme=my_faces:3") == [
        Source("data/WIDER", 1.0, "auto"), Source("my_faces", 3.0, "labelme")]
    assert parse_sources(" a , b:0.5 ", default_format="yolo") == [
        Source("a", 1.0, "yolo"), Source("b", 0.5, "yolo")]
    # A colon that is not followed by a number belongs to the path (Windows drives).
    assert parse_sources("C:\\data\\faces") == [Source("C:\\data\\faces", 1.0, "auto")]
    assert parse_sources("C:\\faces:2") == [Source("C:\\faces", 2.0, "auto")]
    # `x=` that is not a format name is part of the path.
    assert parse_sources("run=3/faces") == [Source("run=3/faces", 1.0, "auto")]


@pytest.mark.parametrize("spec, message", [
    ("a:-1", r"^dataset='a:-1': weight -1 must be a number >= 0"),
    ("a,,b", r"^dataset='a,,b': empty entry"),
    ("a:nan", r"weight nan must be a number >= 0"),
])
def test_parse_sources_rejects_bad_entries(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_sources(spec)


def test_parse_sources_rejects_unknown_format():
    with pytest.raises(ConfigError, match=r"^dataset_format='pascal': must be auto or one of"):
        parse_sources("a", default_format="pascal")


# --- detection and missing sources ----------------------------------------------------------

def test_detect_format_of_each_layout(tmp_path):
    assert detect_format(make_wider(tmp_path / "w", 1, 1)) == "wider"
    assert detect_format(make_labelme(str(tmp_path / "lm"))) == "labelme"
    assert detect_format(make_yolo(str(tmp_path / "yolo"))) == "yolo"
    coco_file = make_coco(str(tmp_path / "coco"))
    assert detect_format(str(tmp_path / "coco")) == "coco"
    assert detect_format(coco_file) == "coco"
    write_image(tmp_path / "just_images" / "x.jpg", 20, 20)
    with pytest.raises(DatasetError, match="cannot tell the dataset format.*name it with dataset_format"):
        detect_format(str(tmp_path / "just_images"))


def test_detect_format_passes_over_unusable_json_without_a_traceback(tmp_path):
    """A .json nested 100,000 deep or holding a 5000-digit integer is not labelme / COCO:
    format detection goes on to the other layouts (json's RecursionError used to escape)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "huge.json").write_text('{"shapes": [' + "9" * 5000 + "]}")
    write_image(folder / "x.jpg", 20, 20)
    assert detect_format(str(folder)) == "labelme"  # huge.json has shapes: still labelme
    (folder / "huge.json").unlink()
    with pytest.raises(DatasetError, match="cannot tell the dataset format"):
        detect_format(str(folder))


def test_missing_sources_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/WIDER here
    with pytest.raises(DatasetError, match=r"python tools/download\.py.*python train\.py --demo"):
        load_records(os.path.join("data", "WIDER"))
    with pytest.raises(DatasetError, match=r"^nope: dataset not found; .*python tools/download\.py.*--demo"):
        load_records("nope")
    with pytest.raises(DatasetError, match=r"^dataset='data/WIDER'|WIDER FACE not found"):
        training_records(Config())


def test_wider_root_without_val_split_is_held_out_like_a_pool(tmp_path):
    """A WIDER-layout set with only a train split validates on a seeded 10 % of it."""
    root = make_wider(tmp_path / "w", 20, 0)
    os.remove(os.path.join(root, "wider_face_split", "wider_face_val_bbx_gt.txt"))
    train = [r.name for r in load_records(root, "train")]
    val = [r.name for r in load_records(root, "val")]
    assert val and train and not set(train) & set(val)
    assert len(train) + len(val) == 20
    assert val == [r.name for r in load_records(root, "val")]  # the same split every run
    # Read whole (no hold-out: a --val-dataset, a conversion) it is still the train split.
    assert len(load_records(root, "train", holdout=False)) == 20
    with pytest.raises(DatasetError, match=r"no val split .*python tools/convert\.py --split val.*set val_dataset"):
        load_records(root, "val", holdout=False)


def test_custom_missing_images_are_left_out_and_counted(tmp_path):
    root = make_labelme(str(tmp_path / "lm"), extra_shapes=False)
    os.remove(os.path.join(root, "b.jpg"))
    with pytest.warns(AnnotationWarning, match="1 missing image"):
        loaded = read_source(root, "train", holdout=False)
    assert [r.name for r in loaded.records] == ["a.jpg", "c.jpg"]
    assert loaded.format == "labelme" and loaded.missing_images == 1


def test_wider_dropped_boxes_are_shown_to_whoever_asks_for_records(tmp_path):
    """Boxes with w or h <= 0 are left out of a WIDER source: the count and the lines reach
    the user as an AnnotationWarning attributed to the caller (here this test)."""
    root = make_wider(tmp_path / "w", 2, 2)
    path = os.path.join(root, "wider_face_split", "wider_face_val_bbx_gt.txt")
    with open(path) as f:
        lines = f.read().splitlines()
    lines[5] = "20 10 0 44 0 0 0 0 0 0"  # the second image's face: zero width
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.warns(AnnotationWarning) as caught:
        loaded = read_source(root, "val")
    assert [str(w.message) for w in caught] == [
        f"{path}: 1 face line with w or h under 0.01 px left out (line 6)"]
    assert caught[0].filename == __file__
    assert [len(r.boxes) for r in loaded.records] == [1, 0]


def test_custom_absurd_boxes_are_counted_in_the_source_warning(tmp_path):
    """A labelme box at 1e12 px or wholly outside its image: left out, counted, warned."""
    root = make_labelme(str(tmp_path / "lm"), extra_shapes=False)
    with open(os.path.join(root, "c.json")) as f:
        doc = json.load(f)
    doc["shapes"] = [{"label": "face", "shape_type": "rectangle", "points": [[1e12, 1], [1e12 + 5, 9]]},
                     {"label": "face", "shape_type": "rectangle", "points": [[500, 1], [510, 9]]}]
    with open(os.path.join(root, "c.json"), "w") as f:
        json.dump(doc, f)
    with pytest.warns(AnnotationWarning, match=r"2 problems left out \(2 bad annotation\)") as caught:
        records = load_records(root, "train", holdout=False)
    assert "c.json: shapes[0].points: x=1e+12 is beyond 100000 px" in str(caught[0].message)
    assert "c.json: shapes[1].points: box x=500 y=1 w=10 h=8 lies wholly outside the 120x120 image" \
        in str(caught[0].message)
    assert [len(r.boxes) for r in records] == [2, 2, 0]


# --- splits -----------------------------------------------------------------------------------

def test_holdout_split_is_deterministic_disjoint_and_stable(tmp_path):
    root = make_flat_labelme(tmp_path / "lm", 40)
    train = load_records(root, "train", seed=3)
    val = load_records(root, "val", seed=3)
    names = {r.name for r in train} | {r.name for r in val}
    assert len(names) == 40 and not {r.name for r in train} & {r.name for r in val}
    assert 1 <= len(val) <= 12  # about VAL_FRACTION of 40
    assert [r.name for r in load_records(root, "val", seed=3)] == [r.name for r in val]
    assert {r.name for r in load_records(root, "val", seed=4)} != {r.name for r in val}
    # Photos added later never move an earlier validation image into training.
    make_flat_labelme(tmp_path / "lm", 20, start=40)
    val_after = {r.name for r in load_records(root, "val", seed=3)}
    assert {r.name for r in val} <= val_after
    # Whole pool when asked (an explicit --val-dataset, conversion).
    assert len(load_records(root, "val", holdout=False)) == 60


def test_holdout_keeps_one_validation_image_of_a_small_pool():
    records = [ImageRecord(f"{i}.jpg", f"{i}.jpg") for i in range(3)]
    assert VAL_FRACTION < 1 / 3
    for seed in range(5):
        val = holdout_split(records, "val", seed)
        assert len(val) >= 1 and len(val) + len(holdout_split(records, "train", seed)) == 3


def test_train_and_val_folders_are_used_as_splits(tmp_path):
    make_flat_labelme(tmp_path / "lm" / "train", 5)
    make_flat_labelme(tmp_path / "lm" / "valid", 2, start=100)
    root = str(tmp_path / "lm")
    assert detect_format(root) == "labelme"
    assert len(load_records(root, "train")) == 5
    assert [r.name for r in load_records(root, "val")] == ["img_0100.jpg", "img_0101.jpg"]


def test_yolo_ultralytics_splits_and_coco_split_files(tmp_path):
    yolo = tmp_path / "yolo"
    make_yolo(str(yolo / "tmp"))
    for split, names in (("train", ["a.jpg", "b.jpg"]), ("val", ["c.jpg"])):
        for name in names:
            os.renames(yolo / "tmp" / "images" / name, yolo / "images" / split / name)
            label = yolo / "tmp" / "labels" / name.replace(".jpg", ".txt")
            if label.exists():
                os.renames(label, yolo / "labels" / split / label.name)
    os.renames(yolo / "tmp" / "classes.txt", yolo / "classes.txt")
    assert [r.name for r in load_records(str(yolo), "train", labels="face")] == ["a.jpg", "b.jpg"]
    with pytest.warns(AnnotationWarning, match=r"1 images without annotation file \(used as background\)"):
        assert [r.name for r in load_records(str(yolo), "val")] == ["c.jpg"]

    coco_file = make_coco(str(tmp_path / "coco"))
    with open(coco_file) as f:
        doc = json.load(f)
    train, val = dict(doc), dict(doc)
    train["images"], val["images"] = doc["images"][:2], doc["images"][2:]
    for part in (train, val):
        ids = {image["id"] for image in part["images"]}
        part["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
    for name, part in (("instances_train.json", train), ("instances_val.json", val)):
        with open(tmp_path / "coco" / "annotations" / name, "w") as f:
            json.dump(part, f)
    os.remove(coco_file)
    assert [r.name for r in load_records(str(tmp_path / "coco"), "train")] == ["a.jpg", "b.jpg"]
    assert [r.name for r in load_records(str(tmp_path / "coco"), "val")] == ["c.jpg"]


# --- mixing -----------------------------------------------------------------------------------

def _named(prefix, n):
    return [ImageRecord(f"{prefix}{i}.jpg", f"{prefix}{i}.jpg") for i in range(n)]


def test_mix_records_gives_the_weighted_proportions_deterministically():
    wider, mine, half = _named("w", 10), _named("m", 4), _named("h", 10)
    mixed = mix_records([(wider, 1.0), (mine, 3.0), (half, 0.5)], seed=11)
    counts = {p: sum(r.name.startswith(p) for r in mixed) for p in "wmh"}
    assert counts == {"w": 10, "m": 12, "h": 5}
    assert all(sum(r.name == m.name for r in mixed) == 3 for m in mine)
    assert len({r.name for r in mixed if r.name.startswith("h")}) == 5  # no repeats
    again = mix_records([(wider, 1.0), (mine, 3.0), (half, 0.5)], seed=11)
    assert [r.name for r in again] == [r.name for r in mixed]
    other_epochs = {tuple(r.name for r in mix_records([(half, 0.5)], 11, epoch=e)) for e in range(6)}
    assert len(other_epochs) > 1  # a caller may redraw the fractional part per epoch
    assert mix_records([(wider, 0.0)], seed=1) == []


def test_training_and_validation_records_mix_sources(tmp_path):
    wider = make_wider(tmp_path / "w", n_train=6, n_val=3)
    mine = make_flat_labelme(tmp_path / "mine", 20)
    negatives = tmp_path / "backgrounds"
    for i in range(4):
        write_image(negatives / f"bg{i}.jpg", 64, 48, value=40)
    config = Config(dataset=f"{wider}:1,labelme={mine}:3", negatives=str(negatives), **SMALL)

    own_train = load_records(mine, "train", seed=config.seed)
    own_val = load_records(mine, "val", seed=config.seed)
    train = training_records(config)
    assert len(train) == 6 + 3 * len(own_train) + 4
    assert sum(r.path.startswith(mine) for r in train) == 3 * len(own_train)
    assert sum(len(r.boxes) == 0 for r in train) == 4
    assert [r.name for r in training_records(config)] == [r.name for r in train]

    val = validation_records(config)
    assert len(val) == 3 + len(own_val)  # WIDER val + the hold-out; no negatives, no weights
    assert not {r.name for r in val if r.path.startswith(mine)} & {r.name for r in own_train}

    explicit = config.replace(val_dataset=mine)
    assert len(validation_records(explicit)) == 20  # an explicit val source is used whole

    limited = config.replace(max_images=7)
    assert len(training_records(limited)) == 7
    assert {r.name for r in training_records(limited)} <= {r.name for r in train}


def test_single_image_source_has_no_validation_images(tmp_path):
    mine = make_flat_labelme(tmp_path / "mine", 1)
    config = Config(dataset=mine, **SMALL)
    assert len(training_records(config)) == 1
    with pytest.raises(DatasetError, match="^dataset=.*: no validation images .* set val_dataset"):
        validation_records(config)


# --- negatives and the generator ---------------------------------------------------------------

def test_load_negatives_gives_records_without_boxes(tmp_path):
    write_image(tmp_path / "bg" / "a.jpg", 64, 48)
    write_image(tmp_path / "bg" / "sub" / "b.png", 64, 48)
    records = load_negatives(str(tmp_path / "bg"))
    assert [r.name for r in records] == ["a.jpg", "sub/b.png"]
    assert all(r.boxes.shape == (0, 4) and r.ignore.shape == (0,) for r in records)
    with pytest.raises(DatasetError, match="negatives folder not found"):
        load_negatives(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no images in the negatives folder"):
        load_negatives(str(tmp_path / "empty"))


def test_generator_gives_all_background_targets_for_negatives_and_faces_for_the_rest(tmp_path):
    """Mixed records (WIDER + labelme + negatives) through the real FaceGridDataset."""
    from data.data_generator import FaceGridDataset

    wider = make_wider(tmp_path / "w", n_train=3, n_val=1)
    mine = make_flat_labelme(tmp_path / "mine", 3)
    for i in range(3):
        write_image(tmp_path / "bg" / f"bg{i}.jpg", 64, 48, value=30)
    config = Config(dataset=f"{wider},{mine}:2", negatives=str(tmp_path / "bg"), **SMALL)
    records = training_records(config)
    dataset = FaceGridDataset(records, config, training=False)  # fixed order: records' order
    targets = np.concatenate([dataset[i][1] for i in range(len(dataset))])
    images = np.concatenate([dataset[i][0] for i in range(len(dataset))])
    assert targets.shape == (len(records), 4, 4, 5) and images.shape == (len(records), 64, 64, 3)
    for record, target in zip(records, targets):
        if len(record.boxes) == 0:
            assert np.all(target[..., CLASS] == 0) and np.all(target == 0), record.name
        else:
            assert (target[..., CLASS] == 1).sum() == 1, record.name

    training = FaceGridDataset(records, config, training=True)
    batch_images, batch_targets = training[0]
    assert batch_images.shape == (4, 64, 64, 3) and batch_targets.shape == (4, 4, 4, 5)
    assert set(np.unique(batch_targets[..., CLASS])) <= {-1.0, 0.0, 1.0}
