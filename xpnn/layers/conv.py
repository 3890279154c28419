"""2-D convolution on NHWC input with (fh, fw, cin/groups, cout) filters, as tf.nn.conv2d + bias_add.

One im2col copy and one GEMM forward (one GEMM per group when grouped); the same columns give dW in
the backward. Dilation spreads a window's taps d apart: SAME pads for the effective kernel (k − 1)·d + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn import regularizers
from xpnn.backends import get_backend
from xpnn.init import get_initializer
from xpnn.layers import conv_chunks
from xpnn.layers.activation_fns import ActivatedCache, activate, deactivate, get_activation, relu_forward
from xpnn.layers.base import Layer, expect_nhwc, positive_pair
from xpnn.layers.padding import normalize_padding, output_size, pads_2d
from xpnn.layers.windows import crop_hw, pad_hw, window_view, windows_add
from xpnn.types import Array, IntPair, Padding

Pair = tuple[int, int]


@dataclass(frozen=True)
class ConvCache:
    cols: Array  # (n·out_h·out_w, fh·fw·cin), or per group (groups, n·out_h·out_w, fh·fw·cin/groups)
    w: Array
    padded_shape: tuple[int, ...]
    pads: tuple[Pair, Pair]
    strides: Pair
    dilations: Pair = (1, 1)
    groups: int = 1


def effective_kernel(kernel_size: Pair, dilations: Pair) -> Pair:
    """The span of a dilated kernel, (k − 1)·d + 1 per axis (what TF pads and fits for)."""
    return (kernel_size[0] - 1) * dilations[0] + 1, (kernel_size[1] - 1) * dilations[1] + 1


def conv_geometry(in_hw: Pair, kernel_size: Pair, strides: Pair, padding: Padding, dilations: Pair = (1, 1)):
    """(pads, out_hw) of a conv, TensorFlow's arithmetic on the dilated kernel."""
    k = effective_kernel(kernel_size, dilations)
    pads = pads_2d(in_hw, k, strides, padding)
    out_hw = (output_size(in_hw[0], k[0], strides[0], padding), output_size(in_hw[1], k[1], strides[1], padding))
    return pads, out_hw


def _group_kernel(w: Array, groups: int) -> Array:
    """(fh, fw, cin_g, cout) -> (groups, fh·fw·cin_g, cout/groups): output channel o belongs to group o // (cout/g)."""
    fh, fw, cin_g, cout = w.shape
    return w.reshape(fh * fw * cin_g, groups, cout // groups).transpose(1, 0, 2)


def conv2d_forward(
    x: Array,
    w: Array,
    b: Array | None,
    strides: Pair,
    padding: Padding,
    dilations: Pair = (1, 1),
    groups: int = 1,
) -> tuple[Array, ConvCache]:
    """(n, h, w, cin) * (fh, fw, cin/groups, cout) -> (n, out_h, out_w, cout), tf.nn.conv2d semantics."""
    n, h, wd, cin = x.shape
    fh, fw, cin_g, cout = w.shape
    pads, (out_h, out_w) = conv_geometry((h, wd), (fh, fw), strides, padding, dilations)
    x_pad = pad_hw(x, pads)
    view = window_view(x_pad, (fh, fw), strides, (out_h, out_w), dilations)
    rows = n * out_h * out_w
    if groups == 1:
        cols = view.reshape(rows, fh * fw * cin)
        out = cols @ w.reshape(fh * fw * cin, cout)
    else:
        cols = view.reshape(rows, fh * fw, groups, cin_g).transpose(2, 0, 1, 3).reshape(groups, rows, fh * fw * cin_g)
        out = (cols @ _group_kernel(w, groups)).transpose(1, 0, 2).reshape(rows, cout)
    if b is not None:
        out += b
    cache = ConvCache(cols, w, x_pad.shape, pads, strides, dilations, groups)
    return out.reshape(n, out_h, out_w, cout), cache


def conv2d_backward(dout: Array, cache: ConvCache, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
    """dx (or None), dW = colsᵀ·dout and db = Σ dout for `conv2d_forward`."""
    n, out_h, out_w, cout = dout.shape
    dout2 = dout.reshape(n * out_h * out_w, cout)  # explicit rows: -1 cannot be inferred when cout is 0
    if cache.groups == 1:
        dw = (cache.cols.T @ dout2).reshape(cache.w.shape)
    else:
        g = cache.groups
        dg = dout2.reshape(-1, g, cout // g).transpose(1, 0, 2)
        dw = (cache.cols.transpose(0, 2, 1) @ dg).transpose(1, 0, 2).reshape(cache.w.shape)
    grads = {"w": dw, "b": dout2.sum(axis=0)}
    if not need_dx:
        return None, grads
    dx = conv2d_input_grad(dout, cache.w, cache.padded_shape, cache.pads, cache.strides, cache.dilations, cache.groups)
    return dx, grads


def conv2d_input_grad(
    dout: Array,
    w: Array,
    padded_shape: tuple[int, ...],
    pads: tuple[Pair, Pair],
    strides: Pair,
    dilations: Pair = (1, 1),
    groups: int = 1,
) -> Array:
    """dx for a conv2d: each output's gradient times the kernel, summed back over its window, then cropped."""
    fh, fw, cin_g, cout = w.shape
    n, out_h, out_w, _ = dout.shape
    rows = n * out_h * out_w
    dout2 = dout.reshape(rows, cout)
    if groups == 1:
        dcols = dout2 @ w.reshape(fh * fw * cin_g, cout).T
    else:
        dg = dout2.reshape(rows, groups, cout // groups).transpose(1, 0, 2)
        dcols = (dg @ _group_kernel(w, groups).transpose(0, 2, 1)).reshape(groups, rows, fh * fw, cin_g)
        dcols = dcols.transpose(1, 2, 0, 3)
    patches = dcols.reshape(n, out_h, out_w, fh, fw, cin_g * groups)
    return crop_hw(windows_add(patches, padded_shape, strides, dilations), pads)


def positive_int(value: Any, what: str, layer: str) -> int:
    """An int ≥ 1, with a Keras-style error otherwise."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer} expects a positive integer {what}; received {what}={value!r}.")
    return int(value)


class ConvBase(Layer):
    """What Conv2D, DepthwiseConv2D and SeparableConv2D share: window geometry, activation, regularizers."""

    def _conv_args(self, kernel_size, strides, padding, dilation_rate, activation) -> None:
        layer = self.name
        self.kernel_size = positive_pair(kernel_size, "kernel_size", layer)
        self.strides = positive_pair(strides, "strides", layer)
        self.padding = normalize_padding(padding)
        self.dilation_rate = positive_pair(dilation_rate, "dilation_rate", layer)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{layer}: strides > 1 is not supported together with dilation_rate > 1 (as in TensorFlow); "
                f"received strides={self.strides} and dilation_rate={self.dilation_rate}. Use one of them."
            )
        self.activation = get_activation(activation)

    def _spatial_output(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        h, w, c = expect_nhwc(input_shape, self.name)
        k = effective_kernel(self.kernel_size, self.dilation_rate)
        if self.padding == "valid" and (k[0] > h or k[1] > w):
            raise ValueError(
                f"{self.name} kernel {self.kernel_size} (dilated span {k}) is bigger than its VALID input {h}x{w}; "
                "use padding='same' or a smaller kernel_size/dilation_rate."
            )
        _, (out_h, out_w) = conv_geometry((h, w), self.kernel_size, self.strides, self.padding, self.dilation_rate)
        return out_h, out_w, c

    def _set_regularizers(self, **by_key: Any) -> None:
        self.regularizers = {k: r for k, spec in by_key.items() if (r := regularizers.get(spec)) is not None}

    def _config_regularizers(self, **names: str) -> dict[str, Any]:
        """{argument name: serialised regularizer} for `names` = {argument: param key}."""
        return {arg: regularizers.serialize(self.regularizers.get(key)) for arg, key in names.items()}

    def _new(self, shape: tuple[int, ...], init, rng: np.random.Generator, dtype: np.dtype) -> Array:
        return get_backend().asarray(init(shape, rng), dtype=dtype)


class Conv2D(ConvBase):
    """Conv2D(filters, kernel_size, strides=1, padding="valid", dilation_rate=1, groups=1, activation=None, ...).

    keras.layers.Conv2D's arguments and defaults (NHWC only); the kernel is (fh, fw, cin/groups, filters).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: IntPair,
        strides: IntPair = 1,
        padding: Padding | str = "valid",
        *,  # Keras has data_format next: the rest by keyword, so a Keras-positional call cannot misbind
        dilation_rate: IntPair = 1,
        groups: int = 1,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters < 1:
            raise ValueError(f"Conv2D expects a positive integer number of filters; received filters={filters!r}.")
        self.filters = int(filters)
        self.groups = positive_int(groups, "groups", "Conv2D")
        if self.filters % self.groups:
            raise ValueError(
                f"Conv2D: filters must be divisible by groups; received filters={self.filters}, groups={self.groups}."
            )
        self._conv_args(kernel_size, strides, padding, dilation_rate, activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = get_initializer(kernel_initializer)
        self._set_regularizers(w=kernel_regularizer, b=bias_regularizer)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        out_h, out_w, cin = self._spatial_output(input_shape)
        if cin % self.groups:
            raise ValueError(
                f"Conv2D: the input's {cin} channels must be divisible by groups={self.groups}; "
                "change groups or the channels of the layer before."
            )
        return out_h, out_w, self.filters

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        out_shape = super().build(input_shape, rng, dtype)
        shape = (*self.kernel_size, int(input_shape[2]) // self.groups, self.filters)
        self.params = {"w": self._new(shape, self.kernel_initializer, rng, dtype)}
        if self.use_bias:
            self.params["b"] = get_backend().xp.zeros((self.filters,), dtype=dtype)
        return out_shape

    def _chunked_relu(self) -> bool:
        """Whether activation="relu" runs in conv_chunks' epilogue (and its gradient in its backward chunks)."""
        return self.activation.fwd is relu_forward and not self.activation.kwargs

    def forward(self, x: Array) -> tuple[Array, Any]:
        p = self.params
        if conv_chunks.takes(self, x):  # the CPU: chunks of images on every worker (conv_chunks.py)
            relu = self._chunked_relu()  # max(·, 0) on each chunk as it is computed: relu_forward's bits
            out, cache = conv_chunks.conv2d_forward_chunked(
                self, x, p["w"], p.get("b"), self.strides, self.padding, relu=relu
            )
            if relu:
                return out, ActivatedCache(cache, out)  # what activate() keeps for a ReLU
        else:
            out, cache = conv2d_forward(
                x, p["w"], p.get("b"), self.strides, self.padding, self.dilation_rate, self.groups
            )
        return activate(self.activation, out, cache)

    def backward(self, dout: Array, cache: Any, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        chunked_relu = isinstance(cache, ActivatedCache) and isinstance(cache.inner, conv_chunks.ChunkedConvCache)
        if chunked_relu and self._chunked_relu():  # relu_backward's formula on each chunk, then its conv backward
            dx, grads = conv_chunks.conv2d_backward_chunked(self, dout, cache.inner, need_dx, relu_out=cache.act)
            if not self.use_bias:
                del grads["b"]
            return dx, grads
        dout, cache = deactivate(self.activation, dout, cache)
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
            "dilation_rate": list(self.dilation_rate),
            "groups": self.groups,
            "activation": self.activation.name,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.name,
            **self._config_regularizers(kernel_regularizer="w", bias_regularizer="b"),
        }
