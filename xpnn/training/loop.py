"""The training loop: epochs of minibatches over prepared arrays, grown by callbacks and a strategy.

`train_epochs` knows one process; how each step's pass is computed comes from a `Strategy` (the
default runs it here; `xpnn.distributed.DataParallel` splits every batch over MPI ranks), and
everything else (run folders, checkpoints, progress, traces, early stopping) is a `Callback`, the
way Keras grows `fit`. `TrainState` holds what continuing a run exactly needs (epoch, step, the
batch-order RNG, the history); `FitSettings` says what this fit was asked to do.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.data.batches import epoch_batches
from xpnn.data.sources import end_epoch, iter_batches, prefetch
from xpnn.errors import DivergedError
from xpnn.losses import Loss
from xpnn.metrics import Metric
from xpnn.model import Model, Pass
from xpnn.optimizers import Optimizer
from xpnn.types import Array


@dataclass
class History:
    """What `fit` returns: `history["loss"]` etc. hold one value per epoch (Keras's `keras.callbacks.History`).

    `history` maps each logged name ("loss", "accuracy", "val_loss", ...) to its per-epoch values and `epoch`
    lists the epochs they belong to (0-based, as Keras's `History.epoch`).
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record one epoch's logs (what Keras's History does in its `on_epoch_end`)."""
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


@dataclass
class FitSettings:
    """What one `fit` was asked: the data as given (before conversion) and the loop's settings.

    Callbacks that record or check a run (run folders, checkpoints) read it from `TrainState.settings`.
    """

    epochs: int
    batch_size: int
    shuffle: str
    seed: int | None
    optimizer: Optimizer
    loss: Loss
    x: Any = None
    y: Any = None
    validation_data: tuple[Any, Any] | None = None
    verbose: int = 1


@dataclass
class TrainState:
    """Where a run stands: epochs and steps done, the batch-order RNG, and the history so far."""

    epoch: int = 0
    step: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    history: History = field(default_factory=History)
    stop: bool = False  # a callback sets this to end training after the current epoch
    settings: FitSettings | None = None
    callbacks: list[Callback] = field(default_factory=list)  # this fit's callbacks, for checkpoints of their state


@dataclass(frozen=True)
class Batch:
    """One step's inputs and results, handed to `Callback.on_batch_end` (arrays stay on the backend)."""

    epoch: int
    index: int  # within the epoch, from 0
    indices: np.ndarray
    x: Array
    y: Array
    result: Pass
    costs: list[Array] = field(default_factory=list)  # this epoch's batch costs so far (the loop's own list)
    sizes: list[int] = field(default_factory=list)  # and their batch sizes

    def mean_cost(self) -> float:
        """The epoch's running mean cost per sample, as `history["loss"]` will end on: one host read."""
        xp = get_backend().xp
        n = len(self.costs)
        return float(xp.stack(self.costs) @ xp.asarray(self.sizes[:n], dtype=self.costs[0].dtype)) / sum(
            self.sizes[:n]
        )


class Callback:
    """Hooks into `fit`; override what you need (Keras's `keras.callbacks.Callback`).

    `record = True` asks for per-layer outputs and input grads; `root_only = True` runs it only on
    rank 0 of a distributed run (writers). A callback with state a resumed run must continue (best
    value, patience counter) returns it from `get_state()` (JSON-friendly; arrays under "arrays").
    """

    record = False
    root_only = False
    restores = False  # True: its on_train_begin may restore a checkpoint (it runs before the others' then)

    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Before the first epoch, after a resumed run has been restored (Keras's `on_train_begin`)."""

    def on_epoch_begin(self, model: Model, state: TrainState) -> None:
        """Before each epoch; `state.epoch` is the epoch about to run, from 0 (Keras's `on_epoch_begin`)."""

    def on_batch_end(self, model: Model, state: TrainState, batch: Batch) -> None:
        """After each step's update; `batch` holds its indices, inputs and pass (Keras's `on_train_batch_end`).

        The batch's cost stays on the device: reading it (`float(batch.result.cost)`) costs a host sync.
        """

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """After each epoch, with its logs ("loss", the metrics, "val_*"; Keras's `on_epoch_end`).

        Set `model.stop_training = True` here (or in `on_batch_end`) to end training, as in Keras.
        """

    def on_train_end(self, model: Model, state: TrainState) -> None:
        """When training ends without an exception, stopped early or not (Keras's `on_train_end`)."""

    def on_train_failed(self, model: Model, state: TrainState, exc: BaseException) -> None:
        """Training stopped with `exc`: a DivergedError (after the last good weights were restored) or any other."""

    def get_state(self) -> dict[str, Any] | None:
        """State a resumed run must continue (JSON-friendly; arrays under "arrays"), or None for none.

        Run folders and `BackupAndRestore` store it in the checkpoint after every epoch. Keras has no
        counterpart: its `BackupAndRestore` does not keep callbacks' state.
        """
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` returned, when a run resumes (before `on_train_begin`)."""


class Strategy:
    """How each step's pass is computed: here, in one process. `xpnn.distributed.DataParallel` overrides it
    (tf.distribute's and Horovod's role): the loop calls these hooks and never imports MPI code."""

    shards = False  # True: each process holds only its slice of a batch

    def select(self, callbacks: list[Callback]) -> list[Callback]:
        """The callbacks that run in this process (and any the strategy adds)."""
        return callbacks

    def begin(self, model: Model, x: Array, y: Array, validation: Any, state: TrainState) -> None:
        """Called after the callbacks' on_train_begin (a resumed run is restored by then)."""

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This process's part of a global batch's sample indices (one process: all of them)."""
        return indices

    def run_pass(
        self, model: Model, x: Array, y: Array, loss: Loss, batch_n: int, record: bool, sample_weight: Any = None
    ) -> Pass:
        """The step's forward and backward pass; `batch_n` is the global batch's size (a strategy that
        shards weighs each process's mean by it, tf.distribute's all-reduce of the gradients)."""
        return model.run_pass(x, y, loss, record=record, sample_weight=sample_weight)

    def sum_metrics(self, metrics: list[Metric]) -> None:
        """Make each metric's running totals the whole batch's (one process: they already are)."""

    def failed(self, exc: BaseException) -> None:
        """An exception other than divergence left the loop."""

    @property
    def is_root(self) -> bool:
        """Whether this process prints and writes (rank 0; `root_only` callbacks run only there)."""
        return True


class Snapshot:
    """The weights and optimizer state at an epoch's start, kept on the device to restore after a divergence."""

    def __init__(self, model: Model, optimizer: Optimizer) -> None:
        xp = get_backend().xp
        self.weights = [xp.array(w, copy=True) for layer in model.layers for w in layer.weights.values()]
        self.optimizer = {
            k: [xp.array(a, copy=True) for a in v] if isinstance(v, list) else v
            for k, v in optimizer.get_state().items()
        }

    def restore(self, model: Model, optimizer: Optimizer) -> None:
        """Put the kept weights and optimizer state back into `model` and `optimizer`."""
        it = iter(self.weights)
        for layer in model.layers:
            for key in layer.params:
                layer.params[key] = next(it)
            for key in layer.non_trainable:
                layer.non_trainable[key] = next(it)
        optimizer.set_state(self.optimizer)


class ArrayFeed:
    """An epoch's batches from prepared backend arrays: one upload of the epoch's order, sliced per step."""

    def __init__(self, x: Array, y: Array, batch_size: int, shuffle: str, sample_weight: Array | None = None) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.sample_weight = x, y, batch_size, shuffle, sample_weight

    def steps(self) -> int:
        """Steps per epoch."""
        return -(-len(self.x) // self.batch_size)

    def batches(self, rng: np.random.Generator, strategy: Strategy) -> Iterator[tuple[Any, Array, Array, Any, int]]:
        """(this process's indices, x, y, sample weights or None, the whole batch's size) per step."""
        backend = get_backend()
        batches = epoch_batches(len(self.x), self.batch_size, self.shuffle, rng)
        order = None if strategy.shards else backend.asarray(np.concatenate(batches))
        start = 0
        for idx in batches:
            mine = strategy.shard(idx)
            idx_b = backend.asarray(mine) if order is None else order[start : start + len(idx)]
            start += len(idx)
            sw = None if self.sample_weight is None else self.sample_weight[idx_b]
            yield mine, self.x[idx_b], self.y[idx_b], sw, len(idx)


class SourceFeed:
    """An epoch's batches from a batch source (`xpnn.data.sources`: a PyDataset or a generator), each checked
    and uploaded by `prepare` in a background thread while the previous step trains."""

    def __init__(self, source: Any, prepare: Callable[[Any, Any], tuple[Array, Array]], shuffle: str) -> None:
        self.source, self.prepare, self.shuffle = source, prepare, shuffle

    def steps(self) -> int:
        """Steps per epoch: the source's batches."""
        return len(self.source)

    def batches(self, rng: np.random.Generator, strategy: Strategy) -> Iterator[tuple[Any, Array, Array, Any, int]]:
        """(indices within the batch, x, y, None, the batch's size) per step, in the seeded order."""
        if strategy.shards:
            raise ValueError("distributed training takes arrays, not a batch source; pass (x, y) arrays.")
        host = iter_batches(self.source, rng, shuffle=self.shuffle == "random")
        for xb, yb in prefetch(host, lambda batch: self.prepare(*batch)):
            yield np.arange(len(xb)), xb, yb, None, len(xb)
        end_epoch(self.source)


def all_finite(arrays: list[Array]) -> bool:
    """Whether every element of every array is finite (one host read)."""
    xp = get_backend().xp
    if not arrays:
        return True
    return bool(xp.stack([xp.isfinite(a).all() for a in arrays]).all())


def train_epochs(
    model: Model,
    x: Array | ArrayFeed | SourceFeed,
    y: Array | None,
    epochs: int,
    batch_size: int,
    optimizer: Optimizer,
    loss: Loss,
    shuffle: str,
    state: TrainState,
    validation: tuple[Array, Array] | Any | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    verbose: int = 1,
    strategy: Strategy | None = None,
    metrics: list[Metric] | None = None,
    sample_weight: Array | None = None,
) -> History:
    """Train prepared backend arrays from `state.epoch` up to `epochs`; costs are read once per epoch.

    This is the loop inside Keras's `Model.fit`: `Sequential.fit` prepares the data and hands its parts
    (callbacks, a strategy, metrics) to it.

    `metrics` (default: `model.metrics_for(loss)`) accumulate on the device and are read at each epoch's end;
    `sample_weight` (n,) weighs each sample's loss and metrics (Keras's sample_weight/class_weight).
    `x` may instead be a feed (`SourceFeed` for a batch source; y None); `validation` a pair of arrays or a
    batch source.

    A non-finite cost, weight or validation loss raises `DivergedError` after the weights and optimizer
    state of the epoch's start are put back (the last good ones), so nothing written later holds NaN.
    """
    strategy = strategy or Strategy()
    feed = x if isinstance(x, (ArrayFeed, SourceFeed)) else ArrayFeed(x, y, batch_size, shuffle, sample_weight)
    metrics = model.metrics_for(loss) if metrics is None else metrics
    callbacks = strategy.select(list(callbacks))
    state.callbacks = callbacks
    model.stop_training = False
    try:
        for cb in sorted(callbacks, key=lambda cb: not cb.restores):  # restore first: others then see the state
            cb.on_train_begin(model, state)
        strategy.begin(model, feed.x if isinstance(feed, ArrayFeed) else None,
                       feed.y if isinstance(feed, ArrayFeed) else None, validation, state)  # fmt: skip
        while state.epoch < epochs and not state.stop:
            snapshot = Snapshot(model, optimizer)
            try:
                logs = _epoch(model, feed, optimizer, loss, state, validation, callbacks, strategy, metrics)
            except DivergedError:
                snapshot.restore(model, optimizer)
                raise
            if verbose:
                shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "seconds")
                print(f"epoch {state.epoch}/{epochs}  {shown}  {logs['seconds']:.2f} s", flush=True)
            if model.stop_training:
                break
    except DivergedError as exc:
        exc.args = (f"{exc.args[0]} The weights and optimizer state from before epoch {exc.epoch} were restored.",)
        for cb in callbacks:
            cb.on_train_failed(model, state, exc)
        raise
    except BaseException as exc:
        strategy.failed(exc)
        for cb in callbacks:
            cb.on_train_failed(model, state, exc)
        raise
    for cb in callbacks:
        cb.on_train_end(model, state)
    return state.history


def _epoch(
    model: Model,
    feed: ArrayFeed | SourceFeed,
    optimizer: Optimizer,
    loss: Loss,
    state: TrainState,
    validation: Any,
    callbacks: list[Callback],
    strategy: Strategy,
    metrics: list[Metric],
) -> dict[str, float]:
    """One epoch: its batches, then the epoch's logs (one host read of the costs), then the epoch-end hooks."""
    backend = get_backend()
    xp = backend.xp
    record = any(cb.record for cb in callbacks)
    epoch = state.epoch + 1
    for cb in callbacks:
        cb.on_epoch_begin(model, state)
    start = time.perf_counter()
    costs: list[Array] = []
    sizes: list[int] = []
    for m in metrics:
        m.reset()
    for index, (mine, xs, ys, sw, batch_n) in enumerate(feed.batches(state.rng, strategy)):
        result = strategy.run_pass(model, xs, ys, loss, batch_n, record, sw)
        optimizer.apply(model.parameters(), result.grads)
        state.step += 1
        costs.append(result.cost)
        sizes.append(batch_n)
        for m in metrics:
            m.update(result.logits, ys, sw)
        batch = Batch(epoch, index, mine, xs, ys, result, costs, sizes)
        for cb in callbacks:
            cb.on_batch_end(model, state, batch)
        if model.stop_training:
            break
    strategy.sum_metrics(metrics)
    per_batch = backend.to_host(xp.stack(costs))
    if not np.isfinite(per_batch).all():
        bad = int(np.argmin(np.isfinite(per_batch)))
        raise DivergedError(epoch, bad + 1, float(per_batch[bad]))
    seen = sum(sizes)
    logs = {"loss": float(per_batch @ np.asarray(sizes, dtype=np.float64)) / seen}
    logs.update({m.name: m.result() for m in metrics})
    if not all_finite([w for layer in model.layers for w in layer.weights.values()]):
        raise DivergedError(epoch, len(sizes), float("nan"), what="a weight")
    if validation is not None:
        val_metrics = copy.deepcopy(metrics)
        if isinstance(validation, tuple):
            scores = model.evaluate_prepared(*validation, loss, None, val_metrics)
        else:  # a batch source
            scores = model.evaluate(validation, None, loss, metrics=val_metrics)
        logs.update({f"val_{k}": v for k, v in scores.items()})
        if not np.isfinite(logs["val_loss"]):
            raise DivergedError(epoch, len(sizes), logs["val_loss"], what="the validation loss")
    logs["seconds"] = time.perf_counter() - start
    state.epoch = epoch
    state.history.append(epoch, logs)
    for cb in callbacks:
        cb.on_epoch_end(model, state, logs)
    return logs
