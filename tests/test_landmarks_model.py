"""The model side of five landmarks per face: the network's 15 channels, the loss's
landmark term, the post-processing and the runtime's points (issue 21)."""

import keras
import numpy as np
import pytest

from config import Config
from data.grid import NUM_CHANNELS, point_channels
from model.network import OUTPUT_NAME, check_grid_model, create_model

SIZE = 96
SMALL = Config(input_size=SIZE, grid_size=6, alpha=0.35, backbone_weights="none",
               head_channels=16, landmarks=True)


def images(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


# ------------------------------------------------------------------------- network
def test_the_network_adds_ten_linear_landmark_channels_after_the_five_sigmoids(tmp_path):
    """(B, G, G, 15): the box channels as without landmarks, the landmark channels not
    squashed (a bias of 3 gives 3, beyond any sigmoid); the output keeps its name and the
    file reloads with no custom_objects."""
    model = create_model(SMALL.replace(neighbour_cells=True))
    assert model.output_shape == (None, 6, 6, 15)
    assert model.get_layer(OUTPUT_NAME) is model.layers[-1]
    check_grid_model(model, "m.keras")
    head = model.get_layer("head_landmarks")
    kernel, bias = head.get_weights()
    bias[:] = 3.0
    bias[point_channels(1)[1] - NUM_CHANNELS] = -2.5
    head.set_weights([np.zeros_like(kernel), bias])
    out = model.predict(images(), verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., NUM_CHANNELS:point_channels(1)[1]], 3.0, atol=1e-6)
    np.testing.assert_allclose(out[..., point_channels(1)[1]], -2.5, atol=1e-6)
    boxes = out[..., :NUM_CHANNELS]
    assert np.all((boxes[..., [0, 1, 4]] >= 0) & (boxes[..., [0, 1, 4]] <= 1))
    path = str(tmp_path / "l.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(images(), verbose=0),
                               out, atol=1e-6)


def test_several_levels_give_fifteen_channels_per_cell_in_the_flat_layout():
    model = create_model(SMALL.replace(grid_size=12, grid_levels=3))
    assert model.output_shape == (None, 144 + 36 + 9, 15)
    check_grid_model(model, "m.keras")
    assert create_model(SMALL.replace(grid_size=12, grid_levels=3, landmarks=False)
                        ).output_shape == (None, 189, 5)
