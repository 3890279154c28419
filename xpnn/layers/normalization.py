"""Batch normalization, as keras.layers.BatchNormalization on TensorFlow (tf.nn.moments + tf.nn.batch_normalization).

Training normalises with the batch's mean and biased variance over every axis but `axis`, and moves
the running statistics in the forward: moving = moving·momentum + batch·(1 − momentum) (Keras 3's update,
with the biased variance). Inference normalises with the moving statistics. Either way the output is
TF's x·inv + (beta − mean·inv) with inv = gamma / sqrt(var + epsilon); the backward is the exact gradient
of the forward that ran (through the batch statistics in training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.layers.base import Layer
from xpnn.types import Array


@dataclass(frozen=True)
class BatchNormCache:
    xhat: Array  # (x − mean) / sqrt(var + epsilon), the input's shape
    rstd: Array  # 1 / sqrt(var + epsilon), broadcastable to the input
    axes: tuple[int, ...]  # the reduced axes
    training: bool  # whether mean and var were the batch's (their gradient then flows too)


def batchnorm_forward(
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    mean: Array,
    var: Array,
    epsilon: float,
    axes: tuple[int, ...],
    training: bool,
) -> tuple[Array, BatchNormCache]:
    """tf.nn.batch_normalization with broadcastable `mean`, `var`, `gamma`, `beta` (None: not used)."""
    xp = get_backend().xp
    rstd = 1.0 / xp.sqrt(var + epsilon)
    inv = rstd if gamma is None else rstd * gamma
    shift = -mean * inv if beta is None else beta - mean * inv
    out = x * inv + shift
    return out, BatchNormCache((x - mean) * rstd, rstd, axes, training)


def batchnorm_backward(dout: Array, cache: BatchNormCache, gamma: Array | None) -> tuple[Array, Array, Array]:
    """(dx, dgamma, dbeta); in training dx = gamma·rstd·(dout − mean(dout) − xhat·mean(dout·xhat))."""
    dbeta = dout.sum(axis=cache.axes, keepdims=True)
    dgamma = (dout * cache.xhat).sum(axis=cache.axes, keepdims=True)
    scale = cache.rstd if gamma is None else cache.rstd * gamma
    if not cache.training:
        return dout * scale, dgamma, dbeta
    count = dout.size // dbeta.size
    return scale * (dout - dbeta / count - cache.xhat * (dgamma / count)), dgamma, dbeta


class BatchNormalization(Layer):
    """BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True), as Keras's.

    Weights in Keras order: gamma (if scale), beta (if center), then the non-trainable moving_mean,
    moving_variance. After Dense it normalises each unit over the batch; after Conv2D each channel
    over (n, h, w).
    """

    takes_training = True

    def __init__(
        self, axis: int = -1, momentum: float = 0.99, epsilon: float = 0.001, center: bool = True, scale: bool = True
    ) -> None:
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization expects axis as one int (the feature axis); received axis={axis!r}.")
        for name, value in (("momentum", momentum), ("epsilon", epsilon)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"BatchNormalization expects a finite float {name}; received {name}={value!r}.")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNormalization expects momentum in [0, 1]; received momentum={momentum!r}.")
        if epsilon <= 0:
            raise ValueError(f"BatchNormalization expects epsilon > 0; received epsilon={epsilon!r}.")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self._axes: tuple[int, ...] = ()
        self._bshape: tuple[int, ...] = ()

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        ndim = len(input_shape) + 1
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 1 <= axis < ndim:
            raise ValueError(
                f"BatchNormalization axis={self.axis} is not a feature axis of per-sample input {tuple(input_shape)}; "
                "use -1 (channels last) or another axis but the batch axis 0."
            )
        self._axes = tuple(a for a in range(ndim) if a != axis)
        self._bshape = tuple(int(input_shape[axis - 1]) if a == axis else 1 for a in range(ndim))
        return input_shape

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        out_shape = super().build(input_shape, rng, dtype)
        xp = get_backend().xp
        features = (int(np.prod(self._bshape)),)
        self.params = {}
        if self.scale:
            self.params["gamma"] = xp.ones(features, dtype=dtype)
        if self.center:
            self.params["beta"] = xp.zeros(features, dtype=dtype)
        self.non_trainable = {
            "moving_mean": xp.zeros(features, dtype=dtype),
            "moving_variance": xp.ones(features, dtype=dtype),
        }
        return out_shape

    def _b(self, key: str) -> Array | None:
        """A weight reshaped to broadcast against the input (None when disabled)."""
        w = self.weights.get(key)
        return None if w is None else w.reshape(self._bshape)

    def forward(self, x: Array, training: bool = False) -> tuple[Array, BatchNormCache]:
        if training:
            mean = x.mean(axis=self._axes, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=self._axes, keepdims=True)  # biased, as tf.nn.moments
            m = self.momentum
            stats = self.non_trainable
            stats["moving_mean"] = stats["moving_mean"] * m + mean.reshape(-1) * (1.0 - m)
            stats["moving_variance"] = stats["moving_variance"] * m + var.reshape(-1) * (1.0 - m)
        else:
            mean, var = self._b("moving_mean"), self._b("moving_variance")
        return batchnorm_forward(x, self._b("gamma"), self._b("beta"), mean, var, self.epsilon, self._axes, training)

    def backward(self, dout: Array, cache: BatchNormCache, need_dx: bool = True) -> tuple[Array | None, dict]:
        dx, dgamma, dbeta = batchnorm_backward(dout, cache, self._b("gamma"))
        grads = {}
        if self.scale:
            grads["gamma"] = dgamma.reshape(-1)
        if self.center:
            grads["beta"] = dbeta.reshape(-1)
        return (dx if need_dx else None), grads

    def get_config(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
