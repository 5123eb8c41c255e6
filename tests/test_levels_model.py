"""A detector of several grid levels end to end: network, generator targets, validation
and the runtimes read the levels from the model's own shapes and contract (every export
of a several-level model: tests/test_export_landmarks.py, whose model has levels and
landmarks)."""

import cv2
import keras
import numpy as np
import pytest

from config import Config
from data.data_generator import FaceGridDataset
from data.grid import CLASS, H, encode_levels, split_levels
from data.records import ImageRecord
from model.loss import make_loss, make_loss_metrics
from model.network import at_input_size, check_grid_model, create_model
from model.validation import GridValidation

SIZE = 64
LEVELS = (8, 4, 2)  # cells of 8, 16 and 32 px
CELLS = 64 + 16 + 4
CONFIG = Config(input_size=SIZE, grid_size=8, grid_levels=3, alpha=0.35,
                backbone_weights="none", head_channels=16, head_separable=True,
                centre_radius=2.5, batch_size=2, augment=False, workers=0)


def inputs(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(4)
    return create_model(CONFIG)


def test_network_gives_the_cells_of_every_level_with_a_head_each(model):
    assert model.output_shape == (None, CELLS, 5)
    check_grid_model(model, "levels.keras")
    names = {layer.name for layer in model.layers}
    assert {"head_out_s8", "head_out_s16", "head_out_s32", "neck_smooth8",
            "neck_smooth16"} <= names
    out = model.predict(inputs(), verbose=0)
    assert out.shape == (2, CELLS, 5) and np.all((out >= 0) & (out <= 1))
    # Each level starts with boxes one of its own cells wide, face score at the prior.
    for grid, g in zip(split_levels(out, LEVELS), LEVELS):
        assert np.abs(grid[..., H] - 1 / g).max() < 0.01
        assert np.abs(grid[..., CLASS] - 0.01).max() < 0.005
    # A larger input: the same weights, more cells per level.
    big = at_input_size(model, CONFIG, 128)
    assert big.output_shape == (None, 256 + 64 + 16, 5)


def test_generator_targets_are_the_levels_cells_of_each_image(tmp_path):
    image = np.full((64, 64, 3), 120, np.uint8)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, image)
    boxes = np.array([[4, 4, 12, 12], [10, 10, 60, 60]], np.float32)  # levels 0 and 1
    records = [ImageRecord(path, "a.png", boxes, np.zeros(2, bool))] * 2
    dataset = FaceGridDataset(records, CONFIG, training=False)
    images, targets, faces = dataset.load_batch(0)
    assert images.shape == (2, SIZE, SIZE, 3) and targets.shape == (2, CELLS, 5)
    expected, _ = encode_levels(boxes, np.zeros(2, bool), CONFIG.grid_spec())
    np.testing.assert_array_equal(targets[0], expected)
    fine, middle, coarse = split_levels(targets[0], LEVELS)
    assert (fine[..., CLASS] == 1).sum() == 1 and (middle[..., CLASS] == 1).sum() > 1
    assert (coarse[..., CLASS] == 0).all()


def test_loss_trains_and_validation_scores_the_levels(model, tmp_path):
    image = np.full((64, 64, 3), 90, np.uint8)
    image[10:30, 10:30] = 230
    path = str(tmp_path / "b.png")
    cv2.imwrite(path, image)
    records = [ImageRecord(path, "b.png", [[10, 10, 30, 30]], [False])] * 2
    dataset = FaceGridDataset(records, CONFIG, training=False)
    images, targets, _ = dataset.load_batch(0)
    net = keras.models.clone_model(model)
    net.set_weights(model.get_weights())
    net.compile(optimizer="adam", loss=make_loss(CONFIG), metrics=make_loss_metrics(CONFIG),
                run_eagerly=True)
    history = net.fit(images, targets, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    validation = GridValidation(dataset, CONFIG)
    validation.set_model(net)
    metrics = validation.evaluate()
    assert {"val_iou", "val_mse", "val_ap"} <= set(metrics)
    assert 0 <= metrics["val_iou"] <= 1 and np.isfinite(metrics["val_mse"])


