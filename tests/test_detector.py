"""FaceDetector: faces land on the original pixels through the letterbox, Keras models run
on any batch size, and bad model files fail in one line."""

import os

import cv2
import keras
import numpy as np
import pytest

from data.boxes import InputMapping
from data.grid import CLASS, GridSpec, encode_grid
from common.errors import CheckpointError, ImageError
from model.detector import (
    FaceDetector, face_rows, grid_geometry, resolve_weights,
)
from model.postprocess import Detections
from helpers import bright_box_network, scene  # 'detects' the bright box it is shown

S, G = 128, 4


def encoded_face_network(letterboxes, faces, score=0.8, size=S, grid_size=G):
    """A fake network: image i's face (original px) encoded at its letterboxed position."""
    calls = []

    def predict(batch):
        assert batch.dtype == np.uint8 and batch.shape[1:] == (size, size, 3)
        start = sum(calls)
        calls.append(len(batch))
        grids = []
        for lb, face in zip(letterboxes[start:start + len(batch)], faces[start:start + len(batch)]):
            grid = encode_grid(lb.to_input([face]), [False], size, grid_size).grid
            grid[..., CLASS] *= score
            grids.append(grid)
        return np.stack(grids)

    return predict


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("width,height,face", [
    (320, 200, (200.0, 30.0, 260.0, 110.0)),  # wide: padded above and below
    (150, 400, (10.0, 300.0, 50.0, 350.0)),   # tall: padded left and right
    (128, 128, (50.0, 60.0, 70.0, 90.0)),     # square: no padding
])
def test_detect_maps_the_letterboxed_face_back_to_original_pixels(width, height, face, pad):
    letterbox = InputMapping.fit(width, height, S, pad)
    detector = FaceDetector(encoded_face_network([letterbox], [face]), S, G, letterbox=pad)
    det = detector.detect(np.zeros((height, width, 3), np.uint8), score_threshold=0.5)
    assert det.boxes.shape == (1, 4) and det.boxes.dtype == np.float32
    np.testing.assert_allclose(det.boxes[0], face, atol=1.0)
    np.testing.assert_allclose(det.scores, [0.8], atol=1e-6)


def test_detect_batch_finds_drawn_faces_in_images_of_different_shapes():
    """End to end without knowing the letterbox: the fake network sees the bright box in
    the prepared input; each detection must come back on the drawn box of its own image."""
    size, grid = 256, 8  # images smaller than the input: one input px < one original px
    faces = [(120, 30, 160, 80), (20, 90, 70, 130), None]
    images = [scene(200, 120, faces[0]), scene(100, 160, faces[1]), scene(90, 90)]
    detector = FaceDetector(bright_box_network(size, grid), size, grid)
    found = detector.detect_batch(images, score_threshold=0.5)
    assert len(found) == 3
    for det, face in zip(found[:2], faces[:2]):
        np.testing.assert_allclose(det.boxes, [face], atol=1.0)
        np.testing.assert_allclose(det.scores, [0.9], atol=1e-6)
    assert len(found[2].scores) == 0
    assert detector.detect_batch([]) == []
    # The single-image path is the same path.
    np.testing.assert_allclose(detector.detect(images[0]).boxes, found[0].boxes, atol=1e-4)


def test_thresholds_reach_the_post_processing():
    letterbox = InputMapping.fit(128, 128, S)
    detector = FaceDetector(encoded_face_network([letterbox] * 2, [(10, 10, 40, 40)] * 2), S, G)
    image = np.zeros((128, 128, 3), np.uint8)
    assert len(detector.detect(image, score_threshold=0.7).scores) == 1
    assert len(detector.detect(image, score_threshold=0.9).scores) == 0


def test_detect_defaults_to_the_models_own_threshold():
    """No score_threshold: the contract's validated one (0.8 here), not Config's 0.5."""
    from config import Config
    from model.contract import ModelContract
    from model.postprocess import DetectSpec

    letterbox = InputMapping.fit(128, 128, S)
    network = encoded_face_network([letterbox] * 9, [(10, 10, 40, 40)] * 9, score=0.75)
    image = np.zeros((128, 128, 3), np.uint8)
    plain = FaceDetector(network, S, G)
    assert plain.score_threshold == Config.score_threshold
    assert len(plain.detect(image).scores) == 1
    strict = FaceDetector(network, S, G, contract=ModelContract(GridSpec(S, G), 0.8))
    assert len(strict.detect(image).scores) == 0
    assert len(strict.detect_batch([image])[0].scores) == 0
    assert len(strict.detect(image, score_threshold=0.7).scores) == 1  # an explicit one wins
    assert strict.detect_spec == DetectSpec(0.8, Config.nms_iou, Config.max_detections)
    assert len(strict.detect(image, DetectSpec(0.7, 0.4, 5)).scores) == 1
    with pytest.raises(TypeError, match="spec=0.7: must be a model.postprocess.DetectSpec"):
        strict.detect(image, 0.7)  # a threshold alone goes by name


def tiny_keras_model(size=64, grid=2, flat=False, height=None, dtype="uint8"):
    """A small conv net (B, S, S, 3) -> (B, G, G, 5) with random weights."""
    inputs = keras.Input((height or size, size, 3), dtype=dtype, name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.AveragePooling2D(size // grid)(x)
    x = keras.layers.Conv2D(5, 1, activation="sigmoid",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(x)
    if flat:
        x = keras.layers.Flatten()(x)
    return keras.Model(inputs, x)


def test_keras_detector_reads_its_geometry_and_matches_the_model_on_any_batch(tmp_path):
    keras.utils.set_random_seed(3)
    model = tiny_keras_model(64, 2)
    path = str(tmp_path / "model-0.10.keras")
    model.save(path)
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = model.predict_on_batch(x)
    for detector in (FaceDetector.from_keras(model), FaceDetector.load(path)):
        assert (detector.input_size, detector.grid_size, detector.kind) == (64, 2, "keras")
        np.testing.assert_allclose(detector.predict_grids(x), expected, atol=1e-6)
        np.testing.assert_allclose(detector.predict_grids(x[:1]), expected[:1], atol=1e-6)
        assert detector(x).shape == (3, 2, 2, 5)  # callable like the network it wraps
    with pytest.raises(ValueError, match=r"expects \(B, 64, 64, 3\) inputs"):
        detector.predict_grids(x[:, :32])


def test_a_float_input_network_from_before_uint8_inputs_is_refused_by_name(tmp_path):
    path = str(tmp_path / "old.keras")
    tiny_keras_model(64, 2, dtype="float32").save(path)
    with pytest.raises(CheckpointError, match=r"old.keras: the network takes float32 inputs, "
                       r"not uint8 pixels.*--weights"):
        FaceDetector.load(path)


def test_float_batches_are_refused_not_cast_to_black():
    detector = FaceDetector(lambda x: np.zeros((len(x), G, G, 5)), S, G)
    with pytest.raises(ValueError, match="expects uint8 pixels"):
        detector.predict_grids(np.zeros((1, S, S, 3), np.float32))


def test_a_network_returning_the_wrong_shape_is_named():
    detector = FaceDetector(lambda x: np.zeros((len(x), 3, 3, 5)), S, G, source="net.tflite")
    with pytest.raises(CheckpointError, match=r"net.tflite: the network returned shape"):
        detector.predict_grids(np.zeros((1, S, S, 3), np.uint8))


def test_grid_geometry_accepts_grid_detectors_only():
    assert grid_geometry((None, 224, 224, 3), (None, 7, 7, 5), "m") == (224, 7, 1, False, 0)
    assert grid_geometry([-1, 96, 96, 3], [-1, 3, 3, 5], "m") == (96, 3, 1, False, 0)
    assert grid_geometry([-1, 96, 96, 3], [-1, 3, 3, 15], "m") == (96, 3, 1, True, 0)
    # A band input: rows 64 of the 96-px square, its 2 rows of the 3x3 grid.
    assert grid_geometry([-1, 64, 96, 3], [-1, 2, 3, 5], "m") == (96, 3, 1, False, 64)
    # Three levels of 8-, 16- and 32-px cells on the band 256 rows of 384 px.
    assert grid_geometry([-1, 256, 384, 3], [-1, 32 * 48 + 16 * 24 + 8 * 12, 5], "m") == (
        384, 48, 3, False, 256)
    with pytest.raises(CheckpointError, match=r"m: output shape \(None, 3, 3, 5\) is not"):
        grid_geometry([-1, 64, 96, 3], [-1, 3, 3, 5], "m")  # the square's grid, not the band's
    with pytest.raises(CheckpointError, match=r"m: output shape \(None, 7, 7, 4\) is not"):
        grid_geometry((None, 224, 224, 3), (None, 7, 7, 4), "m")
    with pytest.raises(CheckpointError, match=r"m: input shape \(None, None, None, 3\) is not"):
        grid_geometry((None, None, None, 3), (None, 7, 7, 5), "m")


def _bad_files(tmp_path):
    """(path, expected message) for every way a model file can be unusable."""
    corrupt_keras = tmp_path / "corrupt.keras"
    corrupt_keras.write_bytes(b"not a zip")
    corrupt_tflite = tmp_path / "corrupt.tflite"
    corrupt_tflite.write_bytes(b"\x00" * 64)
    weights_h5 = tmp_path / "weights.h5"
    weights_h5.write_bytes(b"\x89HDF")
    folder = tmp_path / "folder"
    folder.mkdir()
    flat = str(tmp_path / "flat.keras")
    tiny_keras_model(flat=True).save(flat)
    oblong = str(tmp_path / "oblong.keras")  # taller than wide: neither a square nor a band
    tiny_keras_model(32, 2, height=64).save(oblong)
    return [
        (str(tmp_path / "missing.keras"), "checkpoint not found"),
        (str(tmp_path / "missing.tflite"), "checkpoint not found"),
        (str(corrupt_keras), "not a .keras checkpoint"),
        (str(corrupt_tflite), "cannot load TFLite model"),
        (str(weights_h5), "unknown model format '.h5'"),
        (str(folder), "not a SavedModel"),
        (flat, r"output shape (None, 20) is not (batch, G, G, 5)"),
        (oblong, r"input shape (None, 64, 32, 3) is not (batch, S, S, 3)"),
    ]


def test_unusable_model_files_fail_in_one_line_naming_the_file(tmp_path):
    for path, message in _bad_files(tmp_path):
        with pytest.raises(CheckpointError) as caught:
            FaceDetector.load(path)
        text = str(caught.value)
        assert text.startswith(path + ":") and message in text, text
        assert "\n" not in text


def test_resolve_weights_finds_the_best_checkpoint_or_keeps_the_file(tmp_path):
    run = tmp_path / "checkpoints" / "run1"
    run.mkdir(parents=True)
    for name in ("model-0.30.keras", "model-0.70.keras", "last.keras"):
        (run / name).write_bytes(b"x")
    saved_model = tmp_path / "exported"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"x")
    best = str(run / "model-0.70.keras")
    assert resolve_weights(None, str(tmp_path / "checkpoints")) == best
    assert resolve_weights(str(run), "unused") == best
    assert resolve_weights(str(saved_model), "unused") == str(saved_model)
    assert resolve_weights("given.tflite", "unused") == "given.tflite"
    with pytest.raises(CheckpointError, match="no model-.*keras checkpoint found"):
        resolve_weights(None, str(tmp_path / "empty"))


def test_face_rows_round_to_pixels_and_three_decimals():
    # corners of x y w h = 10.25 20.625 30.5 40.49: printed as the CLI's x y w h
    det = Detections(np.array([[10.25, 20.625, 40.75, 61.115]], np.float32),
                     np.array([0.87654], np.float32))
    assert face_rows(det) == [{"x": 10, "y": 21, "w": 30, "h": 40, "score": 0.877}]
    assert face_rows(Detections.empty()) == []


def test_write_image_failures_are_one_line_image_errors(tmp_path):
    """An extension without a writer (cv2.error), a file where a folder is needed
    (OSError): each one ImageError naming the path; nothing is left behind."""
    from model.detector import write_image

    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ImageError, match=r"faces\.txt: cannot write image \(.*could not find a writer"):
        write_image(str(tmp_path / "faces.txt"), image)
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(ImageError, match=r"blocker/x\.jpg: cannot write image \("):
        write_image(str(tmp_path / "blocker" / "x.jpg"), image)
    assert sorted(os.listdir(tmp_path)) == ["blocker"]
    write_image(str(tmp_path / "ok.png"), image)
    assert cv2.imread(str(tmp_path / "ok.png")).shape == (8, 8, 3)
