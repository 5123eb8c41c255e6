"""Exports of a network with three grid levels and landmarks (issues 19 and 21): SavedModel,
TFLite (float32, float16 weights, int8) and ONNX carry the levels' (N, 15) cells and the
contract's levels and landmarks flag, and compute the Keras outputs; their detections
decode every level and carry the points. One export fixture serves both features: the
conversions are the slow step."""

import keras
import numpy as np
import pytest

from config import Config
from model.contract import ModelContract, read_contract
from model.detector import FaceDetector
from model.export import export_model
from model.network import create_model

SIZE = 64
LEVELS = (8, 4, 2)  # cells of 8, 16 and 32 px
CELLS = 64 + 16 + 4
CONFIG = Config(input_size=SIZE, grid_size=8, grid_levels=3, alpha=0.35,
                backbone_weights="none", head_channels=16, head_separable=True,
                centre_radius=2.5, landmarks=True)


def inputs(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(7)
    net = create_model(CONFIG)
    rng = np.random.default_rng(1)
    heads = [layer for layer in net.layers if layer.name.startswith("head_landmarks")]
    assert len(heads) == len(LEVELS)  # one per level
    for head in heads:  # random points: the landmark channels are not all zero
        kernel, bias = head.get_weights()
        head.set_weights([rng.normal(0, 0.05, kernel.shape).astype(np.float32),
                          rng.uniform(-0.4, 0.4, bias.shape).astype(np.float32)])
    return net


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    from common.files import atomic_write_bytes
    from model.contract import CONTRACT_NAME, with_tflite_metadata
    from model.export import tflite_from_saved_model

    folder = tmp_path_factory.mktemp("landmarks")
    contract = ModelContract.from_config(CONFIG, score_threshold=0.3)
    paths = {"saved_model": export_model(model, "saved_model", str(folder / "m_saved_model"),
                                         contract=contract),
             "onnx": export_model(model, "onnx", str(folder / "m.onnx"), contract=contract)}
    for name, options in (("tflite", {}), ("float16", {"float16": True}),
                          ("int8", {"int8_inputs": inputs(8, seed=3)})):
        data = tflite_from_saved_model(paths["saved_model"], **options)
        paths[name] = str(folder / f"m_{name}.tflite")
        atomic_write_bytes(paths[name], with_tflite_metadata(data, CONTRACT_NAME,
                                                             contract.to_json().encode()))
    return paths


@pytest.mark.parametrize("name, atol", [("saved_model", 1e-5), ("tflite", 1e-5),
                                        ("float16", 5e-3), ("int8", 0.05), ("onnx", 1e-5)])
def test_every_export_carries_the_landmarks_and_computes_the_keras_outputs(model, exports,
                                                                          name, atol):
    path = exports[name]
    grid = read_contract(path).grid
    assert grid.landmarks and grid.grid_levels == 3
    detector = FaceDetector.load(path)
    assert detector.landmarks and detector.score_threshold == 0.3
    assert (detector.input_size, detector.grid_size, detector.grid_levels,
            detector.grid_sizes) == (SIZE, 8, 3, LEVELS)
    x = inputs(2, seed=5)
    cells = detector.predict_grids(x)
    assert cells.shape == (2, CELLS, 15)
    expected = model.predict_on_batch(x)
    np.testing.assert_allclose(cells, expected, atol=atol)
    assert np.abs(expected[..., 5:]).max() > 0.1  # the landmark channels are not trivial
    photo = np.random.default_rng(2).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    found = detector.detect(photo, score_threshold=0.0)
    keras_found = FaceDetector.from_keras(model, contract=read_contract(path)).detect(
        photo, score_threshold=0.0)
    assert len(found.boxes) > 0 and found.landmarks.shape == (len(found.boxes), 5, 2)
    # Every level's cells decoded, NMS across them, boxes clipped to the photo.
    assert np.all(found.boxes[:, 2] <= 80) and np.all(found.boxes[:, 3] <= 48)
    # Each detection's points are those of the Keras detection with the same box (float32
    # exports give the same boxes; float16's and int8's differ a little, so only their
    # outputs are compared).
    matched = 0
    for box, points in list(zip(found.boxes, found.landmarks))[:5]:
        same = np.abs(keras_found.boxes - box).max(axis=1).argmin()
        if np.abs(keras_found.boxes[same] - box).max() < 1e-3:
            np.testing.assert_allclose(points, keras_found.landmarks[same], atol=1e-2)
            matched += 1
    assert matched > 0 or name in ("float16", "int8")


def test_a_contract_naming_other_levels_is_refused(exports, tmp_path):
    import shutil

    from common.errors import CheckpointError
    from model.contract import write_contract

    path = shutil.copy(exports["tflite"], tmp_path / "m.tflite")
    write_contract(path, ModelContract.from_config(CONFIG.replace(grid_levels=2)))
    with pytest.raises(CheckpointError, match="8x8 grid and 2 coarser levels, but .* says "
                                              "64 px, 8x8 grid and 1 coarser levels"):
        FaceDetector.load(path)


def test_boxes_only_export_is_the_landmark_models_boxes_without_its_points(model, tmp_path,
                                                                           capsys):
    """export.py --boxes-only: the box detector inside a landmark model, its contract
    saying no landmarks, its cells the landmark model's first five; the same detections
    with no points."""
    import export
    from common.errors import ConfigError
    from model.contract import write_contract

    checkpoint = str(tmp_path / "model-0.50.keras")
    model.save(checkpoint)
    write_contract(checkpoint, ModelContract.from_config(CONFIG, score_threshold=0.3))
    output = str(tmp_path / "boxes.tflite")
    assert export.main(["--weights", checkpoint, "--format", "tflite", "--boxes-only",
                        "--threshold", "0.42", "--output", output]) == 0
    printed = capsys.readouterr().out
    assert "score threshold 0.42" in printed and "landmarks" not in printed
    contract = read_contract(output)
    assert not contract.grid.landmarks and contract.grid.grid_levels == 3
    assert contract.score_threshold == 0.42  # --threshold, not the checkpoint's 0.3
    with pytest.raises(ConfigError, match=r"--threshold 1.5: must be in \[0, 1\]"):
        export.main(["--weights", checkpoint, "--format", "tflite", "--threshold", "1.5"])
    boxes = FaceDetector.load(output)
    assert not boxes.landmarks
    x = inputs(2, seed=6)
    cells = boxes.predict_grids(x)
    assert cells.shape == (2, CELLS, 5)
    np.testing.assert_allclose(cells, model.predict_on_batch(x)[..., :5], atol=1e-5)
    # Its detections are boxes alone (the cells above are the landmark model's; this
    # untrained network's equal scores leave NMS's order to float rounding, so the
    # boxes themselves are compared through the cells).
    photo = np.random.default_rng(2).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    found = boxes.detect(photo, score_threshold=0.0)
    assert found.landmarks is None and len(found.boxes) > 0
