"""Flatten NHWC to (n, h·w·c) in row-major order, as keras.layers.Flatten does on NHWC."""

from __future__ import annotations

import math

from xpnn.layers.base import Layer
from xpnn.types import Array


class Flatten(Layer):
    """Flatten(): (n, h, w, c) -> (n, h·w·c), channels fastest, so TF dense weights carry over."""

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)

    def forward(self, x: Array) -> tuple[Array, tuple[int, ...]]:
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dout: Array, cache: tuple[int, ...], need_dx: bool = True) -> tuple[Array | None, dict]:
        return (dout.reshape(cache) if need_dx else None), {}
