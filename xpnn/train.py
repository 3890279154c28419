"""The training loop behind `Sequential.fit`, with callbacks as its extension points.

Run folders, progress bars, traces and distributed training plug in as `Callback`s;
`TrainState` holds everything needed to continue a run exactly (epoch, step, RNG state).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from xpnn.backends import get_backend
from xpnn.data.batches import epoch_batches
from xpnn.errors import DivergedError
from xpnn.losses import Loss
from xpnn.optimizers import Optimizer
from xpnn.types import Array

if TYPE_CHECKING:
    from xpnn.distributed.parallel import DataParallel
    from xpnn.model import Pass, Sequential


@dataclass
class History:
    """What `fit` returns: `history["loss"]` etc. hold one value per epoch, as in Keras."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


@dataclass
class TrainState:
    """Where a run stands: epochs and steps done, the batch-order RNG, and the history so far."""

    epoch: int = 0
    step: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    history: History = field(default_factory=History)
    stop: bool = False  # a callback sets this to end training after the current epoch


@dataclass(frozen=True)
class Batch:
    """One step's inputs and results, handed to `Callback.on_batch_end` (arrays stay on the backend)."""

    epoch: int
    index: int  # within the epoch, from 0
    indices: np.ndarray
    x: Array
    y: Array
    result: Pass


class Callback:
    """Hooks into `fit`; override what you need. `record = True` asks for per-layer outputs and input grads."""

    record = False
    root_only = False  # True: on distributed runs only rank 0 calls it (writers: run folders, checkpoints, logs)

    def on_train_begin(self, model: Sequential, state: TrainState) -> None: ...
    def on_epoch_begin(self, model: Sequential, state: TrainState) -> None: ...
    def on_batch_end(self, model: Sequential, state: TrainState, batch: Batch) -> None: ...
    def on_epoch_end(self, model: Sequential, state: TrainState, logs: dict[str, float]) -> None: ...
    def on_train_end(self, model: Sequential, state: TrainState) -> None: ...


def train_epochs(
    model: Sequential,
    x: Array,
    y: Array,
    epochs: int,
    batch_size: int,
    optimizer: Optimizer,
    loss: Loss,
    shuffle: str,
    state: TrainState,
    validation: tuple[Array, Array] | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    verbose: int = 1,
    parallel: DataParallel | None = None,
) -> History:
    """Train prepared backend arrays from `state.epoch` up to `epochs`; costs are read once per epoch.

    With `parallel` (xpnn.distributed) each rank runs its slice of every batch and the pass comes back
    all-reduced: cost and grads are the whole batch's, as in one process.
    """
    backend = get_backend()
    xp = backend.xp
    record = any(cb.record for cb in callbacks)
    n = len(x)
    for cb in callbacks:
        cb.on_train_begin(model, state)
    while state.epoch < epochs and not state.stop:
        epoch = state.epoch + 1
        for cb in callbacks:
            cb.on_epoch_begin(model, state)
        start = time.perf_counter()
        costs: list[Array] = []
        sizes: list[int] = []
        correct = xp.zeros((), dtype=xp.int64)
        batches = epoch_batches(n, batch_size, shuffle, state.rng)
        # One upload of the epoch's order; each step slices it on the device (no per-step transfer).
        order = backend.asarray(np.concatenate(batches)) if parallel is None else None
        for index, idx in enumerate(batches):
            mine = idx if parallel is None else parallel.shard(idx)
            if order is None:
                idx_b = backend.asarray(mine)
            else:
                idx_b = order[index * batch_size : index * batch_size + len(idx)]
            xs, ys = x[idx_b], y[idx_b]
            if parallel is None:
                result = model.run_pass(xs, ys, loss, record=record)
            else:
                result = parallel.run_pass(model, xs, ys, loss, len(idx), record)
            optimizer.apply(model.parameters(), result.grads)
            state.step += 1
            costs.append(result.cost)
            sizes.append(len(idx))
            correct += (result.logits.argmax(axis=1) == ys.argmax(axis=1)).sum()
            for cb in callbacks:
                cb.on_batch_end(model, state, Batch(epoch, index, mine, xs, ys, result))
        if parallel is not None:
            correct = parallel.sum_count(correct)
        per_batch = backend.to_host(xp.stack(costs))
        if not np.isfinite(per_batch).all():
            bad = int(np.argmin(np.isfinite(per_batch)))
            raise DivergedError(epoch, bad + 1, float(per_batch[bad]))
        logs = {"loss": float(per_batch @ np.asarray(sizes, dtype=np.float64)) / n, "accuracy": float(correct) / n}
        if validation is not None:
            logs.update({f"val_{k}": v for k, v in model.evaluate_prepared(*validation, loss).items()})
        logs["seconds"] = time.perf_counter() - start
        state.epoch = epoch
        state.history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(model, state, logs)
        if verbose:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "seconds")
            print(f"epoch {epoch}/{epochs}  {shown}  {logs['seconds']:.2f} s", flush=True)
    for cb in callbacks:
        cb.on_train_end(model, state)
    return state.history
