"""Model: a stack of layers, its weights, and its forward/backward passes, predict and evaluate.

This floor knows nothing of training loops, files or MPI: `xpnn.training` trains a Model, `xpnn.io`
saves one, and `xpnn.api.Sequential` (what `xpnn.Sequential` is) adds Keras's compile/fit/save on top.
Weights are exchanged as host NumPy arrays in Keras order and TensorFlow layouts, so they move between
xpnn and tf.keras without transposes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.data.sources import is_batch_source, iter_batches
from xpnn.data.weights import sample_weights
from xpnn.errors import DivergedError
from xpnn.inputs import (
    check_count,
    check_output_finite,
    check_seed,
    check_weight_array,
    input_shape_from,
    prepare_x,
    prepare_y,
)
from xpnn.layers.base import Layer
from xpnn.layers.fused import plan
from xpnn.losses import Loss, get_loss
from xpnn.metrics import Metric, default_metrics, resolve_metrics
from xpnn.optimizers import Optimizer
from xpnn.types import Array

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


class Model:
    """A linear stack of layers with its weights and passes; `xpnn.Sequential` is this plus training and files.

    The part of Keras's `keras.Model` (and `keras.Sequential`) that knows nothing of training: structure
    (`layers`, `summary`, `count_params`), weights (`get_weights`/`set_weights`, Keras's order and TF's
    layouts), the forward and backward passes, `predict` and `evaluate`. It imports no optimizer loop,
    file format or MPI code (see the README's "Layout").
    """

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
        self.compiled_metrics: Sequence[str | Metric] | None = None  # compile(metrics=...)
        self.stop_training = False  # a callback sets it to end training after the current batch (Keras)

    # ---- structure and weights -------------------------------------------------------------------
    @property
    def built(self) -> bool:
        """Whether `build` has created the weights (Keras's `Model.built`)."""
        return self.input_shape is not None

    def build(self, input_shape: Sequence[int], seed: int | None = 0, *, rng: Any = None) -> Model:
        """Create every layer's weights for per-sample `input_shape` (e.g. (64, 64, 3)); kernels glorot, biases 0.

        A leading None (Keras's batch axis, `(None, 64, 64, 3)`) is dropped. `rng` replaces the seeded
        generator (`xpnn.io` passes one that draws nothing before it reads the weights in).
        """
        input_shape = tuple(input_shape)
        if input_shape and input_shape[0] is None:
            input_shape = input_shape[1:]
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in input_shape):
            raise TypeError(
                f"input_shape must be ints without the batch axis, e.g. (64, 64, 3) or (None, 64, 64, 3); "
                f"got {input_shape!r}."
            )
        shape = tuple(int(s) for s in input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(
                f"input_shape must be positive sizes without the batch axis, e.g. (64, 64, 3); got {input_shape!r}."
            )
        rng = np.random.default_rng(check_seed(seed)) if rng is None else rng
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
        """Per-sample output shape, without the batch axis (Keras's `Model.output_shape` has a leading None)."""
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
            w = check_weight_array(w, f"weight {i} ({layer.name} {key})")
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

    def count_params(self) -> int:
        """How many numbers the weights hold, trainable or not (Keras's `count_params`)."""
        self._require_built()
        return sum(int(np.prod(w.shape)) for layer in self.layers for w in layer.weights.values())

    def summary(self, print_fn: Callable[[str], Any] | None = print) -> str:
        """Print (with `print_fn`; None: don't) and return a table of layers, output shapes and parameter counts.

        Keras's `model.summary()`; columns are as wide as their longest entry, so they never run together.
        """
        self._require_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            count = sum(int(np.prod(p.shape)) for p in layer.weights.values())
            head = ", ".join(f"{k}={v!r}" for k, v in list(layer.get_config().items())[:2])
            rows.append((f"{layer.name}({head})", str((None, *layer.output_shape)), f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        rule = "-" * (widths[0] + widths[1] + widths[2] + 4)
        lines = [rule]
        for i, (name, shape, count) in enumerate(rows):
            lines.append(f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {count:>{widths[2]}}")
            if i == 0:
                lines.append(rule)
        trainable = sum(int(np.prod(p.shape)) for p in self.parameters())
        total = self.count_params()
        lines += [
            rule,
            f"Total params: {total:,}  ({self.dtype})",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
        ]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def __call__(self, x: Any, training: bool = False) -> Array:
        """The model's output for `x` as a backend array, in one pass (Keras's `model(x)`); see `predict`."""
        xb, _ = self._prepare(x, None)
        return self.forward(xb, training=training)[0]

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

    def backward(
        self, dout: Array, caches: list[Any], record: bool = False, release: bool = False
    ) -> tuple[list[Array], list[Array] | None]:
        """Gradients aligned with `parameters()` and (when `record`) each layer's input gradient.

        The first layer's input gradient is computed only when recorded: nothing else needs it. With `release`
        each unit's cache leaves `caches` once its backward has run, so the activations it alone holds are freed
        while the rest of the backward runs (`run_pass` does: the traced peak of a strided all-conv step at batch
        256 went 124 -> 99 MiB above the model's, the AlexNet-style one 134 -> 127).
        """
        units = plan(self.layers, fuse=not record)
        per_unit: list[list[dict[str, Array]]] = [[]] * len(units)
        input_grads: list[Array] | None = [None] * len(self.layers) if record else None  # type: ignore[list-item]
        for i in range(len(units) - 1, -1, -1):
            dout, per_unit[i] = units[i].backward(dout, caches[i], need_dx=record or i > 0)
            if release:
                caches[i] = None
            if input_grads is not None:  # with record every unit is one layer
                input_grads[i] = dout
        per_layer = [g for gs in per_unit for g in gs]
        grads = [g[key] for layer, g in zip(self.layers, per_layer) for key in layer.params]
        return grads, input_grads

    def run_pass(
        self, x: Array, y: Array, loss: Loss, record: bool = False, training: bool = True, sample_weight: Any = None
    ) -> Pass:
        """Forward (training mode unless told), loss and backward on prepared backend arrays; no update."""
        logits, caches, outputs = self.forward(x, record, training)
        cost, dlogits = loss(logits, y) if sample_weight is None else loss(logits, y, sample_weight=sample_weight)
        grads, input_grads = self.backward(dlogits, caches, record, release=True)
        cost = self._add_regularization(cost, grads)
        return Pass(cost, logits, grads, outputs, input_grads)

    def _add_regularization(self, cost: Array, grads: list[Array]) -> Array:
        """Keras's weight penalties: each layer's `regularizers[key](w)` joins the cost, its gradient the grads."""
        i = 0
        for layer in self.layers:
            regs = getattr(layer, "regularizers", None) or {}
            for key, w in layer.params.items():
                reg = regs.get(key)
                if reg is not None:
                    cost = cost + reg(w)
                    grads[i] = grads[i] + reg.gradient(w)
                i += 1
        return cost

    # ---- one update ------------------------------------------------------------------------------
    def train_step(self, xb: Array, yb: Array, optimizer: Optimizer, loss: Loss, record: bool = False) -> Pass:
        """One training-mode pass on prepared arrays and the optimizer's update; the pass (cost before the update)."""
        p = self.run_pass(xb, yb, loss, record=record, training=True)
        if not np.isfinite(float(p.cost)):
            raise DivergedError(1, 1, float(p.cost))
        optimizer.apply(self.parameters(), p.grads)
        return p

    def _prepare(self, x: Any, y: Any | None, seed: int | None = 0) -> tuple[Array, Array | None]:
        """Check and move (x, y) to the backend as fit does; an unbuilt model is built for x's shape first."""
        backend = get_backend()
        if not self.built:
            self.build(input_shape_from(x, self.layers), seed=seed)
        xb = prepare_x(x, self.input_shape, self.dtype, backend)  # type: ignore[arg-type]
        yb = None if y is None else prepare_y(y, len(xb), self.output_shape[-1], self.dtype, backend)
        return xb, yb

    def _default_loss(self, loss: str | Loss | None) -> Loss:
        return get_loss(loss if loss is not None else (self.loss or "softmax_cross_entropy"))

    def predict(self, x: Any, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        """Outputs (logits) for `x` as a host array, in inference mode, in chunks of `batch_size` (default 256).

        `verbose` is accepted for Keras's habit; predict prints nothing. `x` may be a batch source
        (`xpnn.datasets.PyDataset`, or a generator with `steps`... see `xpnn.data.sources`): read in order.
        """
        if is_batch_source(x):
            self._require_built()
            backend = get_backend()
            rng = np.random.default_rng(0)
            outs = [self.forward(self._prepare(xh, None)[0])[0] for xh, _ in iter_batches(x, rng, need_y=False)]
            return backend.to_host(backend.xp.concatenate(outs))
        xb, _ = self._prepare(x, None)
        chunk = PREDICT_CHUNK if batch_size is None else check_count("batch_size", batch_size)
        backend = get_backend()
        outs = [self.forward(xb[i : i + chunk])[0] for i in range(0, len(xb), chunk)]
        out = backend.xp.concatenate(outs)
        check_output_finite(out, xb, "predict", backend)
        return backend.to_host(out)

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        loss: str | Loss | None = None,
        batch_size: int | None = None,
        sample_weight: Any = None,
        metrics: Sequence[str | Metric] | None = None,
        verbose: int = 0,
    ) -> dict[str, float]:
        """{"loss": mean cost over all samples, and each metric} in inference mode (Keras's `evaluate`).

        Metrics are `metrics`, else the compiled ones, else accuracy for multi-class classification only.
        `sample_weight` weighs each sample's loss and metrics as Keras does.
        """
        loss_fn = self._default_loss(loss)
        if is_batch_source(x):
            return self._evaluate_source(x, loss_fn, self.metrics_for(loss_fn, metrics))
        if y is None:
            raise ValueError("evaluate needs labels y with arrays x: evaluate(x, y); a batch source brings its own.")
        xb, yb = self._prepare(x, y)
        sw = self.sample_weights(y, len(xb), sample_weight)
        result = self.evaluate_prepared(
            xb, yb, loss_fn, batch_size, self.metrics_for(loss_fn, metrics), sw, check_finite=True
        )
        if verbose:
            print("  ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
        return result

    def _evaluate_source(self, source: Any, loss_fn: Loss, metrics: list[Metric]) -> dict[str, float]:
        """`evaluate` over a batch source, read in order; the loss is the sample-weighted mean over batches."""
        self._require_built()
        for m in metrics:
            m.reset()
        total, n = 0.0, 0
        for xh, yh in iter_batches(source, np.random.default_rng(0)):
            xb, yb = self._prepare(xh, yh)
            logits = self.forward(xb)[0]
            cost, _ = loss_fn(logits, yb)
            total, n = total + cost * len(xb), n + len(xb)
            for m in metrics:
                m.update(logits, yb)
        return {"loss": float(total) / n, **{m.name: m.result() for m in metrics}}

    def sample_weights(self, y: Any, n: int, sample_weight: Any = None, class_weight: Any = None) -> Array | None:
        """Keras's per-sample weights (`sample_weight` × `class_weight[label]`) on the backend, or None."""
        units = int(self.output_shape[-1])
        w = sample_weights(y, n, units if units > 1 else 2, sample_weight, class_weight)
        return None if w is None else get_backend().asarray(w.astype(self.dtype))

    def metrics_for(self, loss: Loss, metrics: Sequence[str | Metric] | None = None) -> list[Metric]:
        """Metric objects for `metrics` (else the compiled ones, else the defaults for this loss and output)."""
        specs = metrics if metrics is not None else self.compiled_metrics
        units = int(self.output_shape[-1])
        return default_metrics(loss, units) if specs is None else resolve_metrics(specs, loss, units)

    def evaluate_prepared(
        self,
        xb: Array,
        yb: Array,
        loss_fn: Loss,
        batch_size: int | None = None,
        metrics: list[Metric] | None = None,
        sample_weight: Array | None = None,
        check_finite: bool = False,
    ) -> dict[str, float]:
        """`evaluate` on backend arrays already checked by `prepare_x`/`prepare_y`; one host read per figure.

        `check_finite` refuses NaN/Inf logits from finite inputs as an overflow (the training loop instead
        reports a non-finite validation loss as a divergence).
        """
        chunk = PREDICT_CHUNK if batch_size is None else check_count("batch_size", batch_size)
        metrics = self.metrics_for(loss_fn) if metrics is None else metrics
        for m in metrics:
            m.reset()
        total_cost = 0.0
        for i in range(0, len(xb), chunk):
            logits = self.forward(xb[i : i + chunk])[0]
            if check_finite:
                check_output_finite(logits, xb[i : i + chunk], "evaluate", get_backend())
            sw = None if sample_weight is None else sample_weight[i : i + chunk]
            cost, _ = loss_fn(logits, yb[i : i + chunk]) if sw is None else loss_fn(logits, yb[i : i + chunk], sw)
            total_cost = total_cost + cost * len(logits)
            for m in metrics:
                m.update(logits, yb[i : i + chunk], sw)
        return {"loss": float(total_cost) / len(xb), **{m.name: m.result() for m in metrics}}
