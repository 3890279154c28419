"""Sequential: a stack of layers with the Keras surface (build, fit, evaluate, predict, train_on_batch).

Weights are exchanged as host NumPy arrays in Keras order and TensorFlow layouts, so they
move between xpnn and tf.keras without transposes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.callbacks import progress_callbacks
from xpnn.data.batches import check_shuffle
from xpnn.errors import DivergedError
from xpnn.inputs import prepare_x, prepare_y
from xpnn.layers.base import Layer
from xpnn.layers.fused import plan
from xpnn.losses import Loss, get_loss
from xpnn.optimizers import Optimizer, get_optimizer
from xpnn.trace import TraceRecorder, tracing
from xpnn.train import Callback, History, TrainState, train_epochs
from xpnn.types import Array

if TYPE_CHECKING:
    from xpnn.distributed.parallel import DataParallel
    from xpnn.runs import RunDir

DTYPES = ("float32", "float64")
PREDICT_CHUNK = 256


@dataclass
class Pass:
    """One forward and backward pass: the cost, the logits, and gradients aligned with get_weights()."""

    cost: Array
    logits: Array
    grads: list[Array]
    outputs: list[Array] | None = None
    input_grads: list[Array] | None = None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {name}={value}.")
    return int(value)


def _distributed_root() -> bool:
    """Whether this process is rank 0 of the MPI world (only it keeps the run folder)."""
    from xpnn.distributed.world import init

    return init().is_root


class Sequential:
    """A linear stack of layers: `Sequential([Conv2D(8, 4, padding="same"), ReLU(), ...], dtype="float32")`."""

    def __init__(self, layers: Iterable[Layer], dtype: str = "float32") -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not an xpnn layer (xpnn.layers.*).")
        if not self.layers:
            raise ValueError("Sequential needs at least one layer.")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")
        self.dtype = np.dtype(str(dtype))
        self.input_shape: tuple[int, ...] | None = None
        self.optimizer: Optimizer | None = None
        self.loss: Loss | None = None
        self._named_optimizers: dict[str, Optimizer] = {}
        self._last_optimizer: Optimizer | None = None  # what save() stores when not compiled

    # ---- structure and weights -------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def build(self, input_shape: Sequence[int], seed: int | None = 0) -> Sequential:
        """Create every layer's weights for per-sample `input_shape` (e.g. (64, 64, 3)); kernels glorot, biases 0."""
        shape = tuple(int(s) for s in input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(
                f"input_shape must be positive sizes without the batch axis, e.g. (64, 64, 3); got {input_shape!r}."
            )
        rng = np.random.default_rng(seed)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng, self.dtype)
            except ValueError as exc:
                raise ValueError(f"layer {i} ({layer.name}): {exc}") from None
            if min(shape) < 1:
                raise ValueError(
                    f"layer {i} ({layer!r}) shrinks the input to {shape}: the stack is too deep for "
                    f"input_shape {tuple(input_shape)}; use padding='same' or fewer/lower strides."
                )
        self.input_shape = tuple(int(s) for s in input_shape)
        return self

    @property
    def output_shape(self) -> tuple[int, ...]:
        self._require_built()
        return self.layers[-1].output_shape  # type: ignore[return-value]

    def _require_built(self) -> None:
        if not self.built:
            raise ValueError("the model is not built yet; call model.build(input_shape=(h, w, c), seed=...) first.")

    def parameters(self) -> list[Array]:
        """The backend arrays that optimizers update, in Keras order (layer by layer, kernel then bias)."""
        return [p for layer in self.layers for p in layer.params.values()]

    def weight_slots(self) -> list[tuple[Layer, str]]:
        """(layer, key) of every weight, trainable or not, in `get_weights()` order (Keras's)."""
        return [(layer, key) for layer in self.layers for key in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of all weights (trainable and not), Keras order and TensorFlow layouts."""
        self._require_built()
        backend = get_backend()
        return [np.array(backend.to_host(layer.weights[key]), copy=True) for layer, key in self.weight_slots()]

    def get_state(self) -> list[dict[str, Any] | None]:
        """Each layer's state outside its weights (e.g. Dropout's random stream), for exact checkpoints."""
        return [layer.get_state() for layer in self.layers]

    def set_state(self, states: Sequence[dict[str, Any] | None]) -> None:
        """Restore what `get_state` returned (same architecture)."""
        if len(states) != len(self.layers):
            raise ValueError(f"set_state got {len(states)} layer states but the model has {len(self.layers)} layers.")
        for layer, state in zip(self.layers, states):
            if state is not None:
                layer.set_state(state)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load weights given in `get_weights()` order and shapes (e.g. from tf.keras's model.get_weights())."""
        self._require_built()
        backend = get_backend()
        slots = self.weight_slots()
        if len(weights) != len(slots):
            raise ValueError(
                f"set_weights got {len(weights)} arrays but the model has {len(slots)} (see get_weights())."
            )
        new = []
        for i, ((layer, key), w) in enumerate(zip(slots, weights)):
            arr = np.asarray(backend.to_host(w))
            if arr.shape != layer.weights[key].shape:
                raise ValueError(
                    f"weight {i} ({layer.name} {key}) must have shape "
                    f"{tuple(layer.weights[key].shape)}; got {arr.shape}."
                )
            if not np.isfinite(arr).all():
                raise ValueError(f"weight {i} ({layer.name} {key}) holds NaN or Inf; pass finite weights.")
            new.append(backend.asarray(np.array(arr, dtype=self.dtype, copy=True)))
        for (layer, key), arr in zip(slots, new):
            (layer.params if key in layer.params else layer.non_trainable)[key] = arr

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        self._require_built()
        lines = [f"{'layer':<40}{'output shape':<22}{'params':>8}"]
        for layer in self.layers:
            count = sum(int(np.prod(p.shape)) for p in layer.weights.values())
            lines.append(f"{layer!r:<40.40}{str(('n', *layer.output_shape)):<22}{count:>8}")
        lines.append(f"total params: {sum(int(np.prod(p.shape)) for p in self.parameters())}  dtype: {self.dtype}")
        return "\n".join(lines)

    # ---- passes ----------------------------------------------------------------------------------
    def forward(
        self, x: Array, record: bool = False, training: bool = False
    ) -> tuple[Array, list[Any], list[Array] | None]:
        """Logits, the plan units' caches, and (when `record`) each layer's output.

        Without `record`, Conv2D → ReLU → MaxPool2D triples run fused (xpnn.layers.fused); with it, layer by layer.
        `training` selects the mode of Dropout and BatchNormalization (Keras's `training` argument).
        """
        caches, outputs = [], [] if record else None
        for unit in plan(self.layers, fuse=not record):
            x, cache = unit.forward(x, training=training)
            caches.append(cache)
            if outputs is not None:
                outputs.append(x)
        return x, caches, outputs

    def backward(self, dout: Array, caches: list[Any], record: bool = False) -> tuple[list[Array], list[Array] | None]:
        """Gradients aligned with `parameters()` and (when `record`) each layer's input gradient.

        The first layer's input gradient is computed only when recorded: nothing else needs it.
        """
        units = plan(self.layers, fuse=not record)
        per_unit: list[list[dict[str, Array]]] = [[]] * len(units)
        input_grads: list[Array] | None = [None] * len(self.layers) if record else None  # type: ignore[list-item]
        for i in range(len(units) - 1, -1, -1):
            dout, per_unit[i] = units[i].backward(dout, caches[i], need_dx=record or i > 0)
            if input_grads is not None:  # with record every unit is one layer
                input_grads[i] = dout
        per_layer = [g for gs in per_unit for g in gs]
        grads = [g[key] for layer, g in zip(self.layers, per_layer) for key in layer.params]
        return grads, input_grads

    def run_pass(self, x: Array, y: Array, loss: Loss, record: bool = False, training: bool = True) -> Pass:
        """Forward (training mode unless told), loss and backward on prepared backend arrays; no update."""
        logits, caches, outputs = self.forward(x, record, training)
        cost, dlogits = loss(logits, y)
        grads, input_grads = self.backward(dlogits, caches, record)
        return Pass(cost, logits, grads, outputs, input_grads)

    # ---- user entry points -----------------------------------------------------------------------
    def compile(self, optimizer: str | Optimizer = "adam", loss: str | Loss = "softmax_cross_entropy") -> Sequential:
        """Remember an optimizer and a loss for calls that leave them out."""
        self.optimizer = get_optimizer(optimizer)
        self.loss = get_loss(loss)
        return self

    def _resolve(self, optimizer: str | Optimizer | None, loss: str | Loss | None) -> tuple[Optimizer, Loss]:
        if optimizer is None:
            optimizer = self.optimizer or "adam"
        if isinstance(optimizer, str):  # a name keeps its state across calls, as a compiled optimizer would
            key = optimizer.strip().lower()
            if key not in self._named_optimizers:
                self._named_optimizers[key] = get_optimizer(optimizer)
            optimizer = self._named_optimizers[key]
        self._last_optimizer = get_optimizer(optimizer)
        return self._last_optimizer, get_loss(loss if loss is not None else (self.loss or "softmax_cross_entropy"))

    def _prepare(self, x: Any, y: Any | None, seed: int | None = 0) -> tuple[Array, Array | None]:
        backend = get_backend()
        if not self.built:
            shape = getattr(x, "shape", None) or np.shape(x)
            self.build(tuple(shape[1:]), seed=seed)
        xb = prepare_x(x, self.input_shape, self.dtype, backend)  # type: ignore[arg-type]
        yb = None if y is None else prepare_y(y, len(xb), self.output_shape[-1], self.dtype, backend)
        return xb, yb

    def train_on_batch(
        self,
        x: Any,
        y: Any,
        optimizer: str | Optimizer | None = None,
        loss: str | Loss | None = None,
        trace: str | os.PathLike | TraceRecorder | None = None,
    ) -> float:
        """One update on exactly this batch; returns the cost of its forward pass (before the update).

        `trace="step.h5"` writes this step to a trace file; pass an open `TraceRecorder` to record many steps.
        """
        opt, loss_fn = self._resolve(optimizer, loss)
        xb, yb = self._prepare(x, y)
        with tracing(trace) as recorder:
            if recorder is not None:
                recorder.start(self)
            p = self.run_pass(xb, yb, loss_fn, record=recorder is not None and recorder.record)
            cost = float(p.cost)
            if not np.isfinite(cost):
                raise DivergedError(1, 1, cost)
            opt.apply(self.parameters(), p.grads)
            if recorder is not None:
                recorder.write_step(self, p)
        return cost

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Logits for `x` as a host array, computed in chunks of `batch_size` (default 256)."""
        xb, _ = self._prepare(x, None)
        chunk = PREDICT_CHUNK if batch_size is None else _positive_int("batch_size", batch_size)
        backend = get_backend()
        outs = [self.forward(xb[i : i + chunk])[0] for i in range(0, len(xb), chunk)]
        return backend.to_host(backend.xp.concatenate(outs))

    def evaluate(
        self, x: Any, y: Any, loss: str | Loss | None = None, batch_size: int | None = None
    ) -> dict[str, float]:
        """{"loss": mean cost over all samples, "accuracy": argmax match rate}."""
        loss_fn = get_loss(loss if loss is not None else (self.loss or "softmax_cross_entropy"))
        xb, yb = self._prepare(x, y)
        return self.evaluate_prepared(xb, yb, loss_fn, batch_size)

    def evaluate_prepared(self, xb: Array, yb: Array, loss_fn: Loss, batch_size: int | None = None) -> dict[str, float]:
        """`evaluate` on backend arrays already checked by `prepare_x`/`prepare_y`."""
        chunk = PREDICT_CHUNK if batch_size is None else _positive_int("batch_size", batch_size)
        total_cost, correct = 0.0, 0
        for i in range(0, len(xb), chunk):
            logits = self.forward(xb[i : i + chunk])[0]
            cost, _ = loss_fn(logits, yb[i : i + chunk])
            total_cost = total_cost + cost * len(logits)
            correct = correct + (logits.argmax(axis=1) == yb[i : i + chunk].argmax(axis=1)).sum()
        return {"loss": float(total_cost) / len(xb), "accuracy": float(correct) / len(xb)}

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 1,
        batch_size: int = 64,
        optimizer: str | Optimizer | None = None,
        loss: str | Loss | None = None,
        shuffle: str | bool = "random",
        seed: int | None = 0,
        validation_data: tuple[Any, Any] | None = None,
        verbose: int = 1,
        callbacks: list[Callback] | None = None,
        distributed: bool | DataParallel = False,
        checkpoint: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | RunDir | None = None,
        resume: bool = False,
        trace: str | os.PathLike | TraceRecorder | None = None,
    ) -> History:
        """Train for `epochs` over minibatches of `batch_size`; per-epoch loss/accuracy (and val_*) in History.

        "loss" is the epoch's mean cost per sample (batch costs weighted by batch size, as Keras);
        "accuracy" counts argmax matches on the fly, before each batch's update. The dataset moves to
        the backend once; costs stay on the device and are read once per epoch. `run_dir="runs/"` keeps
        the run in `runs/<run id>/` (xpnn.runs); `run_dir="runs/<id>", resume=True` continues it exactly.
        On a terminal `verbose=1` shows a tqdm bar per epoch, elsewhere one line per epoch.

        `distributed=True` trains data-parallel over the MPI world (launch with mpiexec; see
        xpnn.distributed): `batch_size` is the global batch, split over the ranks, and the run equals
        one process's. `checkpoint=path` resumes from that file if it exists and rewrites it (rank 0)
        after every epoch.

        `trace="run.h5"` records every step (cost, layer outputs, gradients, updated weights) to an HDF5
        file (see xpnn.trace).
        """
        epochs = int(epochs) if isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool) else epochs
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0; got {epochs!r}.")
        batch_size = _positive_int("batch_size", batch_size)
        shuffle = check_shuffle(shuffle)
        opt, loss_fn = self._resolve(optimizer, loss)
        xb, yb = self._prepare(x, y, seed)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val).")
            val = self._prepare(*validation_data)
        state = TrainState(rng=np.random.default_rng(seed))
        steps = -(-len(xb) // batch_size)
        extra, loop_verbose = progress_callbacks(verbose, epochs, steps)
        run = None
        if run_dir is not None and (distributed is False or _distributed_root()):
            from xpnn.runs import attach

            fit_args = {"epochs": epochs, "batch_size": batch_size, "shuffle": shuffle, "seed": seed}
            run, more = attach(self, run_dir, resume, opt, loss_fn, x, y, validation_data, state, verbose, **fit_args)
            extra += more
        elif resume:
            raise ValueError("resume=True needs run_dir, the run folder to continue (e.g. run_dir='runs/<run id>').")
        callbacks = [*(callbacks or ()), *extra]
        if checkpoint is not None:
            from xpnn.distributed.checkpoint import Checkpoint

            callbacks.append(Checkpoint(checkpoint, opt))
            callbacks[-1].resume(self, state)
        with tracing(trace) as recorder:
            if recorder is not None:
                callbacks.append(recorder)
            try:
                if distributed is not False:
                    from xpnn.distributed.parallel import as_data_parallel

                    return as_data_parallel(distributed).train(
                        self,
                        xb,
                        yb,
                        epochs,
                        batch_size,
                        opt,
                        loss_fn,
                        shuffle,
                        seed,
                        state,
                        val,
                        callbacks,
                        loop_verbose,
                    )
                return train_epochs(
                    self, xb, yb, epochs, batch_size, opt, loss_fn, shuffle, state, val, callbacks, loop_verbose
                )
            except DivergedError as exc:
                if run is None:
                    raise
                raise run.diverged(self, state, exc) from None

    def save(self, path: str | os.PathLike, optimizer: Optimizer | None = None) -> None:
        """Write the model (architecture, weights, dtype, optimizer state) to an HDF5 file atomically (xpnn.io)."""
        from xpnn.io import save_model

        save_model(self, path, optimizer)
