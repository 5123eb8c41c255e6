"""Band inputs (GridSpec.input_height): the rows of the square input a landscape photo fills.

A network of a band input sees rows [top, top + R) of the S x S letterboxed square
(data.boxes.band_top) and outputs those rows of every level's grid; data.grid.embed_band
puts them back into the square's layout, so decoding, NMS and landmarks are the square's.
"""

import json
import os

import numpy as np
import pytest

import export
from common.errors import CheckpointError, ConfigError
from config import Config, save_config
from data.boxes import InputMapping, band_top
from data.grid import (CLASS, H, W, XC, YC, GridSpec, band_of, decode_levels, embed_band,
                       split_levels)
from data.image import PAD_VALUE, prepare_image
from model.contract import ModelContract
from model.detector import FaceDetector
from model.export import export_model
from model.network import at_input_size, create_model

TINY = Config(input_size=128, grid_size=16, grid_levels=3, alpha=0.35, backbone_weights="none",
              head_channels=16, head_separable=True, neighbour_cells=True)


def test_band_top_is_centred_and_aligned_to_the_coarsest_cell():
    assert band_top(384, 256) == 64  # (384 - 256) / 2
    assert band_top(352, 256) == 32  # 48 rounded down to a multiple of 32
    assert band_top(128, 64) == 32
    assert band_top(320, 0) == band_top(320, 320) == 0  # the square itself


def test_a_landscape_photo_fills_the_band_and_maps_back():
    """A 200x100 photo into the 64-row band of a 128-px square: the scale that fits both
    sides (0.64), centred in the band, in the square's coordinates."""
    mapping = InputMapping.fit(200, 100, 128, letterbox=True, input_height=64)
    assert (mapping.content_width, mapping.content_height) == (128, 64)
    assert (mapping.pad_x, mapping.pad_y) == (0.0, 32.0)  # band_top(128, 64) = 32
    boxes = np.array([[10, 20, 50, 80]], np.float32)
    np.testing.assert_allclose(mapping.to_original(mapping.to_input(boxes)), boxes, rtol=1e-6)
    # A taller photo is letterboxed smaller into the band, centred on both axes.
    tall = InputMapping.fit(100, 200, 128, letterbox=True, input_height=64)
    assert (tall.content_width, tall.content_height) == (32, 64)
    assert (tall.pad_x, tall.pad_y) == (48.0, 32.0)
    # Stretching fills the band.
    stretch = InputMapping.fit(100, 200, 128, letterbox=False, input_height=64)
    assert (stretch.content_width, stretch.content_height, stretch.pad_y) == (128, 64, 32.0)


def test_prepare_image_gives_the_band_rows_of_the_square_input():
    photo = np.random.default_rng(0).integers(0, 256, (90, 200, 3), dtype=np.uint8)
    square, square_map = prepare_image(photo, 128)
    band, band_map = prepare_image(photo, 128, input_height=64)
    assert square.shape == (128, 128, 3) and band.shape == (64, 128, 3)
    # The same scale (the width decides for this photo), the same rows of the picture.
    assert band_map.scale_x == square_map.scale_x
    top = band_top(128, 64)
    shift = int(band_map.pad_y - square_map.pad_y)  # centred in the band, not the square
    content = slice(int(band_map.pad_y) - top, int(band_map.pad_y) - top + band_map.content_height)
    np.testing.assert_array_equal(
        band[content], square[int(square_map.pad_y):int(square_map.pad_y) + square_map.content_height])
    assert shift == int(band_map.pad_y) - int(square_map.pad_y)
    assert (band[:int(band_map.pad_y) - top] == PAD_VALUE).all()


def test_grid_spec_checks_the_band_and_gives_its_shapes():
    spec = GridSpec(384, 48, 3, input_height=256)
    assert spec.input_shape == (256, 384, 3)
    assert spec.band_shapes == ((32, 48), (16, 24), (8, 12))
    assert spec.network_shape == (32 * 48 + 16 * 24 + 8 * 12, 5)
    assert spec.cells_shape == (48 * 48 + 24 * 24 + 12 * 12, 5)  # what embed_band makes
    assert GridSpec(384, 12, input_height=256).network_shape == (8, 12, 5)
    assert spec.at_input_size(384, 384).input_height == 0  # the whole square is no band
    for bad in (100, 416, -32):
        with pytest.raises(ConfigError, match=f"input_height={bad}: must be 0 .* multiple of 32"):
            GridSpec(384, 48, input_height=bad)
    # Training configurations know no band: it is a detection shape.
    assert "input_height" not in GridSpec.config_fields()


@pytest.mark.parametrize("levels", [1, 3])
def test_embed_band_places_the_rows_and_band_of_takes_them_back(levels):
    spec = GridSpec(128, 16, levels, input_height=64, landmarks=True)
    cells = np.random.default_rng(levels).random((2,) + spec.network_shape, dtype=np.float32)
    square = embed_band(cells, spec)
    assert square.shape == (2,) + spec.cells_shape
    np.testing.assert_array_equal(band_of(square, spec), cells)
    # Outside the band every level's cells are background (0: no box decodes there).
    for grid, (rows, _), stride in zip(split_levels(square[0], spec.grid_sizes),
                                       spec.band_shapes, spec.strides):
        first = band_top(128, 64) // stride
        assert (grid[:first] == 0).all() and (grid[first + rows:] == 0).all()
        assert (grid[first:first + rows, :, CLASS] > 0).all()
    # A square spec passes its cells through.
    plain = GridSpec(128, 16, levels)
    flat = np.ones((2,) + plain.cells_shape, np.float32)
    assert embed_band(flat, plain) is not None and np.array_equal(embed_band(flat, plain), flat)


def test_a_face_in_the_band_decodes_to_its_place_in_the_photo():
    """One face cell written into a band network's output: the detector maps it to the
    photo pixels its position and size say (band row 2, column 5 of 8-px cells)."""
    spec = GridSpec(128, 16, input_height=64)
    out = np.zeros(spec.network_shape, np.float32)
    out[2, 5, [H, W, YC, XC, CLASS]] = [16 / 128, 16 / 128, 0.5, 0.5, 0.9]
    detector = FaceDetector(lambda x: np.repeat(out[None], len(x), 0), 128, 16,
                            input_height=64)
    photo = np.zeros((100, 200, 3), np.uint8)  # scale 0.64, band_top 32, pad_y 32
    found = detector.detect(photo, score_threshold=0.5)
    # Square pixels: centre (5.5 * 8, (32 / 8 + 2.5) * 8) = (44, 52), side 16.
    centre = np.array([44, 52 - 32]) / 0.64
    expected = np.concatenate([centre - 8 / 0.64, centre + 8 / 0.64])
    np.testing.assert_allclose(found.boxes, [expected], atol=1e-3)
    np.testing.assert_allclose(found.scores, [0.9], atol=1e-6)
    # The same through the grid's own decoder on the embedded cells.
    boxes, _ = decode_levels(embed_band(out, spec), 128, spec.grid_sizes, 0.5)
    np.testing.assert_allclose(boxes, [[36, 44, 52, 60]], atol=1e-4)


@pytest.fixture(scope="module")
def band_network():
    model = create_model(TINY)
    return model, at_input_size(model, TINY, 128, 64)


def test_band_network_outputs_the_band_cells_with_the_same_weights(band_network):
    model, band = band_network
    spec = TINY.grid_spec().at_input_size(128, 64)
    assert band.input_shape == (None, 64, 128, 3)
    assert band.output_shape == (None,) + spec.network_shape
    for a, b in zip(model.get_weights(), band.get_weights()):
        np.testing.assert_array_equal(a, b)
    detector = FaceDetector.from_keras(band)
    assert (detector.input_size, detector.input_height, detector.grid_sizes) == (128, 64,
                                                                                 (16, 8, 4))
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(detector.predict_grids(x),
                               embed_band(band.predict(x, verbose=0), spec), atol=1e-6)
    with pytest.raises(ValueError, match=r"expects \(B, 64, 128, 3\) inputs"):
        detector.predict_grids(np.zeros((1, 128, 128, 3), np.uint8))


def test_band_tflite_export_carries_its_band_and_matches_keras(band_network, tmp_path):
    _, band = band_network
    contract = ModelContract(TINY.grid_spec().at_input_size(128, 64), 0.4)
    path = str(tmp_path / "band.tflite")
    export_model(band, "tflite", path, contract=contract)
    lite, keras_detector = FaceDetector.load(path), FaceDetector.from_keras(band)
    assert (lite.input_size, lite.input_height, lite.score_threshold) == (128, 64, 0.4)
    assert lite.contract == contract and json.loads(contract.to_json())["input_height"] == 64
    photo = np.random.default_rng(2).integers(0, 256, (90, 200, 3), dtype=np.uint8)
    a, b = keras_detector.detect(photo, score_threshold=0.0), lite.detect(photo, score_threshold=0.0)
    assert len(a.boxes) > 0
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)


def test_contract_json_of_a_square_has_no_band_and_a_wrong_band_is_one_line():
    square = ModelContract(GridSpec(128, 16))
    assert "input_height" not in json.loads(square.to_json())
    band = ModelContract(GridSpec(128, 16, input_height=64))
    assert ModelContract.from_json(band.to_json(), "m") == band
    with pytest.raises(CheckpointError, match="m: the network's input is the whole square, "
                                              "but its .* says a band of 64 rows"):
        band.check_geometry(128, 16, "m", 1, False, 0)


def test_export_cli_exports_a_band_of_a_checkpoint(band_network, tmp_path, capsys):
    model, _ = band_network
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = str(run / "model-0.50.keras")
    model.save(checkpoint)
    save_config(TINY, str(run / "config.json"))
    output = str(tmp_path / "band.tflite")
    assert export.main(["--weights", checkpoint, "--format", "tflite", "--input-size", "160",
                        "--input-height", "96", "--output", output]) == 0
    assert "input 160x96 (rows 96 of 160x160)" in capsys.readouterr().out
    lite = FaceDetector.load(output)
    assert (lite.input_size, lite.input_height, lite.grid_sizes) == (160, 96, (20, 10, 5))
    # A height that is no band of the square names the flag.
    with pytest.raises(ConfigError, match="input_height=100"):
        export.main(["--weights", checkpoint, "--format", "tflite", "--input-height", "100",
                     "--output", output])
    # Without the run's config.json the network cannot be rebuilt: one line that says so.
    os.remove(str(run / "config.json"))
    with pytest.raises(ConfigError, match="need the run's config.json beside"):
        export.main(["--weights", checkpoint, "--format", "tflite", "--input-size", "160",
                     "--output", output])


def test_bench_real_reads_squares_and_bands_and_names_a_bad_size():
    """--detect-sizes entries: S (the square) or SxH (its band); a square written SxS is
    the square; anything else is one line naming the entry."""
    from benchmarks.bench_real import detect_shape

    assert detect_shape("320") == (320, 0)
    assert detect_shape("384x256") == (384, 256)
    assert detect_shape("384x384") == (384, 0)
    with pytest.raises(SystemExit, match=r"--detect-sizes '384xa': sizes are S or SxH"):
        detect_shape("384xa")
