"""Fully connected layer with an (in, out) kernel, as keras.layers.Dense."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn import regularizers
from xpnn.backends import get_backend
from xpnn.cpu_threads import matmul
from xpnn.init import get_initializer
from xpnn.layers.activation_fns import activate, deactivate, get_activation
from xpnn.layers.base import Layer
from xpnn.types import Array


@dataclass(frozen=True)
class DenseCache:
    x: Array
    w: Array


def dense_forward(x: Array, w: Array, b: Array | None, relu: bool = False) -> tuple[Array, DenseCache]:
    """(n, in) · (in, out) + b -> (n, out), then max(·, 0) with `relu` (a ReLU layer after it: its bits); large
    products on every CPU worker, the bias and ReLU in the native GEMM's registers (xpnn.cpu_threads.matmul)."""
    return matmul(x, w, bias=b, relu=relu), DenseCache(x, w)


def dense_backward(dout: Array, cache: DenseCache, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
    """dx = dout·Wᵀ, dW = xᵀ·dout, db = Σ dout."""
    grads = {"w": matmul(cache.x.T, dout), "b": dout.sum(axis=0)}
    return (matmul(dout, cache.w.T) if need_dx else None), grads


class Dense(Layer):
    """Dense(units, activation=None, use_bias=True, ...): out = activation(x·W + b) with W shaped (in, out)
    (`keras.layers.Dense`)."""

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        *,  # Keras has bias_initializer next
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError(f"Dense expects a positive integer number of units; received units={units!r}.")
        self.units = int(units)
        self.activation = get_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = get_initializer(kernel_initializer)
        specs = {"w": kernel_regularizer, "b": bias_regularizer}
        self.regularizers = {k: r for k, spec in specs.items() if (r := regularizers.get(spec)) is not None}

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects (n, features) input; got per-sample shape {tuple(input_shape)}. "
                "Put a Flatten() layer before it."
            )
        return (self.units,)

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        out_shape = super().build(input_shape, rng, dtype)
        backend = get_backend()
        self.params = {
            "w": backend.asarray(self.kernel_initializer((int(input_shape[0]), self.units), rng), dtype=dtype)
        }
        if self.use_bias:
            self.params["b"] = backend.xp.zeros((self.units,), dtype=dtype)
        return out_shape

    def forward(self, x: Array) -> tuple[Array, Any]:
        out, cache = dense_forward(x, self.params["w"], self.params.get("b"))
        return activate(self.activation, out, cache)

    def backward(self, dout: Array, cache: Any, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        dout, cache = deactivate(self.activation, dout, cache)
        dx, grads = dense_backward(dout, cache, need_dx)
        if not self.use_bias:
            del grads["b"]
        return dx, grads

    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "activation": self.activation.name,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.name,
            "kernel_regularizer": regularizers.serialize(self.regularizers.get("w")),
            "bias_regularizer": regularizers.serialize(self.regularizers.get("b")),
        }
