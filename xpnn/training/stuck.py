"""`StuckDetector`: a callback that names a dead layer or a cost frozen at chance, and says what to do.

About 1 seed in 10 of the reference run (in Keras too) dies at chance: every unit of a ReLU layer goes
dead, no gradient reaches the layers before it, and the cost freezes near ln 6 ≈ 1.79. Keras says
nothing; `StuckDetector` says which layer and what to do.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from xpnn.backends import get_backend
from xpnn.model import Model
from xpnn.training.loop import Batch, Callback, TrainState


class StuckDetector(Callback):
    """At each epoch end: is some layer's output all zero on a probe batch, or the cost flat at chance?

    The probe batch is the first batch of the epoch, run forward once more with `record=True`; it draws
    nothing from the batch-order RNG, so watching a run never changes it. Each finding is reported once
    (printed, passed to `log`, kept in `reports`); `stop=True` also ends training after that epoch.
    Keras has no counterpart (its `EarlyStopping` watches a metric, not dead layers).
    """

    def __init__(
        self,
        patience: int = 3,
        tolerance: float = 1e-3,
        stop: bool = False,
        probe_size: int = 64,
        log: Callable[[str], None] | None = None,
        verbose: int = 1,
    ) -> None:
        self.patience, self.tolerance, self.stop, self.probe_size = patience, tolerance, stop, probe_size
        self.log, self.verbose = log, verbose
        self.reports: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._probe = None

    def on_epoch_begin(self, model: Model, state: TrainState) -> None:
        """Forget the last epoch's probe batch."""
        self._probe = None

    def on_batch_end(self, model: Model, state: TrainState, batch: Batch) -> None:
        """Keep the epoch's first batch (its first `probe_size` images) as the probe."""
        if self._probe is None:
            self._probe = batch.x[: self.probe_size]

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Check the probe for a dead layer and the loss for a plateau at chance; report (and stop) once each."""
        classes = int(model.output_shape[-1])
        chance = math.log(classes) if classes > 1 else float("nan")
        advice = self._advice(state)
        if self._probe is not None:
            dead = self.dead_layer(model, self._probe)
            if dead is not None:
                i = dead
                before = f" (after layer {i - 1}, {model.layers[i - 1].name})" if i > 0 else ""
                self._report(
                    state,
                    f"dead-layer:{i}",
                    f"epoch {state.epoch}: layer {i} {model.layers[i]!r}{before} outputs 0 for every unit on a "
                    f"probe batch of {len(self._probe)} samples: all its units are dead (their inputs are negative "
                    f"for every sample), so no gradient reaches the layers before it and the cost stays near "
                    f"chance (ln {classes} = {chance:.3f}; now {logs['loss']:.4f}). {advice}",
                    layer=i,
                )
        losses = state.history.history.get("loss", [])
        recent = losses[-(self.patience + 1) :]
        near_chance = abs(logs["loss"] - chance) < 0.05 * chance or logs.get("accuracy", 1.0) <= 1.5 / classes
        if len(recent) > self.patience and max(recent) - min(recent) < self.tolerance and near_chance:
            self._report(
                state,
                "flat-cost",
                f"epoch {state.epoch}: the cost has stayed at {logs['loss']:.4f} (within {self.tolerance}) for "
                f"{self.patience} epochs, at chance level (ln {classes} = {chance:.3f}, accuracy "
                f"{logs.get('accuracy', float('nan')):.3f}): the run is stuck. {advice}",
            )

    @staticmethod
    def dead_layer(model: Model, x: Any) -> int | None:
        """Index of the first layer whose output is exactly zero everywhere on `x`, or None."""
        backend = get_backend()
        _, _, outputs = model.forward(x, record=True)
        inner = (outputs or [])[:-1]  # the logits are never "dead"
        if not inner:
            return None
        alive = backend.to_host(backend.xp.stack([(out != 0).any() for out in inner]))  # one host read
        dead = [i for i, a in enumerate(alive) if not a]
        return dead[0] if dead else None

    @staticmethod
    def _advice(state: TrainState) -> str:
        opt = state.settings.optimizer if state.settings is not None else None
        lr = getattr(opt, "learning_rate", None)
        lower = f" (now {lr:g}; try {lr / 3:.2g})" if isinstance(lr, float) else ""
        return f"Fix: lower the learning rate{lower} or start again with another seed."

    def _report(self, state: TrainState, key: str, message: str, **info: Any) -> None:
        if self.stop:
            state.stop = True
        if key in self._seen:
            return
        self._seen.add(key)
        if self.stop:
            message += " Stopping the run (stop_when_stuck)."
        self.reports.append({"epoch": state.epoch, "kind": key.split(":")[0], "message": message, **info})
        if self.verbose:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        if self.log is not None:
            self.log(f"stuck: {message}")
