"""Helpers shared by the test modules (builders of small datasets, stand-in networks,
tiny configurations). Test modules import from here or from conftest.py, never from
each other."""

import json
import os
import struct

import cv2
import numpy as np

from config import Config
from data.boxes import xywh_to_xyxy
from data.records import ImageRecord
from data.wider import read_wider_annotations, write_wider_annotations


# name -> (width, height, boxes xywh, ignore): what the builders below write in each file
# format (COCO's bbox is xywh as it is). Fractional pixels on purpose.
FACES = {
    "a.jpg": (160, 120, [[10.5, 20.25, 30.0, 40.0], [80.0, 10.0, 25.5, 30.75]], [False, False]),
    "b.jpg": (200, 100, [[5.0, 5.0, 50.0, 60.0], [120.0, 30.0, 40.0, 44.0]], [False, True]),
    "c.jpg": (120, 120, [], []),
}


def write_image(path, width, height, value=90):
    """A small JPEG with some structure (a gradient), written with OpenCV."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    image = np.clip(np.broadcast_to(x, (height, width, 3)) * 0.5 + value, 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return str(path)


def labelme_shape(box, label="face", order=0, ignore=False):
    """A labelme rectangle for an xywh box; `order` picks which two corners, in which order."""
    x, y, w, h = box
    corners = [
        [[x, y], [x + w, y + h]],
        [[x + w, y + h], [x, y]],  # dragged up-left
        [[x, y + h], [x + w, y]],  # dragged up-right
        [[x + w, y], [x, y + h]],  # dragged down-left
    ][order % 4]
    return {"label": label, "points": corners, "group_id": None, "shape_type": "rectangle",
            "flags": {"ignore": True} if ignore else {}}


def make_labelme(root, faces=FACES, extra_shapes=True):
    """labelme folder: one .json beside each image, corners in every order."""
    os.makedirs(root, exist_ok=True)
    k = 0
    for name, (w, h, boxes, ignore) in faces.items():
        write_image(os.path.join(root, name), w, h)
        shapes = []
        for box, ign in zip(boxes, ignore):
            shapes.append(labelme_shape(box, order=k, ignore=ign))
            k += 1
        if extra_shapes and name == "a.jpg":
            shapes.append({"label": "face", "points": [[1, 1], [5, 1], [3, 6]],
                           "shape_type": "polygon", "flags": {}})
        doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": name,
               "imageData": None, "imageHeight": h, "imageWidth": w}
        with open(os.path.join(root, os.path.splitext(name)[0] + ".json"), "w") as f:
            json.dump(doc, f)
    return str(root)


def make_yolo(root, faces=FACES, class_id=1):
    """YOLO folder: images/ + labels/ + classes.txt (class 1 = face); no ignore in YOLO."""
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("person\nface\n")
    for name, (w, h, boxes, _) in faces.items():
        write_image(os.path.join(root, "images", name), w, h)
        if not boxes:
            continue  # an image without a label file: background
        lines = []
        for x, y, bw, bh in boxes:
            lines.append(f"{class_id} {(x + bw / 2) / w:.10f} {(y + bh / 2) / h:.10f} "
                         f"{bw / w:.10f} {bh / h:.10f}")
        with open(os.path.join(root, "labels", os.path.splitext(name)[0] + ".txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(root)


def make_coco(root, faces=FACES):
    """COCO folder: annotations/instances.json + images/; ignored faces as iscrowd."""
    images, annotations = [], []
    for i, (name, (w, h, boxes, ignore)) in enumerate(faces.items(), start=1):
        write_image(os.path.join(root, "images", name), w, h)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for box, ign in zip(boxes, ignore):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1,
                                "bbox": box, "iscrowd": int(ign), "area": box[2] * box[3]})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "person"}]}
    path = os.path.join(root, "annotations", "instances.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def wider_twin(tmp_path, faces=FACES, with_ignore=True):
    """The same faces written as a WIDER annotation file and read back by data.wider
    (records hold corners: the table's xywh boxes become x1, y1, x2, y2)."""
    records = [
        ImageRecord(path=name, name=f"0--custom/{name}", boxes=xywh_to_xyxy(np.asarray(b, np.float64)),
                    ignore=np.asarray(ig, bool) & with_ignore)
        for name, (_, _, b, ig) in faces.items()
    ]
    path = str(tmp_path / "twin_bbx_gt.txt")
    write_wider_annotations(records, path)
    return {os.path.basename(r.name): r for r in read_wider_annotations(path, "images").records}


def assert_same_faces(records, twin):
    """Each record matches its WIDER twin by file name: boxes within 1e-3 px, ignore flags."""
    by_name = {os.path.basename(r.name): r for r in records}
    assert sorted(by_name) == sorted(twin)
    for name, expected in twin.items():
        got = by_name[name]
        assert got.boxes.dtype == np.float32 and got.boxes.shape == expected.boxes.shape, name
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-3, err_msg=name)
        np.testing.assert_array_equal(got.ignore, expected.ignore, err_msg=name)


def make_flat_labelme(root, n, start=0):
    """n labelme images img_XXXX.jpg with one 30x36 face each."""
    faces = {f"img_{i:04d}.jpg": (80, 60, [[10.0, 8.0, 30.0, 36.0]], [False])
             for i in range(start, start + n)}
    return make_labelme(str(root), faces, extra_shapes=False)


def scene(width, height, face=None):
    """A dark (height, width, 3) BGR image with a bright rectangle at `face` (x1, y1, x2, y2)."""
    image = np.full((height, width, 3), 40, np.uint8)
    if face is not None:
        x1, y1, x2, y2 = face
        image[y1:y2, x1:x2] = 255
    return image


def bright_box_network(input_size, grid_size):
    """A stand-in network: 'detects' the bright rectangle of each input at score 0.9."""
    from data.grid import CLASS, encode_grid

    def predict(batch):
        assert batch.dtype == np.uint8 and batch.shape[1:] == (input_size, input_size, 3)
        grids = []
        for image in batch:
            ys, xs = np.nonzero(image.min(axis=-1) > 200)
            boxes = np.zeros((0, 4))
            if len(xs):
                boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            grid = encode_grid(boxes, [False] * len(boxes), input_size, grid_size).grid
            grid[..., CLASS] *= 0.9
            grids.append(grid)
        return np.stack(grids)

    return predict


def claim_size(data: bytearray, fmt: str, width: int, height: int) -> bytearray:
    """Patch the size in a real JPEG's SOF0 or PNG's IHDR (the data stays as it was)."""
    if fmt == "jpg":
        sof = data.find(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    else:
        data[16:24] = struct.pack(">II", width, height)
    return data


def tiny_train_config(root, tmp_path, **changes):
    """The tiny detector the training tests train: 96 px, 3x3 grid, alpha 0.35, 3 epochs."""
    values = dict(
        dataset=root, input_size=96, grid_size=3, alpha=0.35, backbone_weights="none",
        head_channels=32, batch_size=8, head_epochs=0, finetune_epochs=3,
        finetune_learning_rate=3e-3, warmup_epochs=0.5, early_stopping_patience=0,
        reduce_lr_patience=0, log_dir=str(tmp_path / "logs"),
        checkpoint_dir=str(tmp_path / "ckpt"), run_name="run", keep_best=2, workers=1,
    )
    values.update(changes)
    return Config(**values)


def tiny_grid_model(config, backbone_weights=None):
    """A stand-in for `model.network.create_model`: (B, S, S, 3) uint8 -> (B, G, G, 5) in
    [0, 1] (15 channels with `config.landmarks`, the last 10 linear), with a sub-model named like the real backbone so `set_backbone_trainable` works
    on it. Tests of the training loop, the checkpoint folder and the data pipeline patch it
    in (monkeypatch "model.network.create_model"): it traces and trains in a fraction of a
    second, where MobileNetV2 takes tens of seconds to trace on a CPU (test_train.py's
    `trained` run trains the real one)."""
    import keras

    size, grid = config.input_size, config.grid_size
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    backbone = keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(4, 3, strides=size // grid, padding="same"),
        keras.layers.BatchNormalization(),
    ], name="backbone")
    features = backbone(x)
    if not config.landmarks:
        out = keras.layers.Conv2D(5, 1, activation="sigmoid", name="grid")(features)
        return keras.Model(inputs, out, name="tiny_detector")
    # With landmarks, (B, G, G, 15): the 5 sigmoid channels, then 10 linear ones.
    boxes = keras.layers.Conv2D(5, 1, activation="sigmoid", name="grid_boxes")(features)
    points = keras.layers.Conv2D(10, 1, name="grid_points")(features)
    out = keras.layers.Concatenate(name="grid")([boxes, points])
    return keras.Model(inputs, out, name="tiny_detector")


