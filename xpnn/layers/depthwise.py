"""Depthwise and separable 2-D convolutions, as tf.nn.depthwise_conv2d and tf.nn.separable_conv2d.

A depthwise conv is a grouped conv with one group per input channel: TF's (fh, fw, cin, depth_multiplier)
kernel, reshaped to (fh, fw, 1, cin·depth_multiplier), puts output channel c·depth_multiplier + m in group c,
which is TF's channel order. A separable conv is that, then a 1×1 VALID conv (the pointwise kernel) and the bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.init import get_initializer
from xpnn.layers.activation_fns import activate, deactivate
from xpnn.layers.conv import ConvBase, ConvCache, conv2d_backward, conv2d_forward, positive_int
from xpnn.types import Array, IntPair, Padding


def depthwise_forward(
    x: Array, w: Array, b: Array | None, strides: tuple[int, int], padding: Padding, dilations: tuple[int, int]
) -> tuple[Array, ConvCache]:
    """(n, h, w, cin) with a (fh, fw, cin, m) kernel -> (n, out_h, out_w, cin·m), tf.nn.depthwise_conv2d."""
    fh, fw, cin, mult = w.shape
    return conv2d_forward(x, w.reshape(fh, fw, 1, cin * mult), b, strides, padding, dilations, groups=cin)


def depthwise_backward(
    dout: Array, cache: ConvCache, kernel_shape: tuple[int, ...], need_dx: bool = True
) -> tuple[Array | None, dict[str, Array]]:
    """dx, dW in the (fh, fw, cin, m) layout, and db, for `depthwise_forward`."""
    dx, grads = conv2d_backward(dout, cache, need_dx)
    grads["w"] = grads["w"].reshape(kernel_shape)
    return dx, grads


class DepthwiseConv2D(ConvBase):
    """DepthwiseConv2D(kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1, ...).

    keras.layers.DepthwiseConv2D: each input channel convolved with its own depth_multiplier filters.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        strides: IntPair = 1,
        padding: Padding | str = "valid",
        depth_multiplier: int = 1,
        *,  # Keras has data_format next
        dilation_rate: IntPair = 1,
        activation: str | None = None,
        use_bias: bool = True,
        depthwise_initializer: str = "glorot_uniform",
        depthwise_regularizer: Any = None,
        bias_regularizer: Any = None,
    ) -> None:
        super().__init__()
        self.depth_multiplier = positive_int(depth_multiplier, "depth_multiplier", "DepthwiseConv2D")
        self._conv_args(kernel_size, strides, padding, dilation_rate, activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = get_initializer(depthwise_initializer)
        self._set_regularizers(w=depthwise_regularizer, b=bias_regularizer)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        out_h, out_w, cin = self._spatial_output(input_shape)
        return out_h, out_w, cin * self.depth_multiplier

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        out_shape = super().build(input_shape, rng, dtype)
        shape = (*self.kernel_size, int(input_shape[2]), self.depth_multiplier)
        self.params = {"w": self._new(shape, self.depthwise_initializer, rng, dtype)}
        if self.use_bias:
            self.params["b"] = get_backend().xp.zeros((out_shape[2],), dtype=dtype)
        return out_shape

    def forward(self, x: Array) -> tuple[Array, Any]:
        p = self.params
        out, cache = depthwise_forward(x, p["w"], p.get("b"), self.strides, self.padding, self.dilation_rate)
        return activate(self.activation, out, cache)

    def backward(self, dout: Array, cache: Any, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        dout, cache = deactivate(self.activation, dout, cache)
        dx, grads = depthwise_backward(dout, cache, self.params["w"].shape, need_dx)
        if not self.use_bias:
            del grads["b"]
        return dx, grads

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "depth_multiplier": self.depth_multiplier,
            "dilation_rate": list(self.dilation_rate),
            "activation": self.activation.name,
            "use_bias": self.use_bias,
            "depthwise_initializer": self.depthwise_initializer.name,
            **self._config_regularizers(depthwise_regularizer="w", bias_regularizer="b"),
        }


@dataclass(frozen=True)
class SeparableCache:
    depthwise: ConvCache
    pointwise: ConvCache


class SeparableConv2D(ConvBase):
    """SeparableConv2D(filters, kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1, ...).

    keras.layers.SeparableConv2D: weights in Keras order depthwise_kernel (fh, fw, cin, m),
    pointwise_kernel (1, 1, cin·m, filters), bias (filters,).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: IntPair,
        strides: IntPair = 1,
        padding: Padding | str = "valid",
        *,  # Keras has data_format next
        dilation_rate: IntPair = 1,
        depth_multiplier: int = 1,
        activation: str | None = None,
        use_bias: bool = True,
        depthwise_initializer: str = "glorot_uniform",
        pointwise_initializer: str = "glorot_uniform",
        depthwise_regularizer: Any = None,
        pointwise_regularizer: Any = None,
        bias_regularizer: Any = None,
    ) -> None:
        super().__init__()
        self.filters = positive_int(filters, "filters", "SeparableConv2D")
        self.depth_multiplier = positive_int(depth_multiplier, "depth_multiplier", "SeparableConv2D")
        self._conv_args(kernel_size, strides, padding, dilation_rate, activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = get_initializer(depthwise_initializer)
        self.pointwise_initializer = get_initializer(pointwise_initializer)
        self._set_regularizers(
            depthwise_kernel=depthwise_regularizer, pointwise_kernel=pointwise_regularizer, b=bias_regularizer
        )

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        out_h, out_w, _ = self._spatial_output(input_shape)
        return out_h, out_w, self.filters

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        out_shape = super().build(input_shape, rng, dtype)
        cin = int(input_shape[2])
        self.params = {
            "depthwise_kernel": self._new(
                (*self.kernel_size, cin, self.depth_multiplier), self.depthwise_initializer, rng, dtype
            ),
            "pointwise_kernel": self._new(
                (1, 1, cin * self.depth_multiplier, self.filters), self.pointwise_initializer, rng, dtype
            ),
        }
        if self.use_bias:
            self.params["b"] = get_backend().xp.zeros((self.filters,), dtype=dtype)
        return out_shape

    def forward(self, x: Array) -> tuple[Array, Any]:
        p = self.params
        mid, dcache = depthwise_forward(x, p["depthwise_kernel"], None, self.strides, self.padding, self.dilation_rate)
        out, pcache = conv2d_forward(mid, p["pointwise_kernel"], p.get("b"), (1, 1), "valid")
        return activate(self.activation, out, SeparableCache(dcache, pcache))

    def backward(self, dout: Array, cache: Any, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        dout, cache = deactivate(self.activation, dout, cache)
        dmid, pgrads = conv2d_backward(dout, cache.pointwise)
        dx, dgrads = depthwise_backward(dmid, cache.depthwise, self.params["depthwise_kernel"].shape, need_dx)
        grads = {"depthwise_kernel": dgrads["w"], "pointwise_kernel": pgrads["w"]}
        if self.use_bias:
            grads["b"] = pgrads["b"]
        return dx, grads

    def get_config(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "depth_multiplier": self.depth_multiplier,
            "dilation_rate": list(self.dilation_rate),
            "activation": self.activation.name,
            "use_bias": self.use_bias,
            "depthwise_initializer": self.depthwise_initializer.name,
            "pointwise_initializer": self.pointwise_initializer.name,
            **self._config_regularizers(
                depthwise_regularizer="depthwise_kernel",
                pointwise_regularizer="pointwise_kernel",
                bias_regularizer="b",
            ),
        }
