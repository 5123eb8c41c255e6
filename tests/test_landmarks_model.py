"""The model side of five landmarks per face: the network's 15 channels, the loss's
landmark term, the post-processing and the runtime's points (issue 21)."""

import os

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


def test_without_landmarks_is_the_box_network_of_the_same_recipe_with_the_same_boxes():
    """export.py --boxes-only: a landmark network's box detector alone has the layers and
    weights of the box-only network of the same config (no landmark head), its output is
    named as every runtime reads it, and its cells are the landmark network's first five;
    a network without landmarks comes back as it is."""
    from model.network import without_landmarks

    config = SMALL.replace(grid_size=12, grid_levels=3)
    model = create_model(config)
    boxes = without_landmarks(model)
    twin = create_model(config.replace(landmarks=False))
    assert boxes.output_shape == (None, 189, NUM_CHANNELS)
    assert boxes.layers[-1].name == OUTPUT_NAME
    assert not any(layer.name.startswith("head_landmarks") for layer in boxes.layers)
    assert boxes.count_params() == twin.count_params() < model.count_params()
    check_grid_model(boxes, "boxes")
    x = images(2, seed=4)
    np.testing.assert_array_equal(boxes.predict(x, verbose=0),
                                  model.predict(x, verbose=0)[..., :NUM_CHANNELS])
    assert without_landmarks(twin) is twin


# ------------------------------------------------------------------------- loss
def _loss_scene():
    """(1, 7, 7, 17) targets of one face with all six points, one face without points;
    a perfect (1, 7, 7, 15) prediction of them."""
    from data.grid import CLASS, encode_grid

    boxes = np.array([[40, 40, 104, 120], [150, 150, 190, 200]], np.float32)
    points = np.full((2, 6, 2), np.nan, np.float32)
    points[0] = [(60, 70), (85, 70), (72, 90), (62, 105), (84, 106), (73, 105.5)]
    y_true = encode_grid(boxes, [False, False], 224, 7, points=points).grid[None]
    y_pred = np.nan_to_num(y_true[..., :15]).copy()
    y_pred[..., CLASS] = (y_true[..., CLASS] == 1).astype(np.float32)
    return y_true, y_pred


def _terms(loss, y_true, y_pred):
    import tensorflow as tf

    return [float(t[0]) for t in loss.components(tf.constant(y_true), tf.constant(y_pred))]


def test_the_landmark_term_is_weighted_smooth_l1_over_face_cells_known_values():
    """Two face cells; one coordinate off by 0.05 (quadratic part: 0.5 * 0.05^2 * 9) and
    one by 0.5 (linear: 0.5 - 0.5 / 9): the term is weight * their sum / 2 face cells."""
    from model.loss import GridLoss

    y_true, y_pred = _loss_scene()
    loss = GridLoss(landmark_loss_weight=0.1)
    assert _terms(loss, y_true, y_pred)[2] == pytest.approx(0.0, abs=1e-7)
    x_nose = point_channels(2)[0]
    y_eye = point_channels(1)[1]
    y_pred[0, 2, 2, x_nose] += 0.05  # the first face's centre cell: (72, 80) -> (2, 2)
    y_pred[0, 2, 2, y_eye] -= 0.5
    expected = 0.1 * (0.5 * 0.05 ** 2 * 9 + (0.5 - 0.5 / 9)) / 2
    obj, box, landmarks = _terms(loss, y_true, y_pred)
    assert landmarks == pytest.approx(expected, rel=1e-4)
    import tensorflow as tf

    total = float(loss(tf.constant(y_true), tf.constant(y_pred)))
    assert total == pytest.approx(obj + box + landmarks, rel=1e-5)
    # The box and objectness terms are those of the five channels alone.
    plain = _terms(loss, y_true[..., :5], y_pred[..., :5])
    assert len(plain) == 2 and plain == pytest.approx([obj, box], rel=1e-6)


def test_the_wing_landmark_term_is_log_shaped_under_its_width_and_continuous():
    """landmark_loss="wing": errors 0.05 (w ln(1 + 0.05 / eps)) and 0.5 (0.5 - C) with
    w = 0.1, eps = 0.02; at an error of 0.01 its gradient is w / (eps + 0.01), 37 times
    smooth L1's; the loss is continuous at w and survives a Keras round trip."""
    import math

    import tensorflow as tf

    from model.loss import GridLoss, LandmarkLoss, make_loss_metrics

    y_true, y_pred = _loss_scene()
    loss = GridLoss(landmark_loss_weight=0.1, landmark_loss="wing")
    assert _terms(loss, y_true, y_pred)[2] == pytest.approx(0.0, abs=1e-7)
    x_nose, y_eye = point_channels(2)[0], point_channels(1)[1]
    off = y_pred.copy()
    off[0, 2, 2, x_nose] += 0.05
    off[0, 2, 2, y_eye] -= 0.5
    corner = 0.1 - 0.1 * math.log(1 + 0.1 / 0.02)
    expected = 0.1 * (0.1 * math.log(1 + 0.05 / 0.02) + (0.5 - corner)) / 2
    assert _terms(loss, y_true, off)[2] == pytest.approx(expected, rel=1e-4)

    def term(kind, error):
        shifted = y_pred.copy()
        shifted[0, 2, 2, x_nose] += error
        variable = tf.Variable(shifted)
        with tf.GradientTape() as tape:
            value = GridLoss(landmark_loss_weight=1.0, landmark_loss=kind).components(
                tf.constant(y_true), variable)[2][0]
        return float(value), float(tape.gradient(value, variable)[0, 2, 2, x_nose])

    (_, wing_grad), (_, smooth_grad) = term("wing", 0.01), term("smooth_l1", 0.01)
    # Two face cells: the gradient of the per-face mean is half the per-point one.
    assert wing_grad == pytest.approx(0.5 * 0.1 / 0.03, rel=1e-3)
    assert smooth_grad == pytest.approx(0.5 * 0.01 * 9, rel=1e-3)
    below, above = term("wing", 0.1 - 1e-4)[0], term("wing", 0.1 + 1e-4)[0]
    assert above - below == pytest.approx(0.0, abs=2e-4)

    again = GridLoss.from_config(loss.get_config())
    assert again.landmark_loss == "wing"
    metric = [m for m in make_loss_metrics(SMALL.replace(landmark_loss="wing"))
              if isinstance(m, LandmarkLoss)][0]
    assert LandmarkLoss.from_config(metric.get_config()).get_config()["landmark_loss"] == "wing"
    with pytest.raises(ValueError, match="landmark_loss='l2': must be one of smooth_l1, wing"):
        GridLoss(landmark_loss="l2")
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="landmark_loss='l2': must be one of"):
        SMALL.replace(landmark_loss="l2")


def test_the_mouth_centre_supervises_the_mean_of_the_predicted_corners():
    """A Caltech face: corners absent, centre present. The error is smooth L1 of (mean of
    the corners - centre), and its gradient reaches both corners, half each."""
    import tensorflow as tf

    from data.grid import CLASS, encode_grid
    from model.loss import GridLoss

    box = np.array([[40, 40, 104, 120]], np.float32)
    points = np.full((1, 6, 2), np.nan, np.float32)
    points[0, 5] = (73, 105)
    y_true = encode_grid(box, [False], 224, 7, points=points).grid[None]
    y_pred = np.zeros((1, 7, 7, 15), np.float32)
    y_pred[..., :5] = y_true[..., :5]
    y_pred[..., CLASS] = 0.0
    centre_x = y_true[0, 2, 2, point_channels(5)[0]]
    rx, lx = point_channels(3)[0], point_channels(4)[0]
    y_pred[0, 2, 2, rx] = centre_x + 0.5  # the corners' mean is 0.2 right of the centre
    y_pred[0, 2, 2, lx] = centre_x - 0.1
    y_pred[0, 2, 2, rx + 1] = y_pred[0, 2, 2, lx + 1] = y_true[0, 2, 2, point_channels(5)[1]]
    loss = GridLoss(landmark_loss_weight=1.0)
    assert _terms(loss, y_true, y_pred)[2] == pytest.approx(0.2 - 0.5 / 9, rel=1e-4)
    variable = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = loss.components(tf.constant(y_true), variable)[2]
    grad = tape.gradient(value, variable).numpy()
    assert grad[0, 2, 2, rx] == pytest.approx(0.5) and grad[0, 2, 2, lx] == pytest.approx(0.5)
    others = np.ones(15, bool)
    others[[rx, lx]] = False
    assert np.all(grad[0, 2, 2, others] == 0) and np.all(grad[0, :2] == 0)


def test_absent_points_give_a_finite_loss_and_no_gradient_to_their_channels():
    import tensorflow as tf

    from model.loss import GridLoss

    y_true, _ = _loss_scene()
    y_true[0, 2, 2, point_channels(0)[0]:point_channels(1)[0]] = np.nan  # right eye absent
    y_pred = np.random.default_rng(0).uniform(-2, 2, (1, 7, 7, 15)).astype(np.float32)
    y_pred[..., :5] = np.clip(y_pred[..., :5], 0.01, 0.99)
    variable = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = GridLoss()(tf.constant(y_true), variable)
    grad = tape.gradient(value, variable).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    lmk = grad[..., 5:]
    face = np.isfinite(y_true[0, ..., 5:15]).any(axis=-1)
    assert face.sum() == 1  # the first face's centre cell; the second has no points
    assert np.all(lmk[0][~face] == 0)  # background cells and the face without points
    cell = lmk[0, 2, 2]
    assert np.all(cell[:2] == 0) and np.all(cell[2:] != 0)


def test_the_metrics_report_lmk_loss_only_for_a_model_with_landmarks():
    from model.loss import make_loss, make_loss_metrics

    config = Config(landmarks=True, landmark_loss_weight=0.3)
    assert [m.name for m in make_loss_metrics(config)] == ["obj_loss", "box_loss", "lmk_loss"]
    assert [m.name for m in make_loss_metrics(Config())] == ["obj_loss", "box_loss"]
    assert make_loss(config).landmark_loss_weight == 0.3
    y_true, y_pred = _loss_scene()
    y_pred[..., 5:] += 0.2
    import tensorflow as tf

    metric = make_loss_metrics(config)[2]
    metric.update_state(tf.constant(y_true), tf.constant(y_pred))
    assert float(metric.result()) == pytest.approx(_terms(make_loss(config), y_true, y_pred)[2])


# ------------------------------------------------------------------------- generator
GEN = Config(input_size=64, grid_size=8, batch_size=2, seed=3, augment=False, workers=0,
             landmarks=True, neighbour_cells=True)


def _point_records(tmp_path, n=2):
    """n 64x64 PNGs each with two faces: one with five points, one (Caltech-like) with a
    mouth centre only."""
    import cv2

    from data.records import ImageRecord

    records = []
    for i in range(n):
        path = str(tmp_path / f"p{i}.png")
        cv2.imwrite(path, np.full((64, 64, 3), 100 + 10 * i, np.uint8))
        boxes = np.array([[8, 8, 32, 36], [36, 30, 60, 60]], np.float32)
        landmarks = np.full((2, 5, 2), np.nan, np.float32)
        landmarks[0] = [(14, 16), (26, 16), (20, 22), (15, 30), (25, 30)]
        centres = np.full((2, 2), np.nan, np.float32)
        centres[1] = (48, 52)
        records.append(ImageRecord(path, f"p{i}.png", boxes, np.zeros(2, bool),
                                   landmarks=landmarks, mouth_centres=centres))
    return records


def test_the_generator_encodes_each_samples_points_into_17_channel_targets(tmp_path):
    from data.augment import AugmentSpec, load_training_sample
    from data.data_generator import FaceGridDataset
    from data.grid import encode_levels

    records = _point_records(tmp_path)
    dataset = FaceGridDataset(records, GEN, training=False)
    images, targets, faces = dataset.load_batch(0)
    assert targets.shape == (2, 8, 8, 17) and targets.dtype == np.float32
    image, boxes, ignore, points = load_training_sample(
        records[0], GEN.grid_spec(), AugmentSpec.from_config(GEN), None, False,
        with_points=True)
    expected = encode_levels(boxes, ignore, GEN.grid_spec(), points).grid
    np.testing.assert_array_equal(targets[0], expected)
    assert len(faces[0]) == 3 and faces[0][2].shape == (2, 6, 2)
    face = targets[0][..., 0:5][..., 4] == 1
    labelled = np.isfinite(targets[0][..., 5:]).any(axis=-1)
    assert labelled.sum() >= 2 and np.all(face[labelled])
    # Without landmarks the same records give the 5-channel targets of before.
    plain = FaceGridDataset(records, GEN.replace(landmarks=False), training=False)
    np.testing.assert_array_equal(plain.load_batch(0)[1], targets[..., :5])


def test_debug_pictures_show_the_points(tmp_path):
    import cv2

    from data.data_generator import FaceGridDataset
    from data.draw import LANDMARK_COLORS

    debug = tmp_path / "debug"
    FaceGridDataset(_point_records(tmp_path), GEN, training=False,
                    debug_dir=str(debug)).load_batch(0)
    picture = cv2.imread(str(debug / sorted(os.listdir(debug))[0]))
    assert tuple(picture[16, 14]) == LANDMARK_COLORS[0]  # the right eye at (14, 16)


def test_mosaic_and_the_blank_fallback_carry_points(tmp_path):
    from data.data_generator import FaceGridDataset
    from data.records import ImageRecord

    records = _point_records(tmp_path, 4)
    config = GEN.replace(augment=True, mosaic_prob=1.0, batch_size=4)
    _, targets, faces = FaceGridDataset(records, config, training=True).load_batch(0)
    assert targets.shape == (4, 8, 8, 17)
    assert all(len(f) == 3 and f[2].shape == (len(f[0]), 6, 2) for f in faces)
    assert np.isfinite(targets[..., 5:]).any()
    missing = [ImageRecord(str(tmp_path / "gone.png"), "gone.png", [[1, 1, 9, 9]], [False])]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, targets, faces = FaceGridDataset(missing, GEN.replace(batch_size=1),
                                            training=False).load_batch(0)
    assert faces[0][2].shape == (0, 6, 2) and np.isnan(targets[..., 5:]).all()


# ------------------------------------------------------------------------- validation
def test_val_nme_is_the_nme_of_the_face_cells_points_and_lower_is_better(tmp_path):
    """Perfect points: NME 0. Every point 1 px right of the truth on faces whose eyes are
    12 px apart: NME 1 / 12 (the mouth centre against the corners' mean is 1 px off too)."""
    from data.data_generator import FaceGridDataset
    from model.validation import METRICS, cell_landmark_pairs

    assert METRICS["val_nme"] == "min"
    dataset = FaceGridDataset(_point_records(tmp_path), GEN.replace(neighbour_cells=False),
                              training=False)
    _, targets, _ = dataset.load_batch(0)
    perfect = np.nan_to_num(targets[..., :15])
    predicted, truth = cell_landmark_pairs(targets, perfect, 64)
    assert predicted.shape == (4, 5, 2) and truth.shape == (4, 6, 2)  # 2 faces x 2 images
    from model.validation import _nme

    assert _nme([predicted], [truth]) == pytest.approx(0.0, abs=1e-5)
    shifted = perfect.copy()
    face = targets[..., 4] == 1
    widths = targets[..., 1] * 64
    for k in range(5):
        shifted[..., 5 + 2 * k] += np.where(face, 1.0 / np.maximum(widths, 1e-6), 0)
    predicted, truth = cell_landmark_pairs(targets, shifted, 64)
    # Only the face with eyes is scored (the mouth-centre-only face has no eye distance).
    assert _nme([predicted], [truth]) == pytest.approx(1 / 12, rel=1e-3)


def test_the_validation_callback_logs_val_nme_for_a_landmark_model(tmp_path):
    from data.data_generator import FaceGridDataset
    from model.validation import GridValidation
    from helpers import tiny_grid_model

    config = GEN.replace(grid_size=8, neighbour_cells=False)
    dataset = FaceGridDataset(_point_records(tmp_path), config, training=False)
    validation = GridValidation(dataset, config, image_log_dir=str(tmp_path / "tb"))
    validation.set_model(tiny_grid_model(config))
    logs = {}
    validation.on_epoch_end(0, logs)  # the TensorBoard images draw the points too
    validation.on_train_end()
    assert np.isfinite(logs["val_nme"]) and logs["val_nme"] > 0
    assert "val_ap" in logs and os.listdir(tmp_path / "tb")
    plain = GridValidation(FaceGridDataset(_point_records(tmp_path), config.replace(
        landmarks=False), training=False), config.replace(landmarks=False))
    plain.set_model(tiny_grid_model(config.replace(landmarks=False)))
    assert "val_nme" not in plain.evaluate()


# ------------------------------------------------------------------------- training
def test_a_landmark_model_trains_and_logs_lmk_loss_and_val_nme(tmp_path_factory, tmp_path,
                                                               monkeypatch):
    """Keras fits 15-channel outputs to 17-channel targets; the history carries lmk_loss
    and val_nme (NaN here: the synthetic faces have no points, so the term is 0)."""
    from conftest import make_demo_root
    from helpers import tiny_grid_model, tiny_train_config

    from model.training import train

    monkeypatch.setattr("model.network.create_model", tiny_grid_model)
    root = make_demo_root(tmp_path_factory, num_train=16, num_val=8)
    config = tiny_train_config(root, tmp_path, finetune_epochs=1, steps_per_epoch=2,
                               validation_steps=1, landmarks=True)
    result = train(config)
    history = result.history
    assert np.isfinite(history["loss"][0]) and history["lmk_loss"][0] == pytest.approx(0.0)
    assert "val_nme" in history


# ------------------------------------------------------------------------- post-processing
def _landmark_grid():
    """A (7, 7, 15) prediction at 224 px: two overlapping boxes (NMS keeps the higher) and
    one apart, each with its own points."""
    grid = np.zeros((7, 7, 15), np.float32)
    grid[3, 3, :5] = (0.25, 0.25, 0.5, 0.5, 0.9)  # 56 px, centred at (112, 112)
    grid[3, 3, 5:] = 0.1
    grid[3, 4, :5] = (0.25, 0.25, 0.5, -0.4, 0.8)  # nearly the same box from the next cell
    grid[3, 4, 5:] = -0.3
    grid[3, 0, :5] = (0.1, 0.1, 0.5, 0.5, 0.7)  # centred at (16, 112)
    grid[3, 0, 5:] = 0.0
    return grid


def test_detections_carry_their_points_through_nms_and_the_letterbox_inverse():
    from data.boxes import InputMapping
    from model.postprocess import DetectSpec, Detections, detect_from_grid

    letterbox = InputMapping.fit(448, 224, 224)  # a 448 x 224 photo: scale 0.5, 56 px padding
    found = detect_from_grid(_landmark_grid(), letterbox, DetectSpec(0.5, 0.4))
    assert len(found.boxes) == 2 and found.landmarks.shape == (2, 5, 2)
    assert found.landmarks.dtype == np.float32
    # The kept box's points: cell centre (112, 112) + 0.1 * 56 px, in the photo's pixels.
    expected = letterbox.points_to_original(np.full((5, 2), 112 + 5.6, np.float32))
    np.testing.assert_allclose(found.landmarks[0], expected, atol=1e-3)
    np.testing.assert_allclose(found.landmarks[1],
                               letterbox.points_to_original(np.tile([16.0, 112.0], (5, 1))),
                               atol=1e-3)
    # A model without landmarks: None, as before; empty results keep the form.
    plain = detect_from_grid(_landmark_grid()[..., :5], letterbox, DetectSpec(0.5, 0.4))
    assert plain.landmarks is None and np.array_equal(plain.boxes, found.boxes)
    none = detect_from_grid(_landmark_grid(), letterbox, DetectSpec(0.95))
    assert none.landmarks.shape == (0, 5, 2)
    assert Detections.empty().landmarks is None


def test_the_runtime_reads_landmarks_from_the_output_and_the_contract(tmp_path):
    from helpers import tiny_grid_model

    from common.errors import CheckpointError
    from data.grid import GridSpec
    from model.contract import ModelContract
    from model.detector import FaceDetector

    detector = FaceDetector(lambda x: np.repeat(_landmark_grid()[None], len(x), 0), 224, 7,
                            landmarks=True)
    assert detector.landmarks and detector.grid.landmarks
    image = np.zeros((224, 448, 3), np.uint8)
    found = detector.detect(image, score_threshold=0.5)
    assert found.landmarks.shape == (len(found.boxes), 5, 2)
    batch = detector.detect_batch([image, image[:, :224]], score_threshold=0.5)
    assert all(d.landmarks.shape == (len(d.boxes), 5, 2) for d in batch)
    keras_model = tiny_grid_model(Config(input_size=96, grid_size=3, landmarks=True))
    wrapped = FaceDetector.from_keras(keras_model)
    assert wrapped.landmarks and wrapped.predict_grids(images(1)).shape == (1, 3, 3, 15)
    assert wrapped.detect(images(1)[0], score_threshold=0.0).landmarks is not None
    with pytest.raises(CheckpointError, match="m.keras: the network's output has no landmark "
                                              "channels, but its face_detector_contract says"):
        FaceDetector.from_keras(tiny_grid_model(Config(input_size=96, grid_size=3)),
                                "m.keras", contract=ModelContract(
                                    GridSpec(96, 3, landmarks=True)))


def test_fitting_a_batch_with_points_lowers_the_landmark_term(tmp_path):
    """The landmark term's gradient reaches the network through Model.fit: on a fixed
    batch of faces with points, lmk_loss falls."""
    from data.data_generator import FaceGridDataset
    from helpers import tiny_grid_model
    from model.loss import make_loss, make_loss_metrics

    config = GEN.replace(neighbour_cells=False, landmark_loss_weight=1.0)
    images, targets, _ = FaceGridDataset(_point_records(tmp_path), config,
                                         training=False).load_batch(0)
    keras.utils.set_random_seed(0)
    net = tiny_grid_model(config)
    net.compile(optimizer=keras.optimizers.Adam(0.05), loss=make_loss(config),
                metrics=make_loss_metrics(config))
    history = net.fit(images, targets, epochs=40, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["lmk_loss"][-1] < 0.5 * history["lmk_loss"][0]


def test_a_landmark_network_starts_from_a_box_detectors_checkpoint(tmp_path):
    """--weights of a checkpoint without landmarks: every layer it has is loaded by name,
    the landmark heads keep their initial weights; another architecture is still refused."""
    from common.errors import CheckpointError
    from model.training import initial_model

    boxes_only = SMALL.replace(landmarks=False)
    keras.utils.set_random_seed(3)
    trained = create_model(boxes_only)
    path = str(tmp_path / "boxes.keras")
    trained.save(path)
    model = initial_model(SMALL, path)
    for layer in trained.layers:
        for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(got, want)
    out = model.predict(images(1), verbose=0)
    np.testing.assert_allclose(out[..., :NUM_CHANNELS], trained.predict(images(1), verbose=0),
                               atol=1e-5)
    with pytest.raises(CheckpointError, match="boxes.keras: incompatible with the configured"):
        initial_model(SMALL.replace(head_channels=8), path)


def test_the_distributed_loss_sums_the_landmark_term_too():
    import tensorflow as tf

    from model.distributed import replica_loss_terms
    from model.loss import GridLoss

    y_true, y_pred = _loss_scene()
    y_pred[..., 5:] += 0.3
    loss = GridLoss()
    terms = {k: float(v) for k, v in replica_loss_terms(
        loss, tf.constant(y_true), tf.constant(y_pred)).items()}
    assert set(terms) == {"loss", "obj_loss", "box_loss", "lmk_loss"}
    assert terms["lmk_loss"] == pytest.approx(_terms(loss, y_true, y_pred)[2], rel=1e-5)
    assert terms["loss"] == pytest.approx(
        terms["obj_loss"] + terms["box_loss"] + terms["lmk_loss"], rel=1e-6)
    plain = replica_loss_terms(loss, tf.constant(y_true[..., :5]), tf.constant(y_pred[..., :5]))
    assert set(plain) == {"loss", "obj_loss", "box_loss"}
