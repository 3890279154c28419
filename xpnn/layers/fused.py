"""Execution plans: run Conv2D → ReLU → MaxPool2D as one unit when the pool windows tile the conv output.

The fused unit computes what the three layers compute, in less memory and time:
- forward: im2col + GEMM over chunks of images in a reused buffer (the columns are never kept),
  then the max and first arg-max of each window; the bias and the ReLU run on the pooled values,
  since max(a + b) = max(a) + b and max(relu(a)) = relu(max(a)) exactly, and where the pooled
  value is positive the ReLU'd max picks the same cell;
- backward: only each window's winner gets a gradient, so dW gathers one input patch per
  (window, channel) instead of a GEMM over every pixel, and db sums the pooled gradient.
On the NumPy backend the same steps run in native loops where `xpnn.backends.native` was built
(`_native_forward`, `_native_backward`): each window's conv outputs are summed in registers and
reduced to their max on the spot, never written out. The im2col + GEMM path is their twin, and the
one CuPy runs.
A plan for `record` runs every layer on its own, so per-layer outputs and gradients stay available.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from xpnn.backends import get_backend, native
from xpnn.cpu_threads import cpu_workers, map_chunks
from xpnn.layers import conv_chunks
from xpnn.layers.activations import ReLU
from xpnn.layers.base import Layer
from xpnn.layers.conv import Conv2D, conv2d_input_grad
from xpnn.layers.dense import Dense, dense_forward
from xpnn.layers.fused_norm import BatchNormRelu, ConvBatchNormRelu
from xpnn.layers.padding import output_size, pads_2d
from xpnn.layers.pool import AvgPool2D, MaxPool2D, pool_into, pool_values
from xpnn.layers.windows import window_view
from xpnn.types import Array

CHUNK_BYTES = 9 << 18  # CPU: im2col rows per GEMM, small enough to stay in cache (2.25 MB)
CHUNK_IMAGES = 16  # CPU: at most this many images per chunk, so small layers still feed every worker
GPU_CHUNK_BYTES = 1 << 30  # CuPy: few, large GEMMs (each chunk costs ~8 kernel launches); bounds all its buffers
# native.c: a worker thread only for every 2M multiply-adds; waking one costs ~0.15 ms, so the reference net's
# second unit (2M) at batch 64 runs on the calling thread alone. (It was 8M, tuned on the reference net's fast
# kernel; LeNet-5's first unit, cin 1 and cout 6, does far fewer multiply-adds per ms: interleaved A/B of both
# nets' two units forward + backward, busy machine: LeNet 8.36 -> 7.09 ms at batch 256, 2.17 -> 1.98 at 64;
# reference 6.87 -> 5.98 at 256, 1.62 -> 1.62 at 64.)
PARALLEL_MACS = 2 << 20
# Inference splits the unit into conv_chunks' implicit conv (bias and ReLU in its epilogue) and the pool layer for
# convs of at least this many multiply-adds per output (fh·fw·cin). Per unit, batch 128, split vs fused:
# VGG-style 3x3 on 32 and 64 channels (288, 576) 10.2 vs 17.5 and 10.3 vs 13.5 ms; LeNet-5's 5x5 on 1 and
# 6 channels (25, 150) 3.34 vs 0.87 and 1.24 vs 0.82 ms (the unit's kernel wins where the windows are short)
INFERENCE_SPLIT_MACS = 256
# The NumPy backward of pools of at most this many cells runs dense GEMMs over every conv output (conv_chunks)
# instead of gathering one input patch per window and channel: VGG-style 32-channel conv + 2x2 pool unit,
# batch 64, backward 63.8 ms gathering (see docs/benchmarks.md)
DENSE_BACKWARD_CELLS = 4


def native_workers(macs: int) -> int:
    """Worker threads for a native call of `macs` multiply-adds: as many as pay for their start-up."""
    return max(1, min(cpu_workers(), macs // PARALLEL_MACS))


def chunking(n: int, bytes_per_image: int, cpu_budget: int, gpu_bytes_per_image: int) -> tuple[int, int]:
    """(images per chunk, worker threads) for a batch of n: cache-sized chunks on the CPU, few large ones on CuPy.

    On the CPU `bytes_per_image` (the im2col rows) must fit the cache budget; on CuPy `gpu_bytes_per_image`,
    every buffer a chunk holds at once, must fit GPU_CHUNK_BYTES (one image per chunk at least).
    """
    if get_backend().name != "numpy":
        return max(1, min(n, GPU_CHUNK_BYTES // gpu_bytes_per_image)), 1
    return max(1, min(n, CHUNK_IMAGES, cpu_budget // bytes_per_image)), cpu_workers()


def grouped_runs(
    x_pad: Array, conv: Conv2D, pool_hw: tuple[int, int], out_hw: tuple[int, int], block: tuple[int, int]
) -> Array:
    """A (n, out_h, out_w, ph/bh, pw/bw, rows, span·cin) view: the im2col rows of bh×bw blocks of conv outputs.

    Rows come window by window (pool cell (i, j), then its blocks in row-major order), so each pool
    window's conv outputs land in adjacent GEMM rows. One row is the (bh − 1)·stride_h + fh input rows
    under a block, each a run of span·cin contiguous values, span = (bw − 1)·stride_w + fw: bh·bw times
    fewer rows than plain im2col, each a wider, better-shaped GEMM row against `grouped_kernel`, with
    runs long enough to copy as whole items.
    `x_pad` must be C-contiguous; its strides are computed from its shape, because a size-1 axis may carry
    any stride in a contiguous array (CuPy's `x[..., None]` has a channel stride of 0 and passes
    `ascontiguousarray` unchanged).
    """
    xp = get_backend().xp
    _, h, w, cin = x_pad.shape
    sc = x_pad.dtype.itemsize
    sw, sh, sn = cin * sc, w * cin * sc, h * w * cin * sc
    (st_h, st_w), (fh, fw), (ph, pw), (bh, bw) = conv.strides, conv.kernel_size, pool_hw, block
    rows, span = (bh - 1) * st_h + fh, (bw - 1) * st_w + fw
    shape = (x_pad.shape[0], *out_hw, ph // bh, pw // bw, rows, span * cin)
    strides = (sn, sh * st_h * ph, sw * st_w * pw, sh * st_h * bh, sw * st_w * bw, sh, sc)
    return xp.lib.stride_tricks.as_strided(x_pad, shape, strides)


def grouped_kernel(w: Array, block: tuple[int, int], strides: tuple[int, int]) -> Array:
    """The (rows·span·cin, cout·bh·bw) matrix that maps a `grouped_runs` row to its bh×bw block of outputs.

    Column (c, a, b) is channel c of the block's output (a, b), which sees the kernel shifted by
    (a·stride_h, b·stride_w); the other cells are zeros, which add exact zeros to every sum.
    """
    xp = get_backend().xp
    fh, fw, cin, cout = w.shape
    (bh, bw), (st_h, st_w) = block, strides
    rows, span = (bh - 1) * st_h + fh, (bw - 1) * st_w + fw
    wide = xp.zeros((rows, span, cin, cout, bh, bw), dtype=w.dtype)
    for a in range(bh):
        for b in range(bw):
            wide[a * st_h : a * st_h + fh, b * st_w : b * st_w + fw, :, :, a, b] = w
    return wide.reshape(rows * span * cin, cout * bh * bw)


def output_block(pool_hw: tuple[int, int], cout: int) -> tuple[int, int]:
    """Conv outputs per GEMM row: one row of up to 4 that divides the pool width, while 4·cout ≤ 64.

    Measured on the reference net (benchmarks/bench_cpu.py, 2 cores): 1×4 beat 1×8, 2×4, 2×2 and 4×2 for
    the 8-channel conv (fewer multiplications by the shifted kernel's zeros than 1×8, longer runs than 2×2);
    1×2 beat 1×1 and 2×2 for 32 channels, 1×1 was best for 64.
    """
    return 1, next(g for g in (4, 2, 1) if pool_hw[1] % g == 0 and (g * cout <= 64 or g == 1))


class Single:
    """One layer as a plan unit: its backward returns a one-element list of gradient dicts."""

    def __init__(self, layer: Layer) -> None:
        self.layers = (layer,)

    def forward(self, x: Array, training: bool = False):
        layer = self.layers[0]
        return layer.forward(x, training=training) if layer.takes_training else layer.forward(x)

    def backward(self, dout: Array, cache, need_dx: bool = True):
        dx, grads = self.layers[0].backward(dout, cache, need_dx)
        return dx, [grads]


@dataclass(frozen=True)
class ConvReluPoolCache:
    x: Array  # (n, in_h, in_w, cin), the conv's input (padded again chunk by chunk in the backward)
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
        """Whether the three layers match the pattern and the pool windows tile the conv output exactly.

        Declines (the layers then run one by one) for anything but a plain conv: a dilated or grouped
        Conv2D, one with its own `activation=`, a subclass (DepthwiseConv2D, SeparableConv2D, custom
        layers), any layer between conv and pool (BatchNormalization, Dropout), or pool windows that
        overlap, skip or pad the conv output.
        """
        if type(conv) is not Conv2D or type(relu) is not ReLU or type(pool) is not MaxPool2D:
            return False
        if conv.dilation_rate != (1, 1) or conv.groups != 1 or not conv.activation.is_linear:
            return False
        if pool.pool_size != pool.strides or conv.output_shape is None:
            return False
        h, w, _ = conv.output_shape
        pads = pads_2d((h, w), pool.pool_size, pool.strides, pool.padding)
        out_h = output_size(h, pool.pool_size[0], pool.strides[0], pool.padding)
        out_w = output_size(w, pool.pool_size[1], pool.strides[1], pool.padding)
        return pads == ((0, 0), (0, 0)) and out_h * pool.pool_size[0] == h and out_w * pool.pool_size[1] == w

    def _buffer(self, name: str, shape: tuple[int, ...], dtype) -> Array:
        """A scratch buffer kept on the conv layer between calls (fresh pages cost more than the copy).

        A kept buffer up to twice the rows needed serves (its leading rows; a short last batch reuses it);
        a larger one is dropped and a buffer of exactly `shape` made, so a batch that shrinks frees memory.
        New buffers start as zeros, so a padding buffer whose interior alone is ever written keeps zero borders.
        """
        conv = self.layers[0]
        buf = getattr(conv, name, None)
        fits = (
            buf is not None
            and get_backend().is_array(buf)
            and buf.dtype == dtype
            and buf.shape[1:] == shape[1:]
            and shape[0] <= buf.shape[0] <= 2 * shape[0]
        )
        if not fits:
            setattr(conv, name, None)  # the old buffer goes before the new one is made
            buf = get_backend().xp.zeros(shape, dtype=dtype)
            setattr(conv, name, buf)
        return buf[: shape[0]]

    def _padded(self, x: Array, start: int, stop: int, pads, capacity: int, name: str) -> Array:
        """x[start:stop] with the conv's zero padding, in a reused per-worker buffer of `capacity` images.

        Padding chunk by chunk keeps the padded images in cache and never allocates a padded copy of the batch.
        """
        (top, bottom), (left, right) = pads
        _, h, w, c = x.shape
        if top == bottom == left == right == 0:
            return get_backend().xp.ascontiguousarray(x[start:stop])
        buf = self._buffer(name, (capacity, top + h + bottom, left + w + right, c), x.dtype)[: stop - start]
        buf[:, top : top + h, left : left + w] = x[start:stop]
        return buf

    def _conv_then_pool(self, x: Array) -> bool:
        """Inference of wide convs (see INFERENCE_SPLIT_MACS) as conv_chunks' conv with the bias and ReLU per chunk
        and then the pool, where the implicit conv runs (float32, AVX-512) or on the NumPy twin: both beat the
        unit's own passes there."""
        conv = self.layers[0]
        w = conv.params["w"]
        macs_per_output = w[..., 0].size  # fh·fw·cin
        if macs_per_output < INFERENCE_SPLIT_MACS or not conv_chunks.takes(conv, x):
            return False
        # the implicit conv, or the NumPy twin (chunked GEMM then the pool: VGG-style units 27.5 -> 19.1 and
        # 17.7 -> 14.1 ms at batch 128); native.c's unit keeps the other native cases (float64, no AVX-512)
        implicit = conv_chunks.IMPLICIT_GEMM and native.conv_runs(x, w.shape[-1])
        return implicit or not native.takes(x)

    def _inference_forward(self, x: Array):
        """The layers' values (max(relu(conv + b)) = relu(max(conv) + b) exactly: rounding is monotonic); the
        cache keeps x only, and a backward after it reruns the training forward."""
        conv, _, pool = self.layers
        return conv_pool_inference(conv, pool, x), x

    def forward(self, x: Array, training: bool = False) -> tuple[Array, ConvReluPoolCache]:
        if not training and self._conv_then_pool(x):
            return self._inference_forward(x)
        backend = get_backend()
        xp, kernels = backend.xp, backend.kernels
        conv, _, pool = self.layers
        w = conv.params["w"]
        n, h, wd, cin = x.shape
        fh, fw, _, cout = w.shape
        ph, pw = pool.pool_size
        conv_hw = (
            output_size(h, fh, conv.strides[0], conv.padding),
            output_size(wd, fw, conv.strides[1], conv.padding),
        )
        out_h, out_w = conv_hw[0] // ph, conv_hw[1] // pw
        pads = pads_2d((h, wd), (fh, fw), conv.strides, conv.padding)
        if uses_native(x):
            x = xp.ascontiguousarray(x)  # native.c reads NHWC rows; the backward reads the same array
            pooled, argmax = self._native_forward(x, pads, (out_h, out_w))
            return self._finish_forward(x, pads, pooled, argmax, conv_hw)
        bh, bw = output_block((ph, pw), cout)
        k = ((bh - 1) * conv.strides[0] + fh) * ((bw - 1) * conv.strides[1] + fw) * cin
        rows_per_image = conv_hw[0] * conv_hw[1] // (bh * bw)
        (top, bottom), (left, right) = pads
        # per image on CuPy: padded input, im2col rows, GEMM output and window cells (as many values), arg-max picks
        padded, conv_values = (h + top + bottom) * (wd + left + right) * cin, conv_hw[0] * conv_hw[1] * cout
        gpu_bytes = (padded + rows_per_image * k + 2 * conv_values) * x.dtype.itemsize + 3 * out_h * out_w * cout * 8
        chunk, workers = chunking(n, rows_per_image * k * x.dtype.itemsize, CHUNK_BYTES, gpu_bytes)
        w_group = grouped_kernel(w, (bh, bw), conv.strides)
        pooled = xp.empty((n, out_h, out_w, cout), dtype=x.dtype)
        argmax = xp.empty((n, out_h, out_w, cout), dtype=xp.intp)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            m = stop - start
            x_pad = self._padded(x, start, stop, pads, chunk, f"_pad_{worker}")
            runs = grouped_runs(x_pad, conv, (ph, pw), (out_h, out_w), (bh, bw))
            cols = self._buffer(f"_cols_{worker}", (chunk * rows_per_image, k), x.dtype)[: m * rows_per_image]
            kernels.copy_runs(cols.reshape(runs.shape), runs)
            out = self._buffer(f"_out_{worker}", (chunk * rows_per_image, w_group.shape[1]), x.dtype)
            # rows (image, i, j, block row, block column), columns (channel, a, b)
            out = xp.matmul(cols, w_group, out=out[: m * rows_per_image])
            # each (image, i, j, channel)'s window cells in row-major order, moved in runs of bw
            cells = self._buffer(f"_cells_{worker}", (chunk * out_h * out_w * cout, ph * pw), x.dtype)
            cells = cells[: m * out_h * out_w * cout]
            kernels.copy_runs(
                cells.reshape(m, out_h, out_w, cout, ph // bh, bh, pw // bw, bw),
                out.reshape(m, out_h, out_w, ph // bh, pw // bw, cout, bh, bw).transpose(0, 1, 2, 5, 3, 6, 4, 7),
            )
            arg = cells.argmax(axis=1)  # the first maximum, as TF's max pool gradient picks it
            argmax[start:stop] = arg.reshape(m, out_h, out_w, cout)
            pooled[start:stop] = xp.take(cells.reshape(-1), xp.arange(0, cells.size, ph * pw) + arg).reshape(
                m, out_h, out_w, cout
            )

        map_chunks(run_chunk, n, chunk, workers)
        return self._finish_forward(x, pads, pooled, argmax, conv_hw)

    def _finish_forward(self, x: Array, pads, pooled: Array, argmax: Array, conv_hw) -> tuple[Array, ConvReluPoolCache]:
        """Bias and ReLU on the window maxima of conv(x, w)."""
        b = self.layers[0].params.get("b")
        if b is not None:  # max(a + b) = max(a) + b exactly (rounding is monotonic), on 1/(ph·pw) of the values
            pooled += b
        return get_backend().xp.maximum(pooled, 0.0), ConvReluPoolCache(x, pads, pooled, argmax, conv_hw)

    def _native_forward(self, x: Array, pads, out_hw: tuple[int, int]) -> tuple[Array, Array]:
        """Window maxima and first arg-maxima of conv(x, w) from native.c, in chunks on every worker."""
        conv, _, pool = self.layers
        w = conv.params["w"]
        n, xp = x.shape[0], get_backend().xp
        w_lanes = native.kernel_lanes(w)
        pooled = xp.empty((n, *out_hw, w.shape[3]), dtype=x.dtype)
        argmax = xp.empty(pooled.shape, dtype=xp.int64)
        workers = native_workers(pooled.size * pool.pool_size[0] * pool.pool_size[1] * w[..., 0].size)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            g = native.geometry((stop - start, *x.shape[1:]), w.shape, pads, conv.strides, pool.pool_size, out_hw)
            native.conv_relu_pool_forward(x[start:stop], w_lanes, g, pooled[start:stop], argmax[start:stop])

        # one chunk per worker: each call costs ~30 µs of Python under the GIL (LeNet-5's first unit at batch 128:
        # 8 chunks of 16 took 0.50 ms on 2 workers, 0.58 on one); chunks never change a forward's bits
        map_chunks(run_chunk, n, -(-n // workers), workers, blas=False)
        return pooled, argmax

    def backward(self, dout: Array, cache: ConvReluPoolCache, need_dx: bool = True):
        if not isinstance(cache, ConvReluPoolCache):  # x, after an inference forward that split conv and pool
            _, cache = self.forward(cache, training=True)
        backend = get_backend()
        xp = backend.xp
        conv, _, pool = self.layers
        w = conv.params["w"]
        fh, fw, cin, cout = w.shape
        ph, pw = pool.pool_size
        n, out_h, out_w, _ = dout.shape
        g = backend.kernels.relu_grad(dout, cache.pooled)  # ReLU's gradient: pooled > 0 ⟺ relu output > 0
        if uses_native(cache.x):
            return self._native_backward(g, cache, need_dx)
        # the winning conv-output pixel of each (image, window, channel)
        rows = xp.arange(out_h).reshape(1, out_h, 1, 1) * ph + cache.argmax // pw
        cols = xp.arange(out_w).reshape(1, 1, out_w, 1) * pw + cache.argmax % pw
        images = xp.arange(n).reshape(n, 1, 1, 1)
        if backend.name == "numpy" and ph * pw <= DENSE_BACKWARD_CELLS:
            return self._dense_backward(g, cache, (images, rows, cols), need_dx)
        k = fh * fw * cin
        (top, bottom), (left, right) = cache.pads
        patch_bytes = out_h * out_w * cout * k * dout.dtype.itemsize  # the gathered patches of one image
        padded_bytes = (cache.x.shape[1] + top + bottom) * (cache.x.shape[2] + left + right) * cin * dout.dtype.itemsize
        chunk, workers = chunking(n, patch_bytes, CHUNK_BYTES // 4, patch_bytes + padded_bytes)
        partial_dw = [None] * -(-n // chunk)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            x_pad = self._padded(cache.x, start, stop, cache.pads, chunk, f"_pad_back_{worker}")
            windows = window_view(x_pad, (fh, fw), conv.strides, cache.conv_hw)
            patch_rows = windows.reshape(*windows.shape[:4], fw * cin)  # a view: each window row is one run
            # each winner's patch rows (images, out_h, out_w, cout, fh, fw·cin), then Σ patch · gradient per channel
            patches = backend.kernels.gather_runs(
                patch_rows, (images[: stop - start], rows[start:stop], cols[start:stop])
            )
            m = (stop - start) * out_h * out_w
            grad = g[start:stop].reshape(m, cout)
            partial_dw[start // chunk] = xp.einsum("mck,mc->kc", patches.reshape(m, cout, k), grad)

        map_chunks(run_chunk, n, chunk, workers)
        dw = partial_dw[0]
        for part in partial_dw[1:]:  # in chunk order, so the sum does not depend on the number of workers
            dw = dw + part
        grads = self._grads(dw.reshape(w.shape), g)
        dx = None
        if need_dx:
            dconv = xp.zeros((n, *cache.conv_hw, cout), dtype=dout.dtype)
            channels = xp.arange(cout).reshape(1, 1, 1, cout)
            dconv[images, rows, cols, channels] = g
            (top, bottom), (left, right) = cache.pads
            padded_shape = (n, cache.x.shape[1] + top + bottom, cache.x.shape[2] + left + right, cin)
            if backend.name == "numpy":  # chunks on every worker, BLAS at one thread each (conv_chunks.py)
                dx = conv_chunks.conv2d_input_grad_chunked(conv, dconv, w, cache.x.shape, cache.pads, conv.strides)
            else:
                dx = conv2d_input_grad(dconv, w, padded_shape, cache.pads, conv.strides)
        return dx, [grads, {}, {}]

    def _dense_backward(self, g: Array, cache: ConvReluPoolCache, winners, need_dx: bool):
        """The NumPy backward for small pools: g scattered onto the winners of a zero conv-output gradient,
        then conv_chunks' chunked backward (GEMMs over every conv output, ph·pw times the winners' work, where
        gathering one patch per window and channel moved ph·pw-fold less but ran 4x slower on 2x2 pools)."""
        conv = self.layers[0]
        xp, w = get_backend().xp, conv.params["w"]
        n, cout = g.shape[0], w.shape[3]
        dconv = xp.zeros((n, *cache.conv_hw, cout), dtype=g.dtype)
        dconv[(*winners, xp.arange(cout).reshape(1, 1, 1, cout))] = g
        k = w.shape[0] * w.shape[1] * w.shape[2]
        chunked = conv_chunks.ChunkedConvCache(
            cache.x, w, conv.strides, cache.pads, cache.conv_hw,
            conv_chunks.chunk_images(n, cache.conv_hw, k, g.dtype.itemsize),
        )  # fmt: skip
        dx, grads = conv_chunks.conv2d_backward_chunked(conv, dconv, chunked, need_dx)
        return dx, [self._grads(grads["w"], g), {}, {}]

    def _grads(self, dw: Array, g: Array) -> dict[str, Array]:
        """{"w": dw, "b": Σ g over images and windows} (no "b" for a conv without bias)."""
        grads = {"w": dw}
        if self.layers[0].use_bias:
            grads["b"] = g.reshape(-1, g.shape[3]).sum(axis=0)
        return grads

    def _native_backward(self, g: Array, cache: ConvReluPoolCache, need_dx: bool):
        """dW, db and (when needed) dx from native.c; dW sums per fixed-size chunk, then in chunk order."""
        conv, _, pool = self.layers
        w = conv.params["w"]
        n, xp = cache.x.shape[0], get_backend().xp
        x = xp.ascontiguousarray(cache.x)  # already so unless XPNN_NATIVE changed since the forward
        w_rows = native.kernel_rows(w)
        g = xp.ascontiguousarray(g)
        dx = xp.empty(x.shape, dtype=x.dtype) if need_dx else None
        chunk = CHUNK_IMAGES  # fixed: the sum of the chunks' dW does not depend on the number of workers
        partial_dw = xp.zeros((-(-n // chunk), *w_rows.shape), dtype=x.dtype)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            shape = (stop - start, *x.shape[1:])
            geom = native.geometry(shape, w.shape, cache.pads, conv.strides, pool.pool_size, g.shape[1:3])
            native.conv_relu_pool_backward(
                x[start:stop],
                w_rows,
                geom,
                cache.argmax[start:stop],
                g[start:stop],
                partial_dw[start // chunk],
                None if dx is None else dx[start:stop],
            )

        map_chunks(run_chunk, n, chunk, native_workers(g.size * w[..., 0].size), blas=False)
        dw_rows = partial_dw.sum(axis=0)  # added chunk after chunk, as the twin's loop adds its parts
        return dx, [self._grads(xp.ascontiguousarray(dw_rows.T).reshape(w.shape), g), {}, {}]


class ConvRelu:
    """Conv2D → ReLU as one unit on the CPU: conv_chunks runs the ReLU on each chunk's conv output while it
    is in cache, and the ReLU's gradient on each chunk of the backward: the two layers' bits, one pass less
    over the output each way, and no pre-activation kept."""

    def __init__(self, conv: Conv2D, relu: ReLU) -> None:
        self.layers = (conv, relu)

    @staticmethod
    def applies(conv: Layer, relu: Layer) -> bool:
        """A plain Conv2D (no dilation, groups or own activation: conv_chunks runs it) and a ReLU, on NumPy."""
        if type(conv) is not Conv2D or type(relu) is not ReLU or get_backend().name != "numpy":
            return False
        return conv.dilation_rate == (1, 1) and conv.groups == 1 and conv.activation.is_linear

    def forward(self, x: Array, training: bool = False):
        conv = self.layers[0]
        if not conv_chunks.takes(conv, x):  # e.g. a dilated conv: layer by layer
            out, cache = conv.forward(x)
            relu_out, _ = self.layers[1].forward(out)
            return relu_out, (None, cache, relu_out)
        out, cache = conv_chunks.conv2d_forward_chunked(
            conv, x, conv.params["w"], conv.params.get("b"), conv.strides, conv.padding, relu=True
        )
        return out, (cache, None, out)

    def backward(self, dout: Array, cache, need_dx: bool = True):
        conv, relu = self.layers
        chunked, layer_cache, out = cache
        if chunked is None:
            d, _ = relu.backward(dout, out)
            dx, grads = conv.backward(d, layer_cache, need_dx)
            return dx, [grads, {}]
        dx, grads = conv_chunks.conv2d_backward_chunked(conv, dout, chunked, need_dx, relu_out=out)
        if not conv.use_bias:
            del grads["b"]
        return dx, [grads, {}]


class DenseRelu:
    """Dense → ReLU as one unit: the bias and the ReLU run in the native GEMM's registers (elsewhere in place on
    the Dense output: one array and one pass fewer), and its gradient on the way back, as the two layers compute
    them (the same bits)."""

    def __init__(self, dense: Dense, relu: ReLU) -> None:
        self.layers = (dense, relu)

    @staticmethod
    def applies(dense: Layer, relu: Layer) -> bool:
        """A plain Dense without its own activation (subclasses keep their own passes) and a ReLU."""
        return type(dense) is Dense and type(relu) is ReLU and dense.activation.is_linear

    def forward(self, x: Array, training: bool = False):
        p = self.layers[0].params
        out, cache = dense_forward(x, p["w"], p.get("b"), relu=True)  # the ReLU in the GEMM's epilogue
        return out, (cache, out)

    def backward(self, dout: Array, cache, need_dx: bool = True):
        dense_cache, out = cache
        d, _ = self.layers[1].backward(dout, out)
        dx, grads = self.layers[0].backward(d, dense_cache, need_dx)
        return dx, [grads, {}]


class ConvUnitPool:
    """A Conv2D → ReLU or Conv2D → BatchNormalization → ReLU unit and the MaxPool2D or AvgPool2D after it.

    Training runs the two as they are. Inference, where the implicit conv runs (float32, AVX-512), pools each
    chunk of the conv output while it is in cache (conv_chunks.conv2d_forward_pooled): the conv output is never
    a whole array, written to memory and read back by the pool. Elsewhere on the CPU (the twin, float64) the
    conv's epilogue still takes the BatchNormalization and ReLU, and the pool skips the winners no backward
    needs. The layers' bits.
    """

    def __init__(self, unit, pool: Layer) -> None:
        self.unit, self.pool = unit, pool
        self.layers = (*unit.layers, pool)

    @staticmethod
    def applies(unit, layer: Layer) -> bool:
        """A ConvRelu or ConvBatchNormRelu unit, then exactly a MaxPool2D or AvgPool2D (any window, stride, padding)."""
        return type(unit) in (ConvRelu, ConvBatchNormRelu) and type(layer) in (MaxPool2D, AvgPool2D)

    def _inference(self, x: Array) -> Array | None:
        conv = self.unit.layers[0]
        affine = None
        if type(self.unit) is ConvBatchNormRelu:
            if not self.unit._fused(x):
                return None
            affine = self.unit.layers[1].inference_affine()
        return conv_pool_inference(conv, self.pool, x, affine) if conv_chunks.takes(conv, x) else None

    def forward(self, x: Array, training: bool = False):
        if not training:
            pooled = self._inference(x)
            if pooled is not None:
                return pooled, (None, x)  # a backward after it reruns the layers' forward for their caches
        h, unit_cache = self.unit.forward(x, training=training)
        y, pool_cache = self.pool.forward(h)
        return y, (unit_cache, pool_cache)

    def backward(self, dout: Array, cache, need_dx: bool = True):
        unit_cache, pool_cache = cache
        if unit_cache is None:
            h, unit_cache = self.unit.forward(pool_cache, training=False)
            _, pool_cache = self.pool.forward(h)
        d, _ = self.pool.backward(dout, pool_cache)
        dx, grads = self.unit.backward(d, unit_cache, need_dx)
        return dx, [*grads, {}]


def conv_pool_inference(conv: Conv2D, pool: Layer, x: Array, affine: tuple[Array, Array] | None = None) -> Array:
    """Inference of conv (+ b, · inv + shift with `affine`, ReLU) then `pool` on the CPU (conv_chunks takes the conv):
    each chunk pooled while in cache where the implicit conv runs, else the chunked conv with its epilogue and the
    pool's values (no winners). The layers' bits either way."""
    p = conv.params
    args = (conv, x, p["w"], p.get("b"), conv.strides, conv.padding)
    pooled_hw = pool.compute_output_shape(conv.output_shape)[:2]
    pooled = conv_chunks.conv2d_forward_pooled(*args, partial(pool_into, pool), pooled_hw, relu=True, affine=affine)
    if pooled is None:  # no implicit conv (the twin, float64)
        out, _ = conv_chunks.conv2d_forward_chunked(*args, relu=True, affine=affine)
        pooled = pool_values(pool, out)
    return pooled


def uses_native(x: Array) -> bool:
    """Whether the fused unit runs native.c on `x`: the NumPy backend, float32/64, and the kernels enabled."""
    return native.takes(x)


def plan(layers: list[Layer], fuse: bool = True) -> list:
    """The units that run `layers` in order: fused Conv2D → ReLU → MaxPool2D triples where they apply, then
    Conv2D → BatchNormalization → ReLU triples and Conv2D → ReLU pairs (CPU), each with the pool after it
    (ConvUnitPool), BatchNormalization → ReLU pairs (xpnn.layers.fused_norm) and Dense → ReLU pairs."""
    units, i = [], 0
    while i < len(layers):
        if fuse and i + 2 < len(layers) and ConvReluPool.applies(*layers[i : i + 3]):
            units.append(ConvReluPool(*layers[i : i + 3]))
            i += 3
        elif fuse and i + 2 < len(layers) and ConvBatchNormRelu.applies(*layers[i : i + 3]):
            units.append(ConvBatchNormRelu(*layers[i : i + 3]))
            i += 3
        elif fuse and i + 1 < len(layers) and ConvRelu.applies(*layers[i : i + 2]):
            units.append(ConvRelu(*layers[i : i + 2]))
            i += 2
        elif fuse and i + 1 < len(layers) and DenseRelu.applies(*layers[i : i + 2]):
            units.append(DenseRelu(*layers[i : i + 2]))
            i += 2
        elif fuse and i + 1 < len(layers) and BatchNormRelu.applies(*layers[i : i + 2]):
            units.append(BatchNormRelu(*layers[i : i + 2]))
            i += 2
        else:
            units.append(Single(layers[i]))
            i += 1
        if fuse and i < len(layers) and ConvUnitPool.applies(units[-1], layers[i]):
            units[-1] = ConvUnitPool(units[-1], layers[i])
            i += 1
    return units
