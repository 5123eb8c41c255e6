"""The preprocessing contract a model carries (model/contract.py): stored in every format,
read back by FaceDetector, and a contradicting setting refused with both values named."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from common.cli import as_flag_message
from config import Config
from common.errors import CheckpointError, ConfigError
from model.checkpoints import save_model_atomically
from data.grid import GridSpec
from model.contract import (
    CONTRACT_FILE, CONTRACT_NAME, ModelContract, read_contract, tflite_metadata, write_contract,
)
from model.detector import FaceDetector
from model.export import export_model

STRETCHED = ModelContract(GridSpec(64, 2, letterbox=False, neighbour_cells=True), 0.42)


def tiny_model():
    """64 px -> 2x2 grid; its output depends on the pixels, so letterbox vs stretch shows."""
    inputs = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(
        stddev=0.5, seed=1))(x)
    x = keras.layers.AveragePooling2D(32)(x)
    return keras.Model(inputs, keras.layers.Activation("sigmoid", name="grid")(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny model as .keras (with the STRETCHED contract) and in every export format."""
    folder = tmp_path_factory.mktemp("contract")
    model = tiny_model()
    paths = {"keras": str(folder / "model.keras")}
    save_model_atomically(model, paths["keras"], with_training_state=False, contract=STRETCHED)
    for fmt, name in (("tflite", "model.tflite"), ("onnx", "model.onnx"),
                      ("saved_model", "model_saved_model")):
        paths[fmt] = export_model(model, fmt, str(folder / name), contract=STRETCHED)
    return model, paths


def test_contract_round_trips_and_refuses_what_cannot_work():
    config = Config(input_size=96, grid_size=6, letterbox=False, neighbour_cells=True)
    contract = ModelContract.from_config(config)
    assert (contract.grid.input_size, contract.grid.grid_size) == (96, 6)
    assert contract.grid.letterbox is False and contract.score_threshold == config.score_threshold
    assert ModelContract.from_json(contract.to_json(), "x") == contract
    assert ModelContract.from_config(config, score_threshold=0.3).score_threshold == 0.3
    values = json.loads(contract.to_json())
    for change, message in (({"version": 2}, "version 2; this version of the project reads version 1"),
                            ({"mean": 0.5}, "unknown face_detector_contract field"),
                            ({"grid_size": 5}, "grid_size=5: must divide input_size=96"),
                            ({"channel_order": "BGR"}, "take RGB uint8 pixels"),
                            ({"letterbox": "yes"}, "letterbox='yes': must be true or false")):
        with pytest.raises(CheckpointError, match=message):
            ModelContract.from_json(json.dumps({**values, **change}), "m.keras")
    with pytest.raises(CheckpointError, match="m.tflite: its face_detector_contract is not valid"):
        ModelContract.from_json(b"{1", "m.tflite")


@pytest.mark.parametrize("fmt", ["keras", "tflite", "onnx", "saved_model"])
def test_every_format_carries_the_contract_and_feeds_as_trained(saved, fmt):
    """Loaded with no setting, each file stretches its input as its contract says: the
    grid equals the Keras model's on the stretched image, not on the letterboxed one."""
    model, paths = saved
    assert read_contract(paths[fmt]) == STRETCHED
    detector = FaceDetector.load(paths[fmt])
    assert detector.contract == STRETCHED and detector.contract_origin == "model"
    assert detector.letterbox is False and detector.score_threshold == 0.42
    image = np.random.default_rng(0).integers(0, 255, (40, 100, 3), np.uint8)  # not square
    x, letterbox = detector.prepare(image)
    assert (letterbox.pad_x, letterbox.pad_y) == (0, 0)  # stretched: no padding
    np.testing.assert_allclose(detector.predict_grids(x[None]),
                               model.predict_on_batch(x[None]), atol=2e-5)
    padded = FaceDetector.from_keras(model, letterbox=True).prepare(image)[0]
    assert np.abs(model.predict_on_batch(padded[None])
                  - model.predict_on_batch(x[None])).max() > 1e-3  # the choice shows


def test_the_keras_file_still_loads_with_plain_keras(saved):
    _, paths = saved
    with zipfile.ZipFile(paths["keras"]) as archive:
        assert CONTRACT_FILE in archive.namelist()
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(archive.namelist())
    restored = keras.models.load_model(paths["keras"])
    assert restored.output_shape == (None, 2, 2, 5)


def test_a_contradicting_letterbox_is_an_error_naming_both_values(saved):
    _, paths = saved
    for fmt in ("keras", "tflite"):
        with pytest.raises(ConfigError) as error:
            FaceDetector.load(paths[fmt], letterbox=True)
        message = str(error.value)
        assert message.startswith("letterbox=True: ") and "letterbox=False" in message
        assert paths[fmt] in message
        # The command line names its flag.
        assert as_flag_message(message).startswith("--letterbox: ")
    assert FaceDetector.load(paths["keras"], letterbox=False).letterbox is False


def test_files_without_a_contract_read_the_runs_config_json_else_the_setting(tmp_path):
    model = tiny_model()
    bare = str(tmp_path / "old.keras")
    model.save(bare)  # saved as before models carried a contract
    assert read_contract(bare) is None
    assert FaceDetector.load(bare).letterbox is True
    assert FaceDetector.load(bare).contract_origin == "default"
    assert FaceDetector.load(bare, letterbox=False).letterbox is False
    config = Config(input_size=64, grid_size=2, letterbox=False, score_threshold=0.7)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    detector = FaceDetector.load(bare)
    assert detector.contract_origin == "config.json"
    assert detector.letterbox is False and detector.score_threshold == 0.7
    with pytest.raises(ConfigError, match="letterbox=True: .*old.keras was trained on stretched"):
        FaceDetector.load(bare, letterbox=True)


def test_write_contract_replaces_an_earlier_one_and_checks_the_shapes(saved, tmp_path):
    model, paths = saved
    for fmt in ("keras", "tflite", "onnx", "saved_model"):
        copy = str(tmp_path / os.path.basename(paths[fmt]))
        if fmt == "saved_model":
            import shutil

            shutil.copytree(paths[fmt], copy)
        else:
            with open(paths[fmt], "rb") as f, open(copy, "wb") as g:
                g.write(f.read())
        write_contract(copy, STRETCHED.replace(grid=STRETCHED.grid.replace(letterbox=True), score_threshold=0.6))
        assert read_contract(copy) == STRETCHED.replace(grid=STRETCHED.grid.replace(letterbox=True), score_threshold=0.6)
        assert FaceDetector.load(copy).letterbox is True
    with open(str(tmp_path / "model.tflite"), "rb") as f:
        data = f.read()
    assert tflite_metadata(data, "min_runtime_version") is not None  # the converter's own
    assert json.loads(tflite_metadata(data, CONTRACT_NAME))["score_threshold"] == 0.6
    wrong = str(tmp_path / "model.keras")
    write_contract(wrong, ModelContract(GridSpec(96, 3)))
    with pytest.raises(CheckpointError, match="takes 64 px and gives a 2x2 grid, but its "
                                              "face_detector_contract says 96 px, 3x3"):
        FaceDetector.load(wrong)


def test_the_shipped_model_carries_its_validated_contract():
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "models", "face_detector.tflite")
    contract = read_contract(shipped)
    # Run W2's box detector (docs/benchmarks.md): three levels, threshold chosen on the
    # held-out small faces.
    assert contract == ModelContract(GridSpec(320, 40, 3, letterbox=True, neighbour_cells=True),
                                     score_threshold=0.3777250349521637)


def test_a_contract_is_the_grid_spec_plus_a_threshold_and_its_json_stays_flat():
    """The JSON keeps the flat keys older files carry (theirs lack centre_radius, read as
    0), so the model shipped before the GridSpec still loads; a new one round-trips."""
    import json

    from data.grid import GridSpec

    contract = ModelContract(GridSpec(320, 40, 3, centre_radius=2.5), 0.4)
    values = json.loads(contract.to_json())
    assert values["grid_levels"] == 3 and values["centre_radius"] == 2.5
    assert values["score_threshold"] == 0.4 and "grid" not in values
    assert ModelContract.from_json(contract.to_json(), "x") == contract
    old = {k: v for k, v in values.items() if k != "centre_radius"}
    assert ModelContract.from_json(json.dumps(old), "x").grid.centre_radius == 0.0
    with pytest.raises(CheckpointError, match="x: bad face_detector_contract .*grid_size=5"):
        ModelContract.from_json(json.dumps(dict(values, grid_size=5)), "x")
    with pytest.raises(ConfigError, match=r"score_threshold=1.5: must be in \[0, 1\]"):
        ModelContract(GridSpec(64, 2), 1.5)
