"""Losses on the model's outputs: `loss(outputs, labels, sample_weight=None)` -> (cost, d cost / d outputs).

The cost is a 0-d backend array. Without weights every loss reduces by the mean, as
`tf.reduce_mean(tf.nn.*_with_logits(...))` and Keras do; with `sample_weight` (one weight per sample)
it is Keras 3's "sum_over_batch_size": sum(per-sample loss · weight) / batch size.

`from_logits` says what a loss expects: raw scores (True) or probabilities from a Softmax/Sigmoid
layer (False, Keras's default for its named crossentropies). Probabilities are clipped to
[1e-7, 1 − 1e-7] as Keras does (backend.epsilon()); the gradient is zero where the clip bites, as TF's.
xpnn's `softmax_cross_entropy` (from logits) stays the default loss.
"""

from __future__ import annotations

import numbers
from typing import Any

from xpnn.backends import get_backend
from xpnn.registry import lookup
from xpnn.types import Array

EPSILON = 1e-7  # keras.backend.epsilon()


def _check_pair(name: str, logits: Array, labels: Array) -> None:
    if logits.ndim != 2:
        raise ValueError(
            f"{name} expects outputs shaped (batch, classes); got shape {tuple(logits.shape)}. "
            "End the model with Flatten() and Dense(classes)."
        )
    if tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"{name}: labels have shape {tuple(labels.shape)} but the outputs {tuple(logits.shape)}; "
            "pass one label row per sample (integer labels become one-hot rows in fit)."
        )


def _weights(sample_weight: Any, n: int, dtype: Any) -> Array:
    """sample_weight as a backend (n,) array of the outputs' dtype, or a ValueError naming the fix."""
    backend = get_backend()
    sw = backend.asarray(sample_weight, dtype=dtype)
    if sw.ndim == 2 and sw.shape[1] == 1:
        sw = sw.reshape(-1)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight must hold one weight per sample, shape ({n},); got {tuple(sw.shape)}.")
    return sw


class Loss:
    """A named loss; `loss(outputs, labels, sample_weight=None)` -> (cost, d cost / d outputs).

    TF/Keras counterpart: keras.losses.Loss.

    Subclasses return per-sample values (n,) and their gradient (n, k) from `per_sample`; the base
    class reduces them ("sum_over_batch_size").
    """

    name = ""
    from_logits = True  # False: the loss expects probabilities (the model ends in Softmax or Sigmoid)
    expects_activation = ""  # the activation a from-logits loss applies itself ("softmax" or "sigmoid")

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        raise NotImplementedError

    def __call__(self, logits: Array, labels: Array, sample_weight: Any = None) -> tuple[Array, Array]:
        _check_pair(self.name, logits, labels)
        values, grad = self.per_sample(logits, labels)
        n = float(values.shape[0])
        if sample_weight is None:
            return values.mean(), grad / n
        sw = _weights(sample_weight, values.shape[0], logits.dtype)
        return (values * sw).sum() / n, grad * (sw / n)[:, None]

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def _clip_mask(p: Array) -> tuple[Array, Array]:
    """clip(p, ε, 1 − ε) and where its gradient passes (tf.clip_by_value: inside the closed interval)."""
    xp = get_backend().xp
    c = xp.clip(p, EPSILON, 1.0 - EPSILON)
    return c, (p >= EPSILON) & (p <= 1.0 - EPSILON)


def _label_smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1]; received label_smoothing={value!r}.")
    return float(value)


class SoftmaxCrossEntropy(Loss):
    """mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits)) over the batch.

    Labels may be one-hot, soft, or any real rows. The gradient returned is TensorFlow's
    (softmax − labels) / n. It is the true gradient of the cost only when each label row sums
    to 1; for other rows (e.g. SparkNeuralNets' random-normal labels) the true one is
    (softmax · Σlabels − labels) / n, but xpnn matches what TensorFlow computes.
    """

    name = "softmax_cross_entropy"
    expects_activation = "softmax"

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        return get_backend().kernels.softmax_xent(logits, labels)

    def __call__(self, logits: Array, labels: Array, sample_weight: Any = None) -> tuple[Array, Array]:
        if sample_weight is not None:
            return super().__call__(logits, labels, sample_weight)
        _check_pair(self.name, logits, labels)
        loss, backprop = get_backend().kernels.softmax_xent(logits, labels)
        n = logits.shape[0]
        backprop /= float(n)
        return loss.mean(), backprop


class SigmoidCrossEntropy(Loss):
    """mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)) over every element."""

    name = "sigmoid_cross_entropy"
    expects_activation = "sigmoid"

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        xp = get_backend().xp
        elementwise = xp.maximum(logits, 0.0) - logits * labels + xp.log1p(xp.exp(-xp.abs(logits)))
        sigmoid = xp.exp(-xp.logaddexp(0.0, -logits))
        k = float(logits.shape[1])
        return elementwise.mean(axis=1), (sigmoid - labels) / k

    def __call__(self, logits: Array, labels: Array, sample_weight: Any = None) -> tuple[Array, Array]:
        if sample_weight is not None:
            return super().__call__(logits, labels, sample_weight)
        _check_pair(self.name, logits, labels)
        xp = get_backend().xp
        elementwise = xp.maximum(logits, 0.0) - logits * labels + xp.log1p(xp.exp(-xp.abs(logits)))
        sigmoid = xp.exp(-xp.logaddexp(0.0, -logits))
        return elementwise.mean(), (sigmoid - labels) / float(logits.size)


class MeanSquaredError(Loss):
    """keras.losses.MeanSquaredError: mean((pred − labels)²) over the last axis, then over the batch."""

    name = "mse"
    from_logits = False
    expects_activation = ""

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        diff = logits - labels
        return (diff * diff).mean(axis=1), diff * (2.0 / float(logits.shape[1]))

    def __call__(self, logits: Array, labels: Array, sample_weight: Any = None) -> tuple[Array, Array]:
        if sample_weight is not None:
            return super().__call__(logits, labels, sample_weight)
        _check_pair(self.name, logits, labels)
        diff = logits - labels
        return (diff * diff).mean(), diff * (2.0 / float(logits.size))


class MeanAbsoluteError(Loss):
    """keras.losses.MeanAbsoluteError: mean(|pred − labels|) over the last axis, then over the batch."""

    name = "mean_absolute_error"
    from_logits = False

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        xp = get_backend().xp
        diff = logits - labels
        return xp.abs(diff).mean(axis=1), xp.sign(diff) / float(logits.shape[1])


class Huber(Loss):
    """keras.losses.Huber(delta=1.0): ½e² where |e| <= delta, else delta·|e| − ½delta², averaged over the last axis."""

    name = "huber"
    from_logits = False

    def __init__(self, delta: float = 1.0) -> None:
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not float(delta) > 0:
            raise ValueError(f"delta must be a number > 0; received delta={delta!r}.")
        self.delta = float(delta)

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        xp = get_backend().xp
        error = logits - labels
        abs_error = xp.abs(error)
        small = abs_error <= self.delta
        values = xp.where(small, 0.5 * error * error, self.delta * abs_error - 0.5 * self.delta * self.delta)
        grad = xp.where(small, error, self.delta * xp.sign(error))
        k = float(logits.shape[1])
        return values.mean(axis=1), grad / k

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"delta": self.delta}


class CategoricalCrossentropy(Loss):
    """keras.losses.CategoricalCrossentropy(from_logits=False, label_smoothing=0.0) on one-hot or soft rows.

    Labels are smoothed to y(1 − s) + s/k. From logits: tf.nn.softmax_cross_entropy_with_logits (TF's
    gradient, softmax − labels). From probabilities: p / Σp clipped to [ε, 1 − ε], then −Σ y·log.
    """

    name = "categorical_crossentropy"
    expects_activation = "softmax"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        self.from_logits = bool(from_logits)
        self.label_smoothing = _label_smoothing(label_smoothing)

    def _smooth(self, labels: Array) -> Array:
        if not self.label_smoothing:
            return labels
        return labels * (1.0 - self.label_smoothing) + self.label_smoothing / float(labels.shape[1])

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        xp = get_backend().xp
        y = self._smooth(labels)
        if self.from_logits:
            return get_backend().kernels.softmax_xent(logits, y)
        total = logits.sum(axis=1, keepdims=True)
        c, mask = _clip_mask(logits / total)
        values = -(y * xp.log(c)).sum(axis=1)
        g = xp.where(mask, -y / c, 0.0)  # d loss / d (p / Σp)
        grad = g / total - (g * logits).sum(axis=1, keepdims=True) / (total * total)
        return values, grad

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    """keras.losses.SparseCategoricalCrossentropy(from_logits=False): integer class labels.

    Labels are class indices (n,) or (n, 1); xpnn's fit hands them over as one-hot rows, which are
    accepted too. From probabilities Keras clips p to [ε, 1 − ε] and takes the sparse softmax xent of
    log p, so the cost is −log p_y + log Σ clip(p) (Σp need not be 1) and so is its gradient.
    """

    name = "sparse_categorical_crossentropy"
    expects_activation = "softmax"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)

    def __call__(self, logits: Array, labels: Array, sample_weight: Any = None) -> tuple[Array, Array]:
        return super().__call__(logits, _one_hot(labels, logits), sample_weight)

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        xp = get_backend().xp
        if self.from_logits:
            return get_backend().kernels.softmax_xent(logits, labels)
        c, mask = _clip_mask(logits)
        values, backprop = get_backend().kernels.softmax_xent(xp.log(c), labels)
        return values, xp.where(mask, backprop / c, 0.0)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"from_logits": self.from_logits}


def _one_hot(labels: Array, logits: Array) -> Array:
    """Integer labels (n,) or (n, 1) as one-hot rows of the outputs' dtype; rows of the outputs' shape pass."""
    backend = get_backend()
    xp = backend.xp
    labels = backend.asarray(labels)
    n, k = logits.shape[0], logits.shape[-1]
    if labels.ndim == 2 and labels.shape == logits.shape and (k > 1 or labels.dtype.kind == "f"):
        return labels
    flat = labels.reshape(-1)
    if flat.shape != (n,):
        raise ValueError(
            f"sparse_categorical_crossentropy expects class indices shaped ({n},); got labels {tuple(labels.shape)}."
        )
    if flat.dtype.kind == "f" and bool((flat != xp.floor(flat)).any()):
        raise ValueError("sparse_categorical_crossentropy expects integer class indices; got fractional labels.")
    idx = flat.astype(xp.int64)
    if bool(((idx < 0) | (idx >= k)).any()):
        raise ValueError(f"sparse_categorical_crossentropy: class indices must be in [0, {k - 1}].")
    return xp.eye(k, dtype=logits.dtype)[idx]


class BinaryCrossentropy(Loss):
    """keras.losses.BinaryCrossentropy(from_logits=False, label_smoothing=0.0), averaged over the last axis.

    Labels are smoothed to y(1 − s) + s/2. From logits: tf.nn.sigmoid_cross_entropy_with_logits.
    From probabilities: p clipped to [ε, 1 − ε], then −(y·log p + (1 − y)·log(1 − p)).
    """

    name = "binary_crossentropy"
    expects_activation = "sigmoid"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        self.from_logits = bool(from_logits)
        self.label_smoothing = _label_smoothing(label_smoothing)

    def per_sample(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Each sample's loss (n,) and its gradient with respect to that sample's outputs (n, k)."""
        xp = get_backend().xp
        y = labels * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing if self.label_smoothing else labels
        k = float(logits.shape[1])
        if self.from_logits:
            return SigmoidCrossEntropy().per_sample(logits, y)
        c, mask = _clip_mask(logits)
        values = -(y * xp.log(c) + (1 - y) * xp.log(1 - c))
        grad = xp.where(mask, -(y / c - (1 - y) / (1 - c)), 0.0)
        return values.mean(axis=1), grad / k

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


softmax_cross_entropy = SoftmaxCrossEntropy()
sigmoid_cross_entropy = SigmoidCrossEntropy()
mse = MeanSquaredError()
mae = MeanAbsoluteError()

LOSSES: dict[str, Loss] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "sigmoid_cross_entropy": sigmoid_cross_entropy,
    "categorical_crossentropy": CategoricalCrossentropy(),
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy(),
    "binary_crossentropy": BinaryCrossentropy(),
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
    "huber": Huber(),
}


def get_loss(spec: str | Loss) -> Loss:
    """A Loss from a Keras name ("categorical_crossentropy", "mse", ...) or xpnn's, or itself.

    Keras's names take Keras's defaults: "categorical_crossentropy" expects probabilities (a model
    ending in Softmax); xpnn's default "softmax_cross_entropy" expects logits.
    """
    if isinstance(spec, Loss):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"loss must be a name or an xpnn.losses.Loss; got {type(spec).__name__}.")
    return lookup("loss", spec, LOSSES)


CLASSES: dict[str, type[Loss]] = {
    cls.__name__.lower(): cls
    for cls in (
        SoftmaxCrossEntropy,
        SigmoidCrossEntropy,
        MeanSquaredError,
        MeanAbsoluteError,
        Huber,
        CategoricalCrossentropy,
        SparseCategoricalCrossentropy,
        BinaryCrossentropy,
    )
}


def loss_config(loss: Loss) -> dict[str, Any]:
    """{"class_name": ..., "config": {...}}: what a run or model file stores to rebuild `loss` with its options."""
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def loss_from_config(spec: Any) -> Loss:
    """The loss `loss_config` described (a bare name string is read as with `get_loss`)."""
    if isinstance(spec, str):
        return get_loss(spec)
    if not isinstance(spec, dict) or "class_name" not in spec or set(spec) - {"class_name", "config"}:
        raise TypeError(f"a loss config is {{'class_name': ..., 'config': {{...}}}}; received {spec!r:.200}.")
    cls = lookup("loss class", str(spec["class_name"]), CLASSES)
    config = spec.get("config") or {}
    if not isinstance(config, dict):
        raise TypeError(f"the config of {spec['class_name']} must be a table of arguments; received {config!r:.200}.")
    try:
        return cls(**config)
    except TypeError as exc:
        raise TypeError(f"{spec['class_name']}: {exc}. See help(xpnn.losses.{cls.__name__}).") from None


def double_softmax_warning(last_layer_name: str, loss: Loss) -> str | None:
    """The warning for a model whose last layer and loss disagree about the final activation, else None.

    Softmax (Sigmoid) last with a from-logits loss applies it twice (Keras warns: "received
    `from_logits=True`, but the `output` argument was produced by a Softmax activation"); any other
    last layer with a loss that expects probabilities (Keras's crossentropies by default) feeds it
    logits, which the 1e-7 clip then hides.
    """
    activation = str(last_layer_name).lower()
    wanted = loss.expects_activation
    if not wanted:
        return None
    if loss.from_logits and activation == wanted:
        return (
            f"the model ends in {last_layer_name} but the loss {loss.name} (from_logits=True) applies "
            f"{wanted} itself, so it is applied twice and training slows or stalls. Remove the final "
            f"{last_layer_name} layer, or use a loss with from_logits=False "
            f"('{'categorical_crossentropy' if wanted == 'softmax' else 'binary_crossentropy'}')."
        )
    if not loss.from_logits and activation != wanted:
        return (
            f"the loss {loss.name} expects probabilities (from_logits=False) but the model ends in "
            f"{last_layer_name}, not {wanted.capitalize()}. Add a {wanted.capitalize()}() layer, or pass "
            f"{type(loss).__name__}(from_logits=True)."
        )
    return None
