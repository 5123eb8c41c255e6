"""Export: SavedModel, TFLite (float32, float16, int8) and ONNX files compute what the
Keras model computes, detect.py runs them, and exports replace earlier ones atomically."""

import glob
import json
import os
import shutil

import cv2
import keras
import numpy as np
import pytest

import detect
import export
from config import Config
from common.errors import CheckpointError, ConfigError
from model import export as export_lib
from model.detector import FaceDetector
from model.export import default_export_path, export_model
from model.network import create_model

TINY = Config(input_size=96, grid_size=3, alpha=0.35, backbone_weights="none", head_channels=32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny detector saved as .keras and exported once as a SavedModel.

    Untrained, its activations vanish through the backbone (BatchNorm in inference mode
    with unit statistics) and every cell outputs the same. So the BatchNorm statistics are
    set from one batch (momentum 0, one training-mode call) and the output layer gets
    large random weights: scores and boxes then differ from image to image and cell to cell.
    """
    keras.utils.set_random_seed(7)
    model = create_model(TINY)
    batchnorms = [layer for layer in model.get_layer("backbone").layers + model.layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batchnorms:
        layer.momentum = 0.0
    model(inputs(4, seed=5), training=True)
    for layer in batchnorms:
        layer.momentum = 0.99
    head = model.get_layer("head_out")
    rng = np.random.default_rng(7)
    head.kernel.assign(rng.normal(0, 0.3, head.kernel.shape).astype(np.float32))
    head.bias.assign(np.zeros(head.bias.shape, np.float32))
    folder = tmp_path_factory.mktemp("export")
    checkpoint = str(folder / "model-0.50.keras")
    model.save(checkpoint)
    assert export.main(["--weights", checkpoint, "--format", "saved_model"]) == 0
    saved_model = str(folder / "model-0.50_saved_model")
    return model, checkpoint, saved_model


@pytest.fixture
def reuse_saved_model(exported, monkeypatch):
    """TFLite exports convert a fresh SavedModel export; the tests below copy the one the
    fixture made instead (the slowest step, checked in the first test) and test the rest."""
    saved_model = exported[2]
    monkeypatch.setattr(export_lib, "export_saved_model",
                        lambda model, path: shutil.copytree(saved_model, path))


def inputs(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def photo(seed=1):
    """A non-square noise image (letterboxed into the 96 px input)."""
    return np.random.default_rng(seed).integers(0, 256, (100, 150, 3), dtype=np.uint8)


def detect_json(capsys, checkpoint, models):
    """What `detect.py --json` prints for `photo()` with each model, in order."""
    image_path = os.path.join(os.path.dirname(checkpoint), "photo.png")
    cv2.imwrite(image_path, photo())
    printed = []
    for weights in models:
        assert detect.main(["--image", image_path, "--weights", weights, "--threshold", "0.2",
                            "--json", "--no-save"]) == 0
        printed.append(json.loads(capsys.readouterr().out))
    return printed


def test_saved_model_computes_the_keras_outputs(exported):
    model, _, saved_model = exported
    detector = FaceDetector.load(saved_model)
    assert (detector.kind, detector.input_size, detector.grid_size) == ("saved_model", 96, 3)
    x = inputs(3)
    np.testing.assert_allclose(detector.predict_grids(x), model.predict_on_batch(x), atol=1e-5)
    np.testing.assert_allclose(detector.predict_grids(x[:1]), model.predict_on_batch(x[:1]),
                               atol=1e-5)


def test_tflite_float32_matches_keras_and_detect_runs_it(exported, reuse_saved_model, capsys):
    model, checkpoint, _ = exported
    tflite = os.path.join(os.path.dirname(checkpoint), "face.tflite")
    assert export_model(model, "tflite", tflite) == tflite
    lite, keras_detector = FaceDetector.load(tflite), FaceDetector.load(checkpoint)
    assert (lite.kind, lite.input_size, lite.grid_size) == ("tflite", 96, 3)
    x = inputs(2)
    expected = model.predict_on_batch(x)
    assert expected[..., 4].std() > 0.05  # the outputs vary: the comparison means something
    np.testing.assert_allclose(lite.predict_grids(x), expected, atol=1e-4)
    np.testing.assert_allclose(lite.predict_grids(x[:1]), expected[:1], atol=1e-4)  # resized back

    # The same faces in original pixels, through the one post-processing path.
    a = keras_detector.detect(photo(), score_threshold=0.2)
    b = lite.detect(photo(), score_threshold=0.2)
    assert len(a.scores) >= 2
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)

    # detect.py on the .tflite file prints what it prints for the .keras checkpoint.
    printed = detect_json(capsys, checkpoint, [checkpoint, tflite])
    assert printed[0] == printed[1] and len(printed[0][0]["faces"]) == len(a.scores)


def test_tflite_float16_cli_export_is_half_the_size_and_close(exported, reuse_saved_model,
                                                               capsys):
    model, checkpoint, _ = exported
    assert export.main(["--weights", checkpoint, "--format", "tflite", "--float16"]) == 0
    f16 = default_export_path(checkpoint, "tflite", float16=True)
    assert f16.endswith("model-0.50_fp16.tflite")
    assert capsys.readouterr().out.startswith(f"{f16}: tflite float16, input 96x96, grid 3x3")
    # Weights in half precision: about 2 bytes per parameter (float32 needs 4).
    assert os.path.getsize(f16) < 2.5 * model.count_params()
    x = inputs(2)
    expected = model.predict_on_batch(x)
    half = FaceDetector.load(f16).predict_grids(x)
    error = np.abs(half - expected)
    # Rounding every weight to float16 moves this untrained (ill-conditioned) network's
    # outputs by up to a few hundredths; a real difference, but no different model.
    assert 0 < error.mean() < 0.01 and error.max() < 0.1, (error.mean(), error.max())


def test_export_arguments_are_checked(exported, reuse_saved_model, tmp_path):
    # reuse_saved_model: the int8 calibration inputs are checked by the converter, after
    # the SavedModel export (a copy of the fixture's here).
    model, checkpoint, _ = exported
    with pytest.raises(ConfigError, match="format='pt': must be one of saved_model, tflite, onnx"):
        export_model(model, "pt", str(tmp_path / "m.pt"))
    with pytest.raises(ConfigError, match="float16=True: applies to the tflite format only, not saved_model"):
        export_model(model, "saved_model", str(tmp_path / "sm"), float16=True)
    with pytest.raises(ConfigError, match="int8=True: applies to the tflite format only, not onnx"):
        export_model(model, "onnx", str(tmp_path / "m.onnx"), int8_inputs=inputs(1))
    with pytest.raises(ConfigError, match="float16=True and int8=True: choose one"):
        export_model(model, "tflite", str(tmp_path / "m.tflite"), True, int8_inputs=inputs(1))
    with pytest.raises(ConfigError, match="int8 calibration: need .* uint8 network inputs"):
        export_model(model, "tflite", str(tmp_path / "m.tflite"),
                     int8_inputs=inputs(1).astype(np.float32))
    with pytest.raises(ConfigError, match="--int8 applies to --format tflite only"):
        export.main(["--weights", checkpoint, "--format", "onnx", "--int8"])
    with pytest.raises(ConfigError, match="--calibration-images 0: must be positive"):
        export.main(["--weights", checkpoint, "--format", "tflite", "--int8",
                     "--calibration-images", "0"])
    with pytest.raises(ConfigError, match="is a folder; a tflite export is one file"):
        export_model(model, "tflite", str(tmp_path))
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not a SavedModel folder"):
        export_model(model, "saved_model", str(tmp_path))
    with pytest.raises(CheckpointError, match="export reads .keras checkpoints only"):
        export.main(["--weights", str(tmp_path / "notes.txt"), "--format", "tflite"])
    with pytest.raises(CheckpointError, match="missing.keras: checkpoint not found"):
        export.main(["--weights", str(tmp_path / "missing.keras"), "--format", "tflite"])
    assert default_export_path("run/model-0.61.keras", "tflite", float16=True) == \
        "run/model-0.61_fp16.tflite"
    assert default_export_path("run/model-0.61.keras", "saved_model") == \
        "run/model-0.61_saved_model"
    assert default_export_path("run/model-0.61.keras", "tflite", int8=True) == \
        "run/model-0.61_int8.tflite"
    assert default_export_path("run/model-0.61.keras", "onnx") == "run/model-0.61.onnx"


def test_onnx_export_matches_keras_in_onnxruntime_and_opencv(exported, capsys):
    """The ONNX file takes uint8 pixels, keeps the batch free, and gives the Keras grids
    in both runtimes detect.py may use (onnxruntime, else cv2.dnn); detect.py runs it."""
    pytest.importorskip("onnxruntime")
    model, checkpoint, _ = exported
    assert export.main(["--weights", checkpoint, "--format", "onnx"]) == 0
    path = default_export_path(checkpoint, "onnx")
    assert capsys.readouterr().out.startswith(f"{path}: onnx, input 96x96, grid 3x3")
    x = inputs(3)
    expected = model.predict_on_batch(x)
    assert expected[..., 4].std() > 0.05
    runtime = FaceDetector.load(path)
    assert (runtime.kind, runtime.input_size, runtime.grid_size) == ("onnx", 96, 3)
    np.testing.assert_allclose(runtime.predict_grids(x), expected, atol=1e-4)
    np.testing.assert_allclose(runtime.predict_grids(x[:1]), expected[:1], atol=1e-4)
    opencv = FaceDetector._load_onnx_opencv(path, letterbox=True)
    assert (opencv.input_size, opencv.grid_size) == (96, 3)
    np.testing.assert_allclose(opencv.predict_grids(x), expected, atol=1e-4)

    printed = detect_json(capsys, checkpoint, [checkpoint, path])
    assert printed[0] == printed[1] and printed[0][0]["faces"]


def test_onnx_grids_hold_to_keras_on_real_photos(exported, shared_subset):
    """On real WIDER photos (../shared, evaluation photos used for parity only), the ONNX
    file's grids stay within 1e-4 of the Keras model's in onnxruntime and cv2.dnn: float32
    both, so only the order of summation differs."""
    pytest.importorskip("onnxruntime")
    from data.image import read_image

    model, checkpoint, _ = exported
    path = os.path.join(os.path.dirname(checkpoint), "parity.onnx")
    export_model(model, "onnx", path)
    photos = sorted(glob.glob(os.path.join(shared_subset, "WIDER_val", "images", "*", "*.jpg")))
    x = np.stack([FaceDetector.load(path).prepare(read_image(p))[0] for p in photos[:6]])
    expected = model.predict_on_batch(x)
    for runtime in (FaceDetector.load(path), FaceDetector._load_onnx_opencv(path, True)):
        np.testing.assert_allclose(runtime.predict_grids(x), expected, atol=1e-4)


def test_onnx_file_that_is_not_onnx_is_one_line(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="m.onnx: cannot load ONNX model"):
        FaceDetector.load(str(bad))
    with pytest.raises(CheckpointError, match="m.onnx: cannot load ONNX model"):
        FaceDetector._load_onnx_opencv(str(bad), letterbox=True)


def test_int8_export_calibrates_on_training_images_and_stays_close(exported, reuse_saved_model,
                                                                  tmp_path, capsys):
    """--int8 reads --calibration-images photos of --dataset, writes a uint8-in /
    float32-out file a quarter of the float32 size, close to the Keras grids."""
    from data.synthetic import make_demo_dataset

    model, checkpoint, _ = exported
    root = str(tmp_path / "demo")
    make_demo_dataset(root, num_train=6, num_val=2, seed=4, progress=False)
    out = str(tmp_path / "face_int8.tflite")
    assert export.main(["--weights", checkpoint, "--format", "tflite", "--int8",
                        "--calibration-images", "4", "--dataset", root, "--output", out]) == 0
    assert capsys.readouterr().out.startswith(
        f"{out}: tflite int8 (4 calibration images), input 96x96, grid 3x3")
    assert os.path.getsize(out) < 1.5 * model.count_params()  # ~1 byte per weight
    lite = FaceDetector.load(out)
    assert lite.kind == "tflite"
    # Photos of the kind it was calibrated on (the ranges of noise images are other ones).
    x = export_lib.calibration_inputs(sorted(glob.glob(f"{root}/**/*.jpg", recursive=True)),
                                      96, count=8, seed=1)
    expected = model.predict_on_batch(x)
    got = lite.predict_grids(x)
    # This untrained network is ill-conditioned (see `exported`: random head weights of
    # std 0.3 over BatchNorm statistics of one batch), the worst case for 8-bit
    # activations: its outputs move by 0.12 on average (correlation 0.76 with Keras). A
    # broken quantisation (wrong input scale, ranges from other data) gives no correlation.
    # The trained real-photo model's int8 AP, beside its float32 AP, is in
    # docs/benchmarks.md, "Export formats" (benchmarks/bench_real.py --score).
    correlation = np.corrcoef(got.ravel(), expected.ravel())[0, 1]
    assert 0.6 < correlation < 1.0, correlation


def test_saved_model_export_replaces_atomically(tmp_path, monkeypatch):
    """A new export swaps in whole; a failed one leaves the earlier export and no temp."""
    def fake_export(model, path, content=b"new"):
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(content)

    target = tmp_path / "sm"
    monkeypatch.setattr(export_lib, "export_saved_model", lambda m, p: fake_export(m, p, b"one"))
    export_model(None, "saved_model", str(target))
    monkeypatch.setattr(export_lib, "export_saved_model", lambda m, p: fake_export(m, p, b"two"))
    export_model(None, "saved_model", str(target))
    assert (target / "saved_model.pb").read_bytes() == b"two"

    def failing(model, path):
        fake_export(model, path, b"half")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(export_lib, "export_saved_model", failing)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export_model(None, "saved_model", str(target))
    assert (target / "saved_model.pb").read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["sm"]


def test_output_over_the_checkpoint_is_refused_and_it_is_kept(exported, tmp_path):
    """`--output m.keras` for m.keras would replace the checkpoint with a TFLite file; a
    SavedModel output folder holding the checkpoint would delete it: both refused before
    anything is loaded or written, naming both paths."""
    _, checkpoint, saved_model = exported
    before = open(checkpoint, "rb").read()
    with pytest.raises(ConfigError) as caught:
        export.main(["--weights", checkpoint, "--format", "tflite", "--output", checkpoint])
    assert str(caught.value) == (f"--output {checkpoint}: is the checkpoint being exported "
                                 f"({checkpoint}); not writing over it")
    link = str(tmp_path / "link.keras")
    os.symlink(checkpoint, link)
    with pytest.raises(ConfigError, match="is the checkpoint being exported"):
        export.main(["--weights", checkpoint, "--format", "tflite", "--output", link])
    assert open(checkpoint, "rb").read() == before
    # A SavedModel folder with the checkpoint inside it.
    folder = tmp_path / "sm"
    shutil.copytree(saved_model, folder)
    inside = str(folder / "model-0.50.keras")
    shutil.copy(checkpoint, inside)
    with pytest.raises(ConfigError, match=rf"--output {folder}: holds the checkpoint being "
                       rf"exported \({inside}\); replacing the folder would delete it"):
        export.main(["--weights", inside, "--format", "saved_model", "--output", str(folder)])
    assert open(inside, "rb").read() == before
    assert sorted(os.listdir(folder)) == sorted(os.listdir(saved_model) + ["model-0.50.keras"])


def test_output_under_a_file_names_it_not_file_exists(tmp_path):
    """`--output /etc/passwd/x.tflite` said "File exists": the file in the way is named,
    before the checkpoint is even loaded (this one is not a checkpoint at all)."""
    weights = tmp_path / "m.keras"
    weights.write_bytes(b"never loaded")
    for blocker in ("/etc/passwd", str(weights)):
        with pytest.raises(ConfigError) as caught:
            export.main(["--weights", str(weights), "--format", "tflite",
                         "--output", f"{blocker}/sub/x.tflite"])
        assert str(caught.value) == (f"--output {blocker}/sub/x.tflite: {blocker} is a file, "
                                     f"not a folder; choose a path in a folder")
