"""The detector network: grid shapes per stride, dtype, freezing, saving, backbone weights."""

import h5py
import keras
import numpy as np
import pytest

from config import Config
from data.grid import CLASS
from common.errors import CheckpointError, WeightsUnavailableError
from model import backbone_weights, network
from model.backbone_weights import imagenet_weights_file
from model.loss import make_loss, make_loss_metrics
from model.network import BACKBONE_NAME, check_grid_model, create_model, set_backbone_trainable

SIZE = 96
SMALL = Config(input_size=SIZE, grid_size=3, alpha=0.35, backbone_weights="none",
               head_channels=32)


def images(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def small_mobilenet(alpha=0.35, seed=None):
    """The bare backbone create_model wraps, with random (seeded) weights."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=alpha, include_top=False, weights=None
    )


def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


@pytest.fixture(scope="module")
def models():
    """One model per cell size: 32 px (last stage), 16 px and 8 px (top-down merges)."""
    return {g: create_model(SMALL.replace(grid_size=g)) for g in (3, 6, 12)}


@pytest.mark.parametrize("grid_size", [3, 6, 12])
def test_output_is_a_grid_of_sigmoids_per_stride(models, grid_size):
    model = models[grid_size]
    out = model.predict(images(), verbose=0)
    assert out.shape == (2, grid_size, grid_size, 5)
    assert out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))
    # The class bias starts at the 0.01 prior so the focal loss starts stable.
    assert np.all(np.abs(out[..., CLASS] - 0.01) < 0.005)
    assert model.input_shape == (None, SIZE, SIZE, 3)
    assert model.output_shape == (None, grid_size, grid_size, 5)


def test_the_network_takes_uint8_pixels_and_scales_them_to_minus_one_one(models):
    """MobileNetV2 wants [-1, 1]: the scaling is the model's first layer, so nothing that
    feeds it (generator, detect.py, an export) can forget it."""
    model = models[3]
    assert model.inputs[0].dtype == "uint8"
    scaling = keras.Model(model.inputs, model.get_layer(network.INPUT_SCALING).output)
    pixels = np.array([0, 127, 255], np.uint8).reshape(1, 1, 3, 1).repeat(3, axis=3)
    pixels = np.pad(pixels, ((0, 0), (0, SIZE - 1), (0, SIZE - 3), (0, 0)))
    scaled = np.asarray(scaling([pixels]))
    np.testing.assert_allclose(scaled[0, 0, :3, 0], [-1.0, 127 / 127.5 - 1, 1.0], atol=1e-6)
    assert scaled.min() >= -1 and scaled.max() <= 1


def test_output_stays_float32_under_mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = create_model(SMALL)
        assert model.get_layer("head_out").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        out = model.predict(images(1), verbose=0)
    finally:
        keras.config.set_dtype_policy(policy)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))


def test_freezing_the_backbone():
    model = create_model(SMALL)
    backbone = model.get_layer(BACKBONE_NAME)
    head_trainable = count(w for layer in model.layers if layer is not backbone
                           for w in layer.trainable_weights)
    everything = count(model.weights)
    bn_stats = count(w for layer in backbone.layers
                     if isinstance(layer, keras.layers.BatchNormalization)
                     for w in (layer.moving_mean, layer.moving_variance))
    bn_affine = count(w for layer in backbone.layers
                      if isinstance(layer, keras.layers.BatchNormalization)
                      for w in (layer.gamma, layer.beta))

    set_backbone_trainable(model, False)
    assert count(model.trainable_weights) == head_trainable
    # Frozen BatchNorm runs in inference mode: training=True changes nothing.
    x = images(4)
    for a, b in zip(backbone(x, training=True), backbone(x, training=False)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)

    # Fine-tuning a pretrained backbone: BatchNorm stays frozen (Keras' guidance).
    set_backbone_trainable(model, True, train_batchnorm=False)
    assert count(model.trainable_weights) == everything - count(model.non_trainable_weights)
    assert count(backbone.trainable_weights) == count(backbone.weights) - bn_stats - bn_affine

    set_backbone_trainable(model, True)  # from scratch: BatchNorm must learn its statistics
    assert count(backbone.trainable_weights) == count(backbone.weights) - bn_stats


def test_keras_file_round_trip_needs_no_custom_objects(models, tmp_path):
    model = models[6]
    path = str(tmp_path / "detector.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    x = images(3)
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    check_grid_model(restored, path)


def test_compiled_model_trains_and_reloads_with_loss_and_metrics(tmp_path):
    """GridLoss and its metrics are registered: load_model restores them by name."""
    config = SMALL
    model = create_model(config)
    set_backbone_trainable(model, False)
    # Eager keeps the test fast; tests/test_loss.py checks the loss in graph mode.
    model.compile(optimizer="adam", loss=make_loss(config), metrics=make_loss_metrics(config),
                  run_eagerly=True)
    y = np.zeros((2, 3, 3, 5), np.float32)
    y[0, 1, 1] = (0.3, 0.25, 0.5, 0.5, 1.0)
    history = model.fit(images(), y, epochs=1, verbose=0)
    assert {"loss", "obj_loss", "box_loss"} <= set(history.history)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "compiled.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.loss).__name__ == "GridLoss"
    assert restored.evaluate(images(), y, verbose=0, return_dict=True)["box_loss"] > 0


def test_offline_imagenet_names_the_three_ways_out(tmp_path, monkeypatch):
    """No cached file and no download (mocked, so this holds with internet too)."""
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: [Errno -3] offline")

    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(backbone_weights.keras.utils, "get_file", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        create_model(SMALL, backbone_weights="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert "~/.keras/models" in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    # The value at fault, then the two other values of backbone_weights (common/cli.py turns a
    # leading `backbone_weights='imagenet':` into `--backbone-weights imagenet:`).
    assert message.startswith("backbone_weights='imagenet': ")
    assert "set backbone_weights to a weights file path" in message and "'none'" in message


def test_cached_imagenet_file_is_loaded_without_download(tmp_path, monkeypatch):
    """A file put in $KERAS_HOME/models under Keras' name is what 'imagenet' loads."""
    def offline(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    source = small_mobilenet(seed=7)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    # Keras' published file is a legacy HDF5 weights file; write one the same way.
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
    with h5py.File(models_dir / imagenet_weights_file(0.35, SIZE), "w") as f:
        save_weights_to_hdf5_group(f, source)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(backbone_weights.keras.utils, "get_file", offline)
    model = create_model(SMALL, backbone_weights="imagenet")
    loaded = model.get_layer(BACKBONE_NAME).get_layer("block_16_project").kernel
    np.testing.assert_array_equal(
        np.asarray(loaded), np.asarray(source.get_layer("block_16_project").kernel))


def test_imagenet_file_names_fall_back_to_224_weights():
    assert imagenet_weights_file(0.75, 224).endswith("_0.75_224_no_top.h5")
    assert imagenet_weights_file(1, 128).endswith("_1.0_128_no_top.h5")
    assert imagenet_weights_file(0.5, 256).endswith("_0.5_224_no_top.h5")


def test_imagenet_alpha_without_weights_is_refused():
    with pytest.raises(WeightsUnavailableError,
                       match=r"^alpha=0\.6: .*; set backbone_weights to 'none' or a weights file"):
        create_model(SMALL.replace(alpha=0.6), backbone_weights="imagenet")


def test_weights_file_path_loads_into_the_backbone(tmp_path):
    source = small_mobilenet(seed=3)
    path = str(tmp_path / "backbone.weights.h5")
    source.save_weights(path)
    model = create_model(SMALL.replace(backbone_weights=path))
    np.testing.assert_array_equal(
        np.asarray(model.get_layer(BACKBONE_NAME).get_layer("Conv1").kernel),
        np.asarray(source.get_layer("Conv1").kernel))


def test_missing_weights_path_is_named(tmp_path):
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(WeightsUnavailableError, match="nope.weights.h5: backbone weights file"):
        create_model(SMALL, backbone_weights=missing)


def test_weights_of_another_width_are_refused(tmp_path):
    path = str(tmp_path / "alpha05.weights.h5")
    small_mobilenet(alpha=0.5).save_weights(path)
    with pytest.raises(WeightsUnavailableError, match="alpha05.weights.h5: cannot load"):
        create_model(SMALL, backbone_weights=path)


def test_a_model_that_is_not_a_grid_detector_is_refused():
    inputs = keras.Input((SIZE, SIZE, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(CheckpointError, match="other.keras: not a face grid model"):
        check_grid_model(classifier, "other.keras")


def test_neighbour_cells_network_reaches_offsets_beyond_its_cell(tmp_path):
    """With neighbour_cells the centre offsets are 2 sigmoid - 0.5, in [-0.5, 1.5], the
    rest stays sigmoid; the file reloads with no custom_objects and gives the same grid."""
    config = SMALL.replace(grid_size=6, neighbour_cells=True)
    model = create_model(config)
    head = model.get_layer("head_out")
    kernel, bias = head.get_weights()
    bias[2], bias[3] = 8.0, -8.0  # yc, xc logits far past both ends of the sigmoid
    head.set_weights([np.zeros_like(kernel), bias])
    out = model.predict(images(), verbose=0)
    np.testing.assert_allclose(out[..., 2], 1.5, atol=1e-3)
    np.testing.assert_allclose(out[..., 3], -0.5, atol=1e-3)
    assert np.all((out[..., CLASS] > 0) & (out[..., CLASS] < 1))
    path = str(tmp_path / "n.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(images(), verbose=0), out,
                               atol=1e-6)


def test_at_input_size_runs_the_same_weights_on_a_larger_grid():
    """at_input_size keeps the weights and the cell size: 2x the input, 2x the cells, and
    on an image tiled from the smaller one's the inner cells see the same thing."""
    config = SMALL.replace(grid_size=6)
    model = create_model(config)
    bigger = network.at_input_size(model, config, 2 * SIZE)
    assert bigger.output_shape == (None, 12, 12, 5)
    for a, b in zip(model.get_weights(), bigger.get_weights()):
        np.testing.assert_array_equal(a, b)
    same = network.at_input_size(model, config, SIZE)
    np.testing.assert_allclose(same.predict(images(), verbose=0), model.predict(images(), verbose=0),
                               atol=1e-5)


def test_at_input_size_keeps_the_face_sizes_in_pixels():
    """h, w are a face's size over the training side, which the convolutions cannot see:
    the network resized to 2x the input halves them, so they decode to the same pixels,
    and changes no other channel (the raw 2x network would draw every box 2x too big)."""
    from data.grid import H, W

    config = SMALL.replace(grid_size=6, neighbour_cells=True)
    model = create_model(config)
    bigger = network.at_input_size(model, config, 2 * SIZE)
    raw = create_model(config.replace(input_size=2 * SIZE, grid_size=12,
                                      backbone_weights="none"))
    raw.set_weights(model.get_weights())
    x = np.random.default_rng(3).integers(0, 256, (1, 2 * SIZE, 2 * SIZE, 3), dtype=np.uint8)
    got, unscaled = bigger.predict(x, verbose=0), raw.predict(x, verbose=0)
    np.testing.assert_allclose(got[..., [H, W]], unscaled[..., [H, W]] / 2, rtol=1e-5)
    others = [c for c in range(got.shape[-1]) if c not in (H, W)]
    np.testing.assert_allclose(got[..., others], unscaled[..., others], atol=1e-6)


def test_separable_head_is_cheaper_gives_the_same_grid_and_resizes(tmp_path):
    """head_separable: depthwise-separable 3x3 convolutions in the neck and head."""
    from model.network import at_input_size

    config = SMALL.replace(grid_size=12, head_separable=True)
    model = create_model(config)
    full = create_model(config.replace(head_separable=False))
    separable = [l.name for l in model.layers
                 if isinstance(l, keras.layers.SeparableConv2D)]
    assert separable == ["neck_smooth8", "head_conv1", "head_conv2"]
    assert model.count_params() < full.count_params()
    assert model.output_shape == full.output_shape == (None, 12, 12, 5)
    # Trained weights run at another input size (the detection-size choice needs it).
    resized = at_input_size(model, config, 128)
    assert resized.output_shape == (None, 16, 16, 5)
    path = str(tmp_path / "separable.keras")
    model.save(path)
    x = images(1)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_centre_sampling_network_reaches_its_offset_range():
    """centre_radius 2.5: yc, xc = 5 sigmoid - 2 spans [-2, 3] cells."""
    config = SMALL.replace(grid_size=6, centre_radius=2.5)
    model = create_model(config)
    out = model.get_layer("grid")
    np.testing.assert_allclose(out.scale[2:4], [5.0, 5.0])
    np.testing.assert_allclose(out.offset[2:4], [-2.0, -2.0])


def test_the_backbone_gives_the_cell_sizes_the_config_allows():
    from data.grid import CELL_SIZES

    assert tuple(network.FEATURE_LAYERS) == CELL_SIZES
