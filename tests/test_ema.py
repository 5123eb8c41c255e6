"""Weight EMA (model/ema.py): the update rule, the swap around an epoch's end, the end state."""

import math

import keras
import numpy as np
import pytest

from model.ema import RestoreTrainedWeights, WeightEMA, ema_decay_at


def tiny_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer="zeros")(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, x)


def set_all(model, value):
    model.set_weights([np.full_like(w, value) for w in model.get_weights()])


def test_decay_ramps_up_to_its_target():
    assert ema_decay_at(0.999, 0) == 0.0
    assert ema_decay_at(0.999, 200) == pytest.approx(0.999 * (1 - math.exp(-1)))
    assert ema_decay_at(0.999, 10**6) == pytest.approx(0.999)


def test_average_follows_the_rule_on_every_weight_batchnorm_included():
    model = tiny_model()
    ema = WeightEMA(0.9, ramp=1.0)
    ema.set_model(model)
    set_all(model, 0.0)
    ema.on_train_begin()
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 4.0], start=1):
        set_all(model, value)  # what a training step would have written
        ema.on_train_batch_end(step - 1)
        d = 0.9 * (1 - math.exp(-step))
        expected = d * expected + (1 - d) * value
    assert len(ema.average) == len(model.weights) == 6  # kernel, bias, 4 BatchNorm
    for avg in ema.average:
        np.testing.assert_allclose(avg, expected, rtol=1e-6)


def test_epoch_end_swaps_the_average_in_and_the_restorer_swaps_it_out():
    model = tiny_model()
    ema = WeightEMA(0.5, ramp=1e-9)  # decay 0.5 from the first step
    restore = RestoreTrainedWeights(ema)
    for cb in (ema, restore):
        cb.set_model(model)
    set_all(model, 0.0)
    ema.on_train_begin()
    set_all(model, 1.0)
    ema.on_train_batch_end(0)  # average 0.5, trained 1.0

    ema.on_epoch_end(0)  # first callback of the epoch's end: validation sees the average
    assert all(np.allclose(w, 0.5) for w in model.get_weights())
    ema.on_epoch_end(0)  # a second swap in must not lose the trained weights
    restore.on_epoch_end(0)  # last callback: training goes on from its own weights
    assert all(np.allclose(w, 1.0) for w in model.get_weights())

    ema.on_train_end()  # the model fit hands back is the average, as validated and saved
    assert all(np.allclose(w, 0.5) for w in model.get_weights())


def test_fit_validates_the_average_and_returns_it():
    """Inside a real `fit`: the epoch-end callbacks between the two see averaged weights."""
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ema = WeightEMA(0.99, ramp=1e-9)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x[:, :2] * 3.0
    model.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[ema, Probe(), RestoreTrainedWeights(ema)])
    for got, avg in zip(seen[-1], ema.average):
        np.testing.assert_allclose(got, avg, rtol=1e-6, atol=1e-7)
    for got, avg in zip(model.get_weights(), ema.average):
        np.testing.assert_allclose(got, avg, rtol=1e-6, atol=1e-7)


def test_decay_outside_the_open_unit_interval_is_refused():
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="ema_decay"):
            WeightEMA(bad)
