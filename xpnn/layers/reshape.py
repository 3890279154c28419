"""Reshape and ZeroPadding2D: layers that move values without arithmetic (keras.layers.Reshape, ZeroPadding2D)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from xpnn.layers.base import Layer, expect_nhwc
from xpnn.layers.windows import crop_hw, pad_hw
from xpnn.types import Array


class Reshape(Layer):
    """Reshape(target_shape): each sample to `target_shape` (one entry may be -1), row-major like Keras."""

    def __init__(self, target_shape: Sequence[int]) -> None:
        super().__init__()
        if isinstance(target_shape, (int, np.integer)):
            target_shape = (target_shape,)
        shape = tuple(target_shape)
        if not shape or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
            raise TypeError(f"Reshape expects target_shape as a tuple of ints; received target_shape={target_shape!r}.")
        if any(s < 1 and s != -1 for s in shape) or shape.count(-1) > 1:
            raise ValueError(
                "Reshape expects positive sizes and at most one -1 in target_shape; "
                f"received target_shape={target_shape!r}."
            )
        self.target_shape = tuple(int(s) for s in shape)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        size = math.prod(input_shape)
        known = math.prod(s for s in self.target_shape if s != -1)
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(
                    f"Reshape cannot fit per-sample input {tuple(input_shape)} ({size} values) into "
                    f"{self.target_shape}: {size} is not a multiple of {known}."
                )
            return tuple(size // known if s == -1 else s for s in self.target_shape)
        if known != size:
            raise ValueError(
                f"Reshape target_shape {self.target_shape} holds {known} values but each sample has {size} "
                f"(shape {tuple(input_shape)}); the sizes must match (or use -1 for one axis)."
            )
        return self.target_shape

    def forward(self, x: Array) -> tuple[Array, tuple[int, ...]]:
        return x.reshape(x.shape[0], *self.output_shape), x.shape

    def backward(self, dout: Array, cache: tuple[int, ...], need_dx: bool = True) -> tuple[Array | None, dict]:
        return (dout.reshape(cache) if need_dx else None), {}

    def get_config(self) -> dict[str, Any]:
        return {"target_shape": list(self.target_shape)}


def _padding_pairs(padding: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's three spellings: p, (ph, pw), ((top, bottom), (left, right)); all ≥ 0."""
    error = TypeError(
        "ZeroPadding2D expects padding as an int, (rows, cols) or ((top, bottom), (left, right)) of ints ≥ 0; "
        f"received padding={padding!r}."
    )

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(padding):
        pairs = ((padding, padding), (padding, padding))
    elif isinstance(padding, Sequence) and len(padding) == 2 and all(is_int(p) for p in padding):
        pairs = ((padding[0], padding[0]), (padding[1], padding[1]))
    elif (
        isinstance(padding, Sequence)
        and len(padding) == 2
        and all(isinstance(p, Sequence) and len(p) == 2 and all(is_int(v) for v in p) for p in padding)
    ):
        pairs = (tuple(padding[0]), tuple(padding[1]))
    else:
        raise error
    if min(min(p) for p in pairs) < 0:
        raise ValueError(str(error))
    return (int(pairs[0][0]), int(pairs[0][1])), (int(pairs[1][0]), int(pairs[1][1]))


class ZeroPadding2D(Layer):
    """ZeroPadding2D(padding=(1, 1)): zero rows and columns around NHWC images (keras.layers.ZeroPadding2D)."""

    def __init__(self, padding: Any = (1, 1)) -> None:
        super().__init__()
        self.padding = _padding_pairs(padding)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, c = expect_nhwc(input_shape, "ZeroPadding2D")
        (top, bottom), (left, right) = self.padding
        return h + top + bottom, w + left + right, c

    def forward(self, x: Array) -> tuple[Array, None]:
        return pad_hw(x, self.padding), None

    def backward(self, dout: Array, cache: None, need_dx: bool = True) -> tuple[Array | None, dict]:
        return (crop_hw(dout, self.padding) if need_dx else None), {}

    def get_config(self) -> dict[str, Any]:
        return {"padding": [list(p) for p in self.padding]}
