"""Execution plans: run Conv2D → ReLU → MaxPool2D as one unit when the pool windows tile the conv output.

The fused unit computes what the three layers compute, in less memory and time:
- forward: im2col + GEMM over chunks of images in a reused buffer (the columns are never kept),
  then the max and first arg-max of each window; the bias and the ReLU run on the pooled values,
  since max(a + b) = max(a) + b and max(relu(a)) = relu(max(a)) exactly, and where the pooled
  value is positive the ReLU'd max picks the same cell;
- backward: only each window's winner gets a gradient, so dW gathers one input patch per
  (window, channel) instead of a GEMM over every pixel, and db sums the pooled gradient.
A plan for `record` runs every layer on its own, so per-layer outputs and gradients stay available.
"""

from __future__ import annotations

from dataclasses import dataclass

from xpnn.backends import get_backend
from xpnn.layers.activations import ReLU
from xpnn.layers.base import Layer
from xpnn.layers.conv import Conv2D, conv2d_input_grad
from xpnn.layers.padding import output_size, pads_2d
from xpnn.layers.pool import MaxPool2D
from xpnn.layers.windows import pad_hw, window_view
from xpnn.types import Array

CHUNK_BYTES = 9 << 18  # CPU: im2col rows per GEMM, small enough to stay in cache (2.25 MB)
GPU_CHUNK_BYTES = 1 << 30  # CuPy: few, large GEMMs (each chunk costs ~8 kernel launches)


def grouped_windows(
    x_pad: Array, k_hw: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int], group: int
) -> Array:
    """A (n, out_h, out_w/group, fh, span, cin) view: one window per `group` horizontally adjacent outputs.

    `k_hw` is (fh, span) with span = (group − 1)·stride_w + fw. Each row of the im2col copy then holds
    runs of span·cin values instead of fw·cin, and there are `group` times fewer rows: less copying and a
    wider, better-shaped GEMM against `grouped_kernel`.
    """
    xp = get_backend().xp
    sn, sh, sw, sc = x_pad.strides
    shape = (x_pad.shape[0], out_hw[0], out_hw[1] // group, k_hw[0], k_hw[1], x_pad.shape[3])
    return xp.lib.stride_tricks.as_strided(x_pad, shape, (sn, sh * strides[0], sw * strides[1] * group, sh, sw, sc))


def grouped_kernel(w: Array, group: int, stride_w: int) -> Array:
    """The (fh·span·cin, group·cout) matrix that maps a `grouped_windows` row to `group` adjacent outputs.

    Output p of the group sees the kernel shifted by p·stride_w columns; the other cells are zeros, which
    add exact zeros to every sum.
    """
    xp = get_backend().xp
    fh, fw, cin, cout = w.shape
    span = (group - 1) * stride_w + fw
    wide = xp.zeros((fh, span, cin, group, cout), dtype=w.dtype)
    for p in range(group):
        wide[:, p * stride_w : p * stride_w + fw, :, p, :] = w
    return wide.reshape(fh * span * cin, group * cout)


class Single:
    """One layer as a plan unit: its backward returns a one-element list of gradient dicts."""

    def __init__(self, layer: Layer) -> None:
        self.layers = (layer,)

    def forward(self, x: Array):
        return self.layers[0].forward(x)

    def backward(self, dout: Array, cache, need_dx: bool = True):
        dx, grads = self.layers[0].backward(dout, cache, need_dx)
        return dx, [grads]


@dataclass(frozen=True)
class ConvReluPoolCache:
    x_pad: Array  # (n, in_h + pads, in_w + pads, cin), the conv's padded input
    pads: tuple[tuple[int, int], tuple[int, int]]
    pooled: Array  # (n, out_h, out_w, cout): window maxima of conv + bias, before the ReLU
    argmax: Array  # (n, out_h, out_w, cout): winner's row-major index in its window
    conv_hw: tuple[int, int]  # conv output size, a whole number of pool windows


class ConvReluPool:
    """Conv2D → ReLU → MaxPool2D(pool_size == strides, no pool padding) as one unit; see the module docstring."""

    def __init__(self, conv: Conv2D, relu: ReLU, pool: MaxPool2D) -> None:
        self.layers = (conv, relu, pool)

    @staticmethod
    def applies(conv: Layer, relu: Layer, pool: Layer) -> bool:
        """Whether the three layers match the pattern and the pool windows tile the conv output exactly."""
        if type(conv) is not Conv2D or type(relu) is not ReLU or type(pool) is not MaxPool2D:
            return False
        if pool.pool_size != pool.strides or conv.output_shape is None:
            return False
        h, w, _ = conv.output_shape
        pads = pads_2d((h, w), pool.pool_size, pool.strides, pool.padding)
        out_h = output_size(h, pool.pool_size[0], pool.strides[0], pool.padding)
        out_w = output_size(w, pool.pool_size[1], pool.strides[1], pool.padding)
        return pads == ((0, 0), (0, 0)) and out_h * pool.pool_size[0] == h and out_w * pool.pool_size[1] == w

    def _buffer(self, shape: tuple[int, ...], dtype) -> Array:
        """The conv layer's (M, K) im2col buffer, kept between calls (fresh pages cost more than the copy)."""
        conv = self.layers[0]
        buf = getattr(conv, "_cols_buffer", None)
        if buf is None or buf.shape != shape or buf.dtype != dtype or not get_backend().is_array(buf):
            buf = conv._cols_buffer = get_backend().xp.empty(shape, dtype=dtype)
        return buf

    def forward(self, x: Array) -> tuple[Array, ConvReluPoolCache]:
        xp = get_backend().xp
        conv, _, pool = self.layers
        w, b = conv.params["w"], conv.params.get("b")
        n, h, wd, cin = x.shape
        fh, fw, _, cout = w.shape
        ph, pw = pool.pool_size
        conv_hw = (
            output_size(h, fh, conv.strides[0], conv.padding),
            output_size(wd, fw, conv.strides[1], conv.padding),
        )
        out_h, out_w = conv_hw[0] // ph, conv_hw[1] // pw
        pads = pads_2d((h, wd), (fh, fw), conv.strides, conv.padding)
        x_pad = pad_hw(x, pads)  # NHWC, kept for the backward's patch gather
        # up to 8 outputs per row while the GEMM stays narrow (group·cout ≤ 64): wider ones waste more
        # multiplications on the zeros of the shifted kernel than the shorter copy saves
        group = next(g for g in (8, 4, 2, 1) if conv_hw[1] % g == 0 and (g * cout <= 64 or g == 1))
        span = (group - 1) * conv.strides[1] + fw
        k = fh * span * cin
        rows_per_image = conv_hw[0] * conv_hw[1] // group
        budget = CHUNK_BYTES if get_backend().name == "numpy" else GPU_CHUNK_BYTES
        chunk = max(1, min(n, budget // (rows_per_image * k * x.dtype.itemsize)))
        cols_buf = self._buffer((chunk * rows_per_image, k), x.dtype)
        windows = grouped_windows(x_pad, (fh, span), conv.strides, conv_hw, group)
        w_group = grouped_kernel(w, group, conv.strides[1])
        pooled = xp.empty((n, out_h, out_w, cout), dtype=x.dtype)
        argmax = xp.empty((n, out_h, out_w, cout), dtype=xp.intp)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            cols = cols_buf[: (stop - start) * rows_per_image]
            xp.copyto(cols.reshape(stop - start, conv_hw[0], conv_hw[1] // group, fh, span, cin), windows[start:stop])
            out = cols @ w_group  # (images · conv_h · conv_w/group, group · cout) = NHWC conv output
            # (n, out_h, ph, out_w, pw, c) -> (n, out_h, out_w, c, ph*pw): each window's cells in row-major order
            win = out.reshape(stop - start, out_h, ph, out_w, pw, cout).transpose(0, 1, 3, 5, 2, 4)
            win = win.reshape(stop - start, out_h, out_w, cout, ph * pw)
            arg = win.argmax(axis=4)
            argmax[start:stop] = arg
            pooled[start:stop] = xp.take_along_axis(win, arg[..., None], axis=4)[..., 0]
        if b is not None:  # max(a + b) = max(a) + b exactly (rounding is monotonic), on 1/(ph·pw) of the values
            pooled += b
        return xp.maximum(pooled, 0.0), ConvReluPoolCache(x_pad, pads, pooled, argmax, conv_hw)

    def backward(self, dout: Array, cache: ConvReluPoolCache, need_dx: bool = True):
        xp = get_backend().xp
        conv, _, pool = self.layers
        w = conv.params["w"]
        fh, fw, cin, cout = w.shape
        ph, pw = pool.pool_size
        n, out_h, out_w, _ = dout.shape
        g = get_backend().kernels.relu_grad(dout, cache.pooled)  # ReLU's gradient: pooled > 0 ⟺ relu output > 0
        # the winning conv-output pixel of each (image, window, channel)
        rows = xp.arange(out_h).reshape(1, out_h, 1, 1) * ph + cache.argmax // pw
        cols = xp.arange(out_w).reshape(1, 1, out_w, 1) * pw + cache.argmax % pw
        images = xp.arange(n).reshape(n, 1, 1, 1)
        windows = window_view(cache.x_pad, (fh, fw), conv.strides, cache.conv_hw)
        patches = windows[images, rows, cols]  # (n, out_h, out_w, cout, fh, fw, cin)
        m = n * out_h * out_w
        dw = xp.einsum("mck,mc->kc", patches.reshape(m, cout, fh * fw * cin), g.reshape(m, cout))
        grads = {"w": dw.reshape(w.shape)}
        if conv.use_bias:
            grads["b"] = g.reshape(m, cout).sum(axis=0)
        dx = None
        if need_dx:
            dconv = xp.zeros((n, *cache.conv_hw, cout), dtype=dout.dtype)
            channels = xp.arange(cout).reshape(1, 1, 1, cout)
            dconv[images, rows, cols, channels] = g
            dx = conv2d_input_grad(dconv, w, cache.x_pad.shape, cache.pads, conv.strides)
        return dx, [grads, {}, {}]


def plan(layers: list[Layer], fuse: bool = True) -> list:
    """The units that run `layers` in order: fused Conv2D → ReLU → MaxPool2D triples where they apply."""
    units, i = [], 0
    while i < len(layers):
        if fuse and i + 2 < len(layers) and ConvReluPool.applies(*layers[i : i + 3]):
            units.append(ConvReluPool(*layers[i : i + 3]))
            i += 3
        else:
            units.append(Single(layers[i]))
            i += 1
    return units
