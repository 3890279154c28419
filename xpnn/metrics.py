"""Metrics reported next to the loss: Keras 3's names and formulas, accumulated on the device.

`update(outputs, labels, sample_weight=None)` adds a batch to two 0-d backend arrays (weighted total and
count) without reading anything back; `result()` is the one host read, total / count (0.0 before any
update, as Keras's divide_no_nan). Labels are what fit hands over: label rows (n, classes), one-hot for
integer labels (xpnn.inputs.prepare_y); the sparse metrics also take class indices (n,).

`resolve_metrics` turns compile/fit's `metrics=[...]` into Metric objects, resolving "accuracy" as Keras's
compile does; `default_metrics` is what xpnn reports unasked: accuracy for multi-class classification only.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from xpnn.backends import get_backend
from xpnn.registry import lookup
from xpnn.types import Array

# Loss kinds by their `name` (xpnn.losses), so that metrics need not import the losses module.
BINARY_LOSSES = ("sigmoid_cross_entropy", "binary_crossentropy")
SPARSE_LOSSES = ("sparse_categorical_crossentropy",)
MULTICLASS_LOSSES = ("softmax_cross_entropy", "categorical_crossentropy", "sparse_categorical_crossentropy")


class Metric:
    """A running, optionally weighted mean of per-sample values; subclasses define `values`.

    TF/Keras counterpart: keras.metrics.Metric (a Mean of per-sample values).
    """

    default_name = ""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.default_name
        self.reset()

    def values(self, outputs: Array, labels: Array) -> Array:
        """Per-sample values (n,) on the backend."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every batch (call at the start of each epoch or evaluation)."""
        xp = get_backend().xp
        self.total = xp.zeros((), dtype=xp.float64)
        self.count = xp.zeros((), dtype=xp.float64)

    def update(self, outputs: Array, labels: Array, sample_weight: Array | None = None) -> None:
        """Add one batch; stays on the device (no host read)."""
        values = self.values(outputs, labels).astype(self.total.dtype)
        if sample_weight is None:
            self.total += values.sum()
            self.count += values.shape[0]
        else:
            sw = get_backend().asarray(sample_weight, dtype=self.total.dtype).reshape(-1)
            self.total += (values * sw).sum()
            self.count += sw.sum()

    def result(self) -> float:
        """The mean so far, read to the host once."""
        count = self.count + (self.count == 0)  # 0/1 = 0 before any update, as Keras's divide_no_nan
        return float(self.total / count)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _class_index(labels: Array) -> Array:
    """Class indices from label rows (argmax) or from indices (n,) / (n, 1)."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=1)
    return labels.reshape(-1).astype(get_backend().xp.int64)


class CategoricalAccuracy(Metric):
    """keras.metrics.CategoricalAccuracy: argmax(outputs) == argmax(labels)."""

    default_name = "categorical_accuracy"

    def values(self, outputs: Array, labels: Array) -> Array:
        return outputs.argmax(axis=1) == labels.argmax(axis=1)


class SparseCategoricalAccuracy(Metric):
    """keras.metrics.SparseCategoricalAccuracy: argmax(outputs) == the class index (or the label row's argmax)."""

    default_name = "sparse_categorical_accuracy"

    def values(self, outputs: Array, labels: Array) -> Array:
        return outputs.argmax(axis=1) == _class_index(labels)


class BinaryAccuracy(Metric):
    """keras.metrics.BinaryAccuracy(threshold=0.5): mean over the last axis of (outputs > threshold) == labels."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise TypeError(f"threshold must be a number; received threshold={threshold!r}.")
        self.threshold = float(threshold)
        super().__init__(name)

    def values(self, outputs: Array, labels: Array) -> Array:
        labels = labels.reshape(outputs.shape) if labels.size == outputs.size else labels
        predicted = (outputs > self.threshold).astype(labels.dtype)
        return (predicted == labels).mean(axis=-1)

    def __repr__(self) -> str:
        return f"BinaryAccuracy(name={self.name!r}, threshold={self.threshold!r})"


class TopKCategoricalAccuracy(Metric):
    """keras.metrics.TopKCategoricalAccuracy(k=5): the labelled class is among the k largest outputs.

    As tf.math.in_top_k: ties at the boundary count as in the top k, and a non-finite row is a miss.
    """

    default_name = "top_k_categorical_accuracy"

    def __init__(self, name: str | None = None, k: int = 5) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1; received k={k!r}.")
        self.k = int(k)
        super().__init__(name)

    def values(self, outputs: Array, labels: Array) -> Array:
        xp = get_backend().xp
        target = outputs[xp.arange(outputs.shape[0]), _class_index(labels)]
        above = (outputs > target[:, None]).sum(axis=1)
        return (above < self.k) & xp.isfinite(outputs).all(axis=1)

    def __repr__(self) -> str:
        return f"TopKCategoricalAccuracy(name={self.name!r}, k={self.k})"


class MeanAbsoluteError(Metric):
    """keras.metrics.MeanAbsoluteError: mean |outputs − labels| over the last axis, then over samples."""

    default_name = "mean_absolute_error"

    def values(self, outputs: Array, labels: Array) -> Array:
        return get_backend().xp.abs(outputs - labels).mean(axis=-1)


class MeanSquaredError(Metric):
    """keras.metrics.MeanSquaredError: mean (outputs − labels)² over the last axis, then over samples."""

    default_name = "mean_squared_error"

    def values(self, outputs: Array, labels: Array) -> Array:
        diff = outputs - labels
        return (diff * diff).mean(axis=-1)


METRICS: dict[str, type[Metric]] = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "accuracy": CategoricalAccuracy,  # resolved by the loss and outputs in resolve_metrics
    "acc": CategoricalAccuracy,
}


def _accuracy_for(name: str, loss: Any, output_units: int) -> Metric:
    """Keras's compile-time choice for "accuracy": binary for one output unit or a binary loss, sparse for a
    sparse loss, categorical otherwise. A from-logits binary loss thresholds its logits at 0 (sigmoid > 0.5)."""
    kind = getattr(loss, "name", "")
    if output_units == 1 or kind in BINARY_LOSSES:
        from_logits = kind in BINARY_LOSSES and bool(getattr(loss, "from_logits", False))
        return BinaryAccuracy(name, threshold=0.0 if from_logits else 0.5)
    if kind in SPARSE_LOSSES:
        return SparseCategoricalAccuracy(name)
    return CategoricalAccuracy(name)


def resolve_metrics(specs: Sequence[str | Metric] | None, loss: Any, output_units: int) -> list[Metric]:
    """Metric objects for compile/fit's `metrics=[...]`: names (closest suggested when unknown) or Metrics.

    Each metric's `name` is the key it is logged under (the spec string, as Keras: "mae" logs as "mae").
    """
    if specs is None:
        return []
    if isinstance(specs, (str, Metric)):
        specs = [specs]
    out: list[Metric] = []
    for spec in specs:
        if isinstance(spec, Metric):
            out.append(spec)
            continue
        if not isinstance(spec, str):
            raise TypeError(f"a metric must be a name or an xpnn.metrics.Metric; got {type(spec).__name__}.")
        key = spec.strip().lower()
        cls = lookup("metric", key, METRICS)
        out.append(_accuracy_for(key, loss, output_units) if key in ("accuracy", "acc") else cls(key))
    names = [m.name for m in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"metrics {repeated} are asked for more than once; each name is one column of the logs.")
    return out


def default_metrics(loss: Any, output_units: int) -> list[Metric]:
    """What is reported unasked besides the loss: accuracy for multi-class classification losses only."""
    multiclass = getattr(loss, "name", "") in MULTICLASS_LOSSES
    return [_accuracy_for("accuracy", loss, output_units)] if multiclass and output_units > 1 else []
