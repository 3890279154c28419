"""2-D convolution on NHWC input with (fh, fw, cin, cout) filters, as tf.nn.conv2d + bias_add.

One im2col copy and one GEMM forward; the same columns give dW in one GEMM backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.init import get_initializer
from xpnn.layers import conv_chunks
from xpnn.layers.base import Layer, expect_nhwc, positive_pair
from xpnn.layers.padding import normalize_padding, output_size, pads_2d
from xpnn.layers.windows import crop_hw, pad_hw, window_view, windows_add
from xpnn.types import Array, IntPair, Padding


@dataclass(frozen=True)
class ConvCache:
    cols: Array  # (n * out_h * out_w, fh * fw * cin)
    w: Array
    padded_shape: tuple[int, ...]
    pads: tuple[tuple[int, int], tuple[int, int]]
    strides: tuple[int, int]


def conv2d_forward(
    x: Array, w: Array, b: Array | None, strides: tuple[int, int], padding: Padding
) -> tuple[Array, ConvCache]:
    """(n, h, w, cin) * (fh, fw, cin, cout) -> (n, out_h, out_w, cout), tf.nn.conv2d semantics."""
    n, h, wd, cin = x.shape
    fh, fw, _, cout = w.shape
    pads = pads_2d((h, wd), (fh, fw), strides, padding)
    out_hw = (output_size(h, fh, strides[0], padding), output_size(wd, fw, strides[1], padding))
    x_pad = pad_hw(x, pads)
    cols = window_view(x_pad, (fh, fw), strides, out_hw).reshape(n * out_hw[0] * out_hw[1], fh * fw * cin)
    out = cols @ w.reshape(fh * fw * cin, cout)
    if b is not None:
        out += b
    return out.reshape(n, out_hw[0], out_hw[1], cout), ConvCache(cols, w, x_pad.shape, pads, strides)


def conv2d_backward(dout: Array, cache: ConvCache, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
    """dx (or None), dW = colsᵀ·dout and db = Σ dout for `conv2d_forward`."""
    fh, fw, cin, cout = cache.w.shape
    dout2 = dout.reshape(-1, cout)
    grads = {"w": (cache.cols.T @ dout2).reshape(cache.w.shape), "b": dout2.sum(axis=0)}
    if not need_dx:
        return None, grads
    return conv2d_input_grad(dout, cache.w, cache.padded_shape, cache.pads, cache.strides), grads


def conv2d_input_grad(
    dout: Array,
    w: Array,
    padded_shape: tuple[int, ...],
    pads: tuple[tuple[int, int], tuple[int, int]],
    strides: tuple[int, int],
) -> Array:
    """dx for a conv2d: each output's gradient times the kernel, summed back over its window, then cropped."""
    fh, fw, cin, cout = w.shape
    n, out_h, out_w, _ = dout.shape
    dcols = (dout.reshape(-1, cout) @ w.reshape(fh * fw * cin, cout).T).reshape(n, out_h, out_w, fh, fw, cin)
    return crop_hw(windows_add(dcols, padded_shape, strides), pads)


class Conv2D(Layer):
    """Conv2D(filters, kernel_size, strides=1, padding="valid"), like keras.layers.Conv2D (no activation)."""

    def __init__(
        self,
        filters: int,
        kernel_size: IntPair,
        strides: IntPair = 1,
        padding: Padding | str = "valid",
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
    ) -> None:
        super().__init__()
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters < 1:
            raise ValueError(f"Conv2D expects a positive integer number of filters; received filters={filters!r}.")
        self.filters = int(filters)
        self.kernel_size = positive_pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = positive_pair(strides, "strides", "Conv2D")
        self.padding = normalize_padding(padding)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = get_initializer(kernel_initializer)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, _ = expect_nhwc(input_shape, "Conv2D")
        (fh, fw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "valid" and (fh > h or fw > w):
            raise ValueError(
                f"Conv2D kernel {self.kernel_size} is bigger than its VALID input {h}x{w}; "
                "use padding='same' or a smaller kernel_size."
            )
        return output_size(h, fh, sh, self.padding), output_size(w, fw, sw, self.padding), self.filters

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        out_shape = super().build(input_shape, rng, dtype)
        backend = get_backend()
        shape = (*self.kernel_size, int(input_shape[2]), self.filters)
        self.params = {"w": backend.asarray(self.kernel_initializer(shape, rng), dtype=dtype)}
        if self.use_bias:
            self.params["b"] = backend.xp.zeros((self.filters,), dtype=dtype)
        return out_shape

    def forward(self, x: Array) -> tuple[Array, ConvCache | conv_chunks.ChunkedConvCache]:
        if conv_chunks.takes(self, x):  # the CPU: chunks of images on every worker (conv_chunks.py)
            return conv_chunks.conv2d_forward_chunked(
                self, x, self.params["w"], self.params.get("b"), self.strides, self.padding
            )
        return conv2d_forward(x, self.params["w"], self.params.get("b"), self.strides, self.padding)

    def backward(
        self, dout: Array, cache: ConvCache | conv_chunks.ChunkedConvCache, need_dx: bool = True
    ) -> tuple[Array | None, dict[str, Array]]:
        if isinstance(cache, conv_chunks.ChunkedConvCache):
            dx, grads = conv_chunks.conv2d_backward_chunked(self, dout, cache, need_dx)
        else:
            dx, grads = conv2d_backward(dout, cache, need_dx)
        if not self.use_bias:
            del grads["b"]
        return dx, grads

    def get_config(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.name,
        }
