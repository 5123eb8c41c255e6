"""Weight EMA: an exponential moving average of the weights, validated, saved and shipped.

Short runs with a high learning rate end an epoch wherever the last steps threw them
(validation AP 0.61, 0.18, 0.83 at three epochs of one run, docs/benchmarks.md); the
average of the recent weights is a smoother, usually better model (YOLOv5's ModelEMA,
YuNet's and SCRFD's EMA hooks). After every training step

    decay_t = decay * (1 - exp(-t / ramp))          t = steps done, ramp = RAMP_STEPS
    ema     = decay_t * ema + (1 - decay_t) * weights

over every weight of the model, BatchNorm statistics included (they drift with the
weights). The ramp lets the average follow the fast early changes instead of holding the
initial weights for ~1 / (1 - decay) steps.

At an epoch's end `swap_in` puts the averaged weights into the model and remembers the
trained ones; validation, the finiteness check and the checkpoints then see the averaged
model; `swap_out` restores the trained weights before the next step. `WeightEMA` and
`RestoreTrainedWeights` are the two callbacks that do this around the epoch-end
callbacks (model/training.py places them first and last). The resumable checkpoint holds
the averaged weights too, so a resumed run restarts its average (and its training) from
them.
"""

from __future__ import annotations

import math

import keras
import numpy as np

# decay_t reaches 63% of decay after this many steps. YOLOv5's 2,000 suits its 100k-step
# runs; a CPU run here has 500 to 3,000 steps, and with 2,000 its average would hardly
# start averaging (decay_t 0.22 at step 500).
RAMP_STEPS = 200.0


def ema_decay_at(decay: float, step: int, ramp: float = RAMP_STEPS) -> float:
    """The decay used after `step` (1-based) training steps: decay * (1 - e^(-step/ramp))."""
    return float(decay) * (1.0 - math.exp(-float(step) / ramp))


class WeightEMA(keras.callbacks.Callback):
    """Keeps the moving average of `model.weights` and swaps it in at every epoch's end.

    Args:
        decay: the average's decay in (0, 1), e.g. 0.999 (about the last 1,000 steps).
        ramp: steps over which the decay rises to `decay` (RAMP_STEPS).
    """

    def __init__(self, decay: float, ramp: float = RAMP_STEPS):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay={decay!r}: must be in (0, 1)")
        self.decay = float(decay)
        self.ramp = float(ramp)
        self.steps = 0
        self.average = None  # list of NumPy arrays, one per model weight
        self._trained = None  # the trained weights while the average is swapped in

    def on_train_begin(self, logs=None):
        if self.average is None:
            self.average = [np.array(w, dtype=np.float64) for w in self.model.get_weights()]

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        d = ema_decay_at(self.decay, self.steps, self.ramp)
        for avg, w in zip(self.average, self.model.get_weights()):
            avg *= d
            avg += (1.0 - d) * w

    def on_epoch_end(self, epoch, logs=None):
        self.swap_in()

    def swap_in(self) -> None:
        """Put the averaged weights into the model, keeping the trained ones aside."""
        if self._trained is not None or self.average is None:
            return
        self._trained = self.model.get_weights()
        self._set_average()

    def swap_out(self) -> None:
        """Restore the trained weights (after the epoch's end saw the averaged ones)."""
        if self._trained is None:
            return
        self.model.set_weights(self._trained)
        self._trained = None

    def on_train_end(self, logs=None):
        # The model handed back after fit is the averaged one: what was validated and saved.
        self._trained = None
        if self.average is not None:
            self._set_average()

    def _set_average(self) -> None:
        """Write the average into the model, each weight in its own dtype."""
        self.model.set_weights([a.astype(w.dtype) for a, w in
                                zip(self.average, self.model.get_weights())])


class RestoreTrainedWeights(keras.callbacks.Callback):
    """The last epoch-end callback: gives training its own weights back from `ema`."""

    def __init__(self, ema: WeightEMA):
        super().__init__()
        self.ema = ema

    def on_epoch_end(self, epoch, logs=None):
        self.ema.swap_out()
