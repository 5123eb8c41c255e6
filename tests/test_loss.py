"""GridLoss: focal objectness over labelled cells, box loss over every face cell."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from config import Config
from data.grid import CLASS, IGNORE, XC, encode_grid
from model.loss import BoxLoss, GridLoss, ObjectnessLoss, make_loss, make_loss_metrics

S, G = 224, 7


def targets(faces, ignored=()):
    """(1, G, G, 5) targets from x1, y1, x2, y2 input-pixel boxes (faces, then ignored faces)."""
    boxes = np.array(list(faces) + list(ignored), dtype=np.float32).reshape(-1, 4)
    ignore = np.array([False] * len(faces) + [True] * len(ignored))
    return encode_grid(boxes, ignore, S, G).grid[None]


def perfect(y_true):
    """The prediction the loss should accept: exact boxes, scores 1 on faces, 0 elsewhere."""
    y_pred = np.clip(y_true, 0.0, 1.0).copy()
    y_pred[..., CLASS] = (y_true[..., CLASS] == 1).astype(np.float32)
    return y_pred


def value(loss, y_true, y_pred):
    return float(loss(tf.constant(y_true), tf.constant(y_pred)))


def gradient(loss, y_true, y_pred):
    y_pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        result = loss(tf.constant(y_true), y_pred)
    return result, tape.gradient(result, y_pred).numpy()


@pytest.fixture
def scene():
    """Two faces of very different sizes, one ignored face, the rest background."""
    y_true = targets([(10, 12, 16, 19), (100, 90, 180, 190)], ignored=[(170, 170, 190, 190)])
    assert (y_true[..., CLASS] == 1).sum() == 2 and (y_true[..., CLASS] == IGNORE).sum() == 1
    return y_true


def test_perfect_prediction_costs_almost_nothing(scene):
    assert value(GridLoss(), scene, perfect(scene)) < 1e-5


def test_all_background_batch_gives_finite_loss_and_gradients():
    y_true = np.zeros((3, G, G, 5), np.float32)
    y_pred = np.random.default_rng(0).uniform(0, 1, (3, G, G, 5)).astype(np.float32)
    y_pred[0, 0, 0] = 0.0  # sigmoid saturated at 0: sqrt and log must stay finite
    result, grad = gradient(GridLoss(), y_true, y_pred)
    assert np.isfinite(float(result)) and float(result) > 0
    assert np.all(np.isfinite(grad))
    assert np.all(grad[..., :CLASS] == 0)  # no face, so no box gradient anywhere


def test_box_gradient_only_from_face_cells(scene):
    y_pred = np.full_like(scene, 0.3)
    y_pred[..., :CLASS] = 0.0  # zero sizes everywhere: a masked-after sqrt would give NaN
    _, grad = gradient(GridLoss(), scene, y_pred)
    face = scene[0, ..., CLASS] == 1
    assert np.all(np.isfinite(grad))
    assert np.all(grad[0][~face][:, :CLASS] == 0.0)
    assert np.all(np.abs(grad[0][face][:, :CLASS]).sum(axis=1) > 0)


def test_ignored_cells_give_no_objectness_gradient(scene):
    y_pred = perfect(scene)
    y_pred[..., CLASS] = 0.7
    _, grad = gradient(GridLoss(), scene, y_pred)
    ignored = scene[0, ..., CLASS] == IGNORE
    labelled = ~ignored
    assert np.all(grad[0][ignored] == 0.0)
    assert np.all(grad[0][labelled][:, CLASS] != 0.0)


def test_loss_decreases_as_a_prediction_moves_to_its_target(scene):
    loss = GridLoss()
    r, c = np.argwhere(scene[0, ..., CLASS] == 1)[0]
    previous = np.inf
    for t in np.linspace(0.0, 1.0, 6):  # box and score both move toward the target
        y_pred = perfect(scene)
        start = np.array([0.6, 0.05, 0.9, 0.1, 0.05], np.float32)
        y_pred[0, r, c] = (1 - t) * start + t * perfect(scene)[0, r, c]
        current = value(loss, scene, y_pred)
        assert current < previous
        previous = current
    assert previous < 1e-5


def test_small_face_error_weighs_like_a_large_face_relative_error():
    """1 - GIoU is scale free: a 20% size error costs a 5-px face about what it costs a
    110-px face, although the large face's error is 22x more pixels (plain L1: 22x more)."""
    loss = GridLoss(objectness_loss_weight=0.0)
    costs = {}
    for side in (5.0, 110.0):
        y_true = targets([(112 - side / 2, 112 - side / 2, 112 + side / 2, 112 + side / 2)])
        y_pred = perfect(y_true)
        y_pred[..., :2] *= 1.2  # h, w 20% too large, centre exact
        costs[side] = value(loss, y_true, y_pred)
    assert costs[5.0] > 0
    assert 0.5 < costs[5.0] / costs[110.0] <= 1.0
    l1 = {side: 2 * 0.2 * side / S for side in costs}  # what an L1 on h, w would give
    assert l1[5.0] / l1[110.0] < 0.05


def test_loss_works_in_graph_mode_with_unknown_batch(scene):
    """model.fit traces the loss with a None batch dimension."""
    spec = tf.TensorSpec((None, G, G, 5), tf.float32)
    loss = GridLoss()
    traced = tf.function(lambda t, p: loss(t, p), input_signature=[spec, spec])
    y_pred = np.random.default_rng(4).uniform(0.05, 0.95, (2, G, G, 5)).astype(np.float32)
    y_true = np.concatenate([scene, np.zeros_like(scene)])
    assert float(traced(y_true, y_pred)) == pytest.approx(value(loss, y_true, y_pred), rel=1e-5)


def test_loss_is_normalised_by_the_number_of_faces(scene):
    """A batch of the same image twice costs what the image alone costs (per face)."""
    y_pred = np.random.default_rng(1).uniform(0.05, 0.95, scene.shape).astype(np.float32)
    one = value(GridLoss(), scene, y_pred)
    two = value(GridLoss(), np.concatenate([scene] * 2), np.concatenate([y_pred] * 2))
    assert two == pytest.approx(one, rel=1e-5)


def test_components_sum_to_the_loss_and_metrics_report_them(scene):
    y_pred = np.random.default_rng(2).uniform(0.05, 0.95, scene.shape).astype(np.float32)
    config = Config(focal_gamma=1.5, focal_alpha=0.4, box_loss_weight=3.0,
                    objectness_loss_weight=2.0)
    loss = make_loss(config)
    obj_metric, box_metric = make_loss_metrics(config)
    obj_metric.update_state(scene, y_pred)
    box_metric.update_state(scene, y_pred)
    assert (obj_metric.name, box_metric.name) == ("obj_loss", "box_loss")
    total = float(obj_metric.result()) + float(box_metric.result())
    assert total == pytest.approx(value(loss, scene, y_pred), rel=1e-5)
    assert float(box_metric.result()) > 0 and float(obj_metric.result()) > 0


def test_config_fields_reach_the_loss():
    loss = make_loss(Config(focal_gamma=1.0, focal_alpha=0.5, box_loss_weight=2.0,
                            objectness_loss_weight=3.0))
    assert (loss.focal_gamma, loss.focal_alpha, loss.box_loss_weight,
            loss.objectness_loss_weight) == (1.0, 0.5, 2.0, 3.0)


def test_serialization_round_trip(scene):
    """Registered with get_config: a saved, compiled model can rebuild loss and metrics."""
    y_pred = np.random.default_rng(3).uniform(0.05, 0.95, scene.shape).astype(np.float32)
    loss = GridLoss(focal_gamma=1.0, focal_alpha=0.3, box_loss_weight=2.0,
                    objectness_loss_weight=0.5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, GridLoss)
    assert restored.get_config() == loss.get_config()
    assert value(restored, scene, y_pred) == pytest.approx(value(loss, scene, y_pred))
    for metric in (ObjectnessLoss(1.0, 0.3, 0.5), BoxLoss(2.0)):
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
        assert type(copy) is type(metric) and copy.get_config() == metric.get_config()


def test_centre_offset_error_is_penalised(scene):
    y_pred = perfect(scene)
    r, c = np.argwhere(scene[0, ..., CLASS] == 1)[0]
    y_pred[0, r, c, XC] = np.clip(scene[0, r, c, XC] + 0.3, 0, 1)
    assert value(GridLoss(), scene, y_pred) > 0.1


# --- quality_scores: the face cells' score target is the IoU of their predicted box -------
def one_face_prediction(scale: float, score: float):
    """Targets of one 64-px face, and a prediction whose box on the face's cell is `scale`
    times the true size at the same centre (IoU scale^2 when scale <= 1), score `score`
    there and 0 on every other cell."""
    y_true = targets([(64, 64, 128, 128)])
    y_pred = perfect(y_true)
    face = y_true[..., CLASS] == 1
    y_pred[face, 0] *= scale  # h
    y_pred[face, 1] *= scale  # w
    y_pred[face, CLASS] = score
    return y_true, y_pred


def test_quality_target_is_the_iou_so_a_score_equal_to_it_costs_nothing():
    y_true, y_pred = one_face_prediction(scale=np.sqrt(0.5), score=0.5)  # IoU 0.5
    loss = GridLoss(box_loss_weight=0.0, quality_scores=True)
    assert value(loss, y_true, y_pred) < 1e-6  # |t - p|^gamma = 0 on the face cell
    # The plain focal loss wants score 1 there whatever the box.
    assert value(GridLoss(box_loss_weight=0.0), y_true, y_pred) > 0.01


def test_quality_loss_value_on_a_known_cell():
    """t = IoU 0.25, p = 0.8: alpha |t - p|^2 (-(t log p + (1 - t) log(1 - p)))."""
    y_true, y_pred = one_face_prediction(scale=0.5, score=0.8)
    t, p, alpha = 0.25, 0.8, 0.25
    expected = alpha * (p - t) ** 2 * -(t * np.log(p) + (1 - t) * np.log(1 - p))
    got = value(GridLoss(box_loss_weight=0.0, quality_scores=True), y_true, y_pred)
    assert got == pytest.approx(expected, rel=1e-4)  # one face: divided by 1


def test_quality_target_passes_no_gradient_to_the_box():
    y_true, y_pred = one_face_prediction(scale=0.5, score=0.8)
    _, grad = gradient(GridLoss(box_loss_weight=0.0, quality_scores=True), y_true, y_pred)
    assert np.all(grad[..., :CLASS] == 0)  # the IoU is a label, not something to raise
    assert np.any(grad[..., CLASS] != 0)


def test_quality_scores_reach_the_loss_and_its_metric_from_the_config():
    config = Config(quality_scores=True)
    assert make_loss(config).quality_scores
    assert make_loss_metrics(config)[0]._loss.quality_scores
    restored = GridLoss.from_config(make_loss(config).get_config())
    assert restored.quality_scores


# ---------------------------------------------------------------- several grid levels
LEVELS = (28, 14, 7)  # 224 px: cells of 8, 16 and 32 px


def test_several_levels_loss_is_each_levels_sum_over_all_their_faces():
    """One loss over every level's cells, divided by the face cells of all levels: on
    levels holding 1 and 2 face cells it is (1 * loss_1 + 2 * loss_2) / 3, loss_l being
    the one-grid loss of level l alone, for the objectness and box terms alike."""
    from data.grid import GridSpec, encode_levels, split_levels

    boxes = np.array([[20, 20, 40, 40], [100, 100, 170, 170], [30, 120, 110, 200]],
                     np.float32)  # 20 px on the finest level, two of 70-80 px on the 14x14
    cells, _ = encode_levels(boxes, np.zeros(3, bool), GridSpec(S, LEVELS[0], len(LEVELS)))
    rng = np.random.default_rng(1)
    y_true = cells[None]
    y_pred = np.clip(perfect(y_true) + rng.normal(0, 0.05, y_true.shape), 0.01, 0.99
                     ).astype(np.float32)
    for quality in (False, True):
        several = GridLoss(grid_sizes=LEVELS, quality_scores=quality)
        one = GridLoss(quality_scores=quality)
        levels_true, levels_pred = split_levels(y_true, LEVELS), split_levels(y_pred, LEVELS)
        faces = [int((t[..., CLASS] == 1).sum()) for t in levels_true]
        assert faces == [1, 2, 0]
        for term in (0, 1):
            got = float(several.components(tf.constant(y_true), tf.constant(y_pred))[term][0])
            per_level = [float(one.components(tf.constant(t), tf.constant(p))[term][0])
                         for t, p in zip(levels_true, levels_pred)]
            # an empty level's loss is its background sum over max(0, 1) = 1 face
            expected = (per_level[0] * 1 + per_level[1] * 2 + per_level[2]) / 3
            assert got == pytest.approx(expected, rel=1e-5)


def test_several_levels_loss_from_the_config_and_round_trip():
    config = Config(input_size=224, grid_size=28, grid_levels=3)
    loss = make_loss(config)
    assert loss.grid_sizes == LEVELS
    assert GridLoss.from_config(loss.get_config()).grid_sizes == LEVELS
    assert make_loss(Config()).grid_sizes is None  # one level: the targets' shape says it
    obj, box = make_loss_metrics(config)
    assert obj._loss.grid_sizes == LEVELS and box._loss.grid_sizes == LEVELS
    from data.grid import GridSpec, encode_levels

    cells, _ = encode_levels(np.array([[20, 20, 60, 60]], np.float32), [False],
                             GridSpec(S, LEVELS[0], len(LEVELS)))
    assert value(loss, cells[None], perfect(cells[None])) < 1e-3


# ---------------------------------------------------------------- DIoU / EIoU box terms
def _one_cell(h, w, yc, xc):
    return np.array([[[[h, w, yc, xc, 1.0]]]], np.float32)  # a 1x1 grid: offsets = position


@pytest.mark.parametrize("kind, shifted, wider", [
    # a 0.2 box against one shifted by 0.1: IoU 1/3, enclosing 0.3 x 0.2, d^2 = 0.01
    ("giou", 1 - (1 / 3 - (0.06 - 0.06) / 0.06), 0.5),
    ("diou", 1 - 1 / 3 + 0.01 / 0.13, 0.5),
    # and against one twice as wide, same centre: IoU 0.5, enclosing 0.4 x 0.2
    ("eiou", 1 - 1 / 3 + 0.01 / 0.13, 0.5 + 0.2 ** 2 / 0.4 ** 2),
])
def test_box_overlap_terms_on_known_boxes(kind, shifted, wider):
    from model.loss import _iou_loss

    box = _one_cell(0.2, 0.2, 0.5, 0.5)
    for other, expected in ((_one_cell(0.2, 0.2, 0.5, 0.6), shifted),
                            (_one_cell(0.2, 0.4, 0.5, 0.5), wider)):
        got = float(_iou_loss(tf.constant(box), tf.constant(other), kind)[0, 0, 0])
        assert got == pytest.approx(expected, rel=1e-5)
    assert float(_iou_loss(tf.constant(box), tf.constant(box), kind)[0, 0, 0]) == \
        pytest.approx(0.0, abs=1e-6)


def test_box_iou_loss_reaches_the_loss_and_its_metric_from_the_config(scene):
    from common.errors import ConfigError

    y_true = scene
    y_pred = perfect(y_true)
    y_pred[..., XC] = np.where(y_true[..., CLASS] == 1, y_pred[..., XC] + 0.2, y_pred[..., XC])
    values = {}
    for kind in ("giou", "diou", "eiou"):
        config = Config(box_iou_loss=kind)
        loss = make_loss(config)
        assert loss.iou_loss == kind and GridLoss.from_config(loss.get_config()).iou_loss == kind
        box_metric = make_loss_metrics(config)[1]
        box_metric.update_state(tf.constant(y_true), tf.constant(y_pred))
        values[kind] = float(box_metric.result())
        assert values[kind] == pytest.approx(
            float(loss.components(tf.constant(y_true), tf.constant(y_pred))[1][0]), rel=1e-5)
    assert len(set(round(v, 6) for v in values.values())) >= 2  # the term changed the value
    with pytest.raises(ConfigError, match="box_iou_loss='ciou': must be one of giou, diou, eiou"):
        Config(box_iou_loss="ciou")


def test_losses_saved_under_the_weights_earlier_names_still_load():
    """Checkpoints saved before GridLoss took Config's names (box_weight,
    objectness_weight) deserialise with their values."""
    loss = GridLoss.from_config({"name": "grid_loss", "reduction": "sum_over_batch_size",
                                 "box_weight": 2.0, "objectness_weight": 0.5})
    assert (loss.box_loss_weight, loss.objectness_loss_weight) == (2.0, 0.5)
    assert BoxLoss.from_config({"name": "box_loss", "box_weight": 3.0})._loss.box_loss_weight == 3.0
    obj = ObjectnessLoss.from_config({"name": "obj_loss", "objectness_weight": 0.25})
    assert obj._loss.objectness_loss_weight == 0.25
    # The defaults are Config's, the one place they are stated.
    assert (GridLoss().box_loss_weight, GridLoss().focal_gamma) == (Config.box_loss_weight,
                                                                    Config.focal_gamma)
