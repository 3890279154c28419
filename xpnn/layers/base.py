"""What every layer is: a config, parameters after `build`, and a forward/backward pair.

`forward(x)` returns the output and a cache (a frozen dataclass); `backward(dout, cache)`
returns the input gradient (None when `need_dx` is False, as for the first layer) and
the parameter gradients keyed like `params`.

Layers whose forward depends on the mode (Dropout, BatchNormalization) set `takes_training = True`
and take `forward(x, training=False)`, as Keras's `call(inputs, training=None)`; the model passes
`training=True` from fit/train_on_batch and False from predict/evaluate. `params` are the trainable
weights (handed to optimizers); `non_trainable` holds weights that training changes by other means
(BatchNorm's moving statistics). `get_weights()` lists each layer's params then its non_trainable,
Keras's order. A layer with state outside its weights (Dropout's random stream) returns it from
`get_state()` (JSON-friendly) so that checkpoints resume it exactly. `regularizers` maps param keys
to penalties (xpnn.regularizers) that the model adds to the cost and to those params' gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.types import Array, IntPair

if TYPE_CHECKING:
    from xpnn.regularizers import Regularizer


class Layer:
    """Base class of every layer (Keras's `keras.layers.Layer`); subclasses set `params` in `build` and
    implement `forward`/`backward`.

    Unlike Keras, the backward pass is explicit: `forward` returns a cache and `backward(dout, cache)` the
    gradients, so `xpnn.trace` can record every layer's output and gradients.
    """

    takes_training = False  # True: forward(x, training=...) (Dropout, BatchNormalization)

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.non_trainable: dict[str, Array] = {}
        self.regularizers: dict[str, Regularizer] = {}  # penalties on params, keyed like them ("w", "b", ...)
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """The layer's class name (what `summary` and error messages show)."""
        return type(self).__name__

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        """Check `input_shape` (without the batch axis), create parameters, return the output shape."""
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        return self.output_shape

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample output shape for a per-sample `input_shape` (Keras's `compute_output_shape`)."""
        return input_shape

    def forward(self, x: Array) -> tuple[Array, Any]:
        """The output for a batch `x` and the cache its backward needs (Keras's `call`, plus the cache)."""
        raise NotImplementedError

    def backward(self, dout: Array, cache: Any, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        """(dL/dx, {name: dL/dweight}) from dL/d output and `forward`'s cache; dx is None when `need_dx` is False.

        What `tf.GradientTape` computes for this layer; the weight gradients are keyed like `params`.
        """
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly."""
        return {}

    @property
    def weights(self) -> dict[str, Array]:
        """Every weight in Keras order: the trainable `params`, then `non_trainable`."""
        return {**self.params, **self.non_trainable}

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of this layer's weights, Keras order (Keras's `layer.get_weights()`)."""
        backend = get_backend()
        return [np.array(backend.to_host(w), copy=True) for w in self.weights.values()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace this layer's weights (same order and shapes as `get_weights()`); the layer must be built."""
        slots = list(self.weights.items())
        if len(weights) != len(slots):
            raise ValueError(f"{self.name}.set_weights got {len(weights)} arrays; the layer has {len(slots)}.")
        backend = get_backend()
        new = {}
        for (key, old), w in zip(slots, weights):
            arr = np.asarray(backend.to_host(w))
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{self.name} weight {key!r} must be numbers; got an array of dtype {arr.dtype}.")
            if arr.shape != tuple(old.shape):
                raise ValueError(f"{self.name} weight {key!r} must have shape {tuple(old.shape)}; got {arr.shape}.")
            if not np.isfinite(arr).all():
                raise ValueError(f"{self.name} weight {key!r} holds NaN or Inf; pass finite weights.")
            new[key] = backend.asarray(np.array(arr, dtype=old.dtype, copy=True))
        for key, arr in new.items():
            (self.params if key in self.params else self.non_trainable)[key] = arr

    def get_state(self) -> dict[str, Any] | None:
        """State outside the weights that a checkpoint must keep (JSON-friendly), or None."""
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_state` returned."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.name}({args})"


def positive_pair(value: IntPair | Sequence[int], what: str, layer: str) -> tuple[int, int]:
    """Read an int or a pair of ints that must be ≥ 1, with a Keras-style error otherwise."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{layer} expects {what} as an int or a pair of ints; received {what}={value!r}.")
    if min(pair) < 1:
        raise ValueError(f"{layer} expects {what} to be positive (>= 1); received {what}={value!r}.")
    return int(pair[0]), int(pair[1])


def expect_nhwc(input_shape: tuple[int, ...], layer: str) -> tuple[int, int, int]:
    """Check a (h, w, c) input shape (the batch axis left out) and return it."""
    if len(input_shape) != 3:
        raise ValueError(
            f"{layer} expects NHWC input (n, h, w, c), i.e. a per-sample shape (h, w, c); "
            f"got per-sample shape {tuple(input_shape)}. Add a channel axis for grey images (x[..., None])."
        )
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])
