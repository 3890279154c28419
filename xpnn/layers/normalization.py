"""Batch normalization, as keras.layers.BatchNormalization on TensorFlow (tf.nn.moments + tf.nn.batch_normalization).

Training normalises with the batch's mean and biased variance over every axis but `axis`, and moves
the running statistics in the forward: moving = moving·momentum + batch·(1 − momentum) (Keras 3's update,
with the biased variance). Inference normalises with the moving statistics. Either way the output is
TF's x·inv + (beta − mean·inv) with inv = gamma / sqrt(var + epsilon); the backward is the exact gradient
of the forward that ran (through the batch statistics in training). It recomputes xhat = (x − mean)·rstd
from the input instead of keeping a copy the input's size.

Channels-last input (axis=-1, the usual case) is viewed as (rows, c); its sums run over fixed blocks of
rows, each block in row order, then the blocks' partial sums in block order: the same bits on any number
of threads, and float32 sums that do not drift over a long batch. On the NumPy backend these passes run in
native loops where `xpnn.backends.native` was built (native_norm.h: one pass per reduction or output, no
temporaries); the NumPy code below is their twin (the same bits), the path CuPy and machines without a
compiler run. Other axes run plain NumPy reductions. With `relu=True` (the BatchNormalization → ReLU plan
unit, xpnn.layers.fused_norm) the ReLU runs inside the output pass, and its gradient inside the backward's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn.backends import get_backend, native
from xpnn.cpu_threads import cpu_workers, map_chunks
from xpnn.layers.base import Layer
from xpnn.types import Array

BLOCK_VALUES = 1 << 14  # a reduction block: whole rows, about this many values (64 KB of float32)
LANE_VALUES = 256  # a block is summed as rows of about this many values (interleaved lanes): long NumPy loops
# The NumPy twin works through the rows in spans of whole blocks of about this many values: its temporaries stay
# in cache and come from freed memory, never fresh pages (a fresh 8 MB temporary cost ~1.5 ms of page faults in
# the BatchNorm CNN's step, more than the arithmetic on it). CuPy takes all rows at once.
SPAN_VALUES = 1 << 17
# Native passes use a worker thread for every this many values (~0.2-0.4 ms of one pass on one core); waking
# one costs ~0.15 ms (docs/benchmarks.md), and more on a busy machine: at 1 << 19 the BatchNorm CNN's 1M-value
# passes ran slower on two threads than on one
PARALLEL_VALUES = 1 << 21


@dataclass(frozen=True)
class BatchNormCache:
    x: Array  # the input (xhat = (x − mean)·rstd is recomputed from it in the backward)
    mean: Array  # the mean that normalised x (batch or moving), broadcastable to the input
    rstd: Array  # 1 / sqrt(var + epsilon), broadcastable to the input
    axes: tuple[int, ...]  # the reduced axes
    training: bool  # whether mean and var were the batch's (their gradient then flows too)
    relu: tuple[Array, Array] | None = None  # (inv, shift) when a fused ReLU ran: out > 0 ⟺ x·inv + shift > 0
    out: Array | None = None  # the fused ReLU's output where the NumPy path ran (its mask, read, not recomputed)


def block_rows(c: int) -> tuple[int, int]:
    """(rows per reduction block, lanes) for c channels: fixed by the shape, never by the number of threads.

    A whole block is summed as `lanes` interleaved lanes (row r into lane r % lanes), each in row order, then
    the lanes in order: NumPy then reduces rows of lanes·c values, not c (4x faster at c = 32).
    """
    lanes = max(1, LANE_VALUES // c)
    return max(lanes, BLOCK_VALUES // c // lanes * lanes), lanes


def channels_last(x: Array, axes: tuple[int, ...]) -> bool:
    """Whether the reduction is over every axis but the last (x viewed as (rows, c)): the blocked path."""
    return x.ndim >= 2 and x.size > 0 and axes == tuple(range(x.ndim - 1))


def _workers(values: int) -> int:
    """Worker threads for a native pass over `values` values (the BLAS budget is read only when it matters)."""
    wanted = values // PARALLEL_VALUES
    return 1 if wanted < 2 else max(1, min(cpu_workers(), wanted))


def _over_rows(run, rows: int, c: int) -> None:
    """run(start, stop) over row ranges, on the workers when the pass is large enough (any split: elementwise)."""
    workers = _workers(rows * c)
    if workers == 1:
        run(0, rows)
        return
    map_chunks(lambda start, stop, worker: run(start, stop), rows, -(-rows // workers), workers, blas=False)


def _over_blocks(run, rows: int, c: int, block: int) -> None:
    """run(row_start, row_stop, block_start, block_stop) over whole blocks of rows, on the workers when large."""
    blocks = -(-rows // block)
    workers = _workers(rows * c)
    if workers == 1:
        run(0, rows, 0, blocks)
        return

    def run_chunk(start: int, stop: int, worker: int) -> None:
        run(start * block, min(rows, stop * block), start, stop)

    map_chunks(run_chunk, blocks, -(-blocks // workers), workers, blas=False)


def _in_order(v: Array) -> Array:
    """v (m, k, c) summed over axis 1 in order, as (m, c): NumPy adds the k rows one after another, but with
    c = 1 it would sum along contiguous memory, pairwise; a cumulative sum runs in order."""
    if v.shape[2] == 1:
        return v[:, :, 0].cumsum(axis=1)[:, -1:]
    return v.sum(axis=1)


def block_sums(v: Array, block: int, lanes: int) -> Array:
    """(blocks, c): v (rows, c) summed per block of `block` rows as native_norm.h sums it: a whole block as
    `lanes` interleaved lanes, each in row order, then the lanes in order; the short last block in row order."""
    xp = get_backend().xp
    rows, c = v.shape
    full = rows // block * block
    parts = _in_order(v[:full].reshape(-1, block // lanes, lanes * c))  # (blocks, lanes·c): each lane's sums
    parts = _in_order(parts.reshape(-1, lanes, c))
    if full < rows:
        parts = xp.concatenate([parts, _in_order(v[None, full:])])
    return parts


def spans(rows: int, c: int, block: int) -> list[tuple[int, int]]:
    """The NumPy twin's row ranges: whole blocks of about SPAN_VALUES values on the CPU, every row on CuPy."""
    if get_backend().name != "numpy":
        return [(0, rows)]
    step = max(block, SPAN_VALUES // c // block * block)
    return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]


def row_sums(x: Array, mean: Array | None = None) -> Array:
    """(c,) sums over the rows of x (rows, c): of x, or of (x − mean)² with mean (c,); blocked as `block_sums`."""
    xp = get_backend().xp
    rows, c = x.shape
    block, lanes = block_rows(c)
    if native.takes(x):
        x, mean = xp.ascontiguousarray(x), None if mean is None else xp.tile(mean, lanes)
        parts = xp.empty((-(-rows // block), c), dtype=x.dtype)

        def run(r0: int, r1: int, b0: int, b1: int) -> None:
            native.bn_block_sums(x[r0:r1], mean, block, lanes, parts[b0:b1])

        _over_blocks(run, rows, c, block)
    elif mean is None:
        parts = block_sums(x, block, lanes)
    else:
        chunks = []
        for r0, r1 in spans(rows, c, block):  # whole blocks each: the same blocks as one call over every row
            d = x[r0:r1] - mean
            d *= d
            chunks.append(block_sums(d, block, lanes))
        parts = xp.concatenate(chunks)
    return parts.sum(axis=0)  # the blocks in order, one pass over a small array


def moments(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """(mean, biased variance) over `axes`, kept as broadcastable dims: tf.nn.moments's two passes."""
    if not channels_last(x, axes):
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        d *= d
        return mean, d.mean(axis=axes, keepdims=True)
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    rows = x2.shape[0]
    mean = row_sums(x2) / rows
    var = row_sums(x2, mean) / rows
    bshape = (1,) * (x.ndim - 1) + (c,)
    return mean.reshape(bshape), var.reshape(bshape)


def _vec(a: Array) -> Array:
    """A broadcastable (1, ..., 1, c) array as a contiguous (c,) vector for native.c."""
    return get_backend().xp.ascontiguousarray(a.reshape(-1))


def affine(
    gamma: Array | None, beta: Array | None, mean: Array, var: Array, epsilon: float
) -> tuple[Array, Array, Array]:
    """(rstd, inv, shift) of TF's batch_normalization: rstd = 1/√(var + ε), inv = rstd·gamma, shift = beta − mean·inv;
    the output is x·inv + shift."""
    rstd = 1.0 / get_backend().xp.sqrt(var + epsilon)
    inv = rstd if gamma is None else rstd * gamma
    shift = -mean * inv if beta is None else beta - mean * inv
    return rstd, inv, shift


def batchnorm_forward(
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    mean: Array,
    var: Array,
    epsilon: float,
    axes: tuple[int, ...],
    training: bool,
    relu: bool = False,
) -> tuple[Array, BatchNormCache]:
    """tf.nn.batch_normalization with broadcastable `mean`, `var`, `gamma`, `beta` (None: not used); then
    tf.nn.relu when `relu`."""
    xp = get_backend().xp
    rstd, inv, shift = affine(gamma, beta, mean, var, epsilon)
    if channels_last(x, axes) and native.takes(x):
        x = xp.ascontiguousarray(x)
        c = x.shape[-1]
        x2, inv_c, shift_c = x.reshape(-1, c), _vec(inv), _vec(shift)
        out = xp.empty(x.shape, dtype=x.dtype)
        out2 = out.reshape(-1, c)

        def run(start: int, stop: int) -> None:
            native.bn_apply(x2[start:stop], inv_c, shift_c, relu, out2[start:stop])

        _over_rows(run, x2.shape[0], c)
        kept = None  # the native backward recomputes the ReLU's mask from x: the output may go
    elif channels_last(x, axes):
        c = x.shape[-1]
        x2, inv_c, shift_c = x.reshape(-1, c), _vec(inv), _vec(shift)
        out2 = xp.empty(x2.shape, dtype=x.dtype)
        for r0, r1 in spans(x2.shape[0], c, block_rows(c)[0]):  # each span's three passes in cache
            o = out2[r0:r1]
            xp.multiply(x2[r0:r1], inv_c, out=o)
            o += shift_c
            if relu:
                xp.maximum(o, 0.0, out=o)
        out = out2.reshape(x.shape)
        kept = out if relu else None
    else:
        out = x * inv
        out += shift
        if relu:
            xp.maximum(out, 0.0, out=out)
        kept = out if relu else None
    return out, BatchNormCache(x, mean, rstd, axes, training, (inv, shift) if relu else None, kept)


def _relu_grad(dout: Array, x: Array, out: Array | None, inv: Array, shift: Array) -> Array:
    """TF's ReluGrad dout·(out > 0) for the fused ReLU: from the kept output, else from x·inv + shift, whose
    sign is the output's (the same rounding), so the same bits."""
    if out is None:
        out = x * inv
        out += shift
    return get_backend().kernels.relu_grad(dout, out)


def batchnorm_backward(
    dout: Array, cache: BatchNormCache, gamma: Array | None, need_dx: bool = True
) -> tuple[Array | None, Array, Array]:
    """(dx, dgamma, dbeta); in training dx = gamma·rstd·(dout − mean(dout) − xhat·mean(dout·xhat)).

    With a fused ReLU, dout is first masked as tf.nn.relu's gradient does: dout·(out > 0). dx is None
    without `need_dx`.
    """
    scale = cache.rstd if gamma is None else cache.rstd * gamma
    count = dout.size // cache.rstd.size
    if channels_last(cache.x, cache.axes):
        return _backward_rows(dout, cache, scale, count, need_dx)
    d = dout if cache.relu is None else _relu_grad(dout, cache.x, cache.out, *cache.relu)
    xhat = cache.x - cache.mean
    xhat *= cache.rstd
    dbeta = d.sum(axis=cache.axes, keepdims=True)
    dgamma = (d * xhat).sum(axis=cache.axes, keepdims=True)
    if not need_dx:
        return None, dgamma, dbeta
    if not cache.training:
        return d * scale, dgamma, dbeta
    xhat *= dgamma / count
    dx = d - dbeta / count
    dx -= xhat
    dx *= scale
    return dx, dgamma, dbeta


def _backward_rows(dout: Array, cache: BatchNormCache, scale: Array, count: int, need_dx: bool):
    """batchnorm_backward for channels-last input, as (rows, c): native passes, or their NumPy twin."""
    xp = get_backend().xp
    c = dout.shape[-1]
    x2, d2 = cache.x.reshape(-1, c), dout.reshape(-1, c)
    relu = None if cache.relu is None else (_vec(cache.relu[0]), _vec(cache.relu[1]))
    mean, rstd = _vec(cache.mean), _vec(cache.rstd)
    rows, (block, lanes) = x2.shape[0], block_rows(c)
    if native.takes(d2):
        x2, d2 = xp.ascontiguousarray(x2), xp.ascontiguousarray(d2)
        dbeta_parts = xp.empty((-(-rows // block), c), dtype=d2.dtype)
        dgamma_parts = xp.empty_like(dbeta_parts)
        tiled = [xp.tile(v, lanes) for v in (mean, rstd, *(relu or ()))]  # each lane's channels' vectors

        def run_sums(r0: int, r1: int, b0: int, b1: int) -> None:
            parts = dbeta_parts[b0:b1], dgamma_parts[b0:b1]
            relu_tiled = None if relu is None else tuple(tiled[2:])
            native.bn_backward_sums(d2[r0:r1], x2[r0:r1], relu_tiled, *tiled[:2], block, lanes, *parts)

        _over_blocks(run_sums, rows, c, block)
        dbeta, dgamma = dbeta_parts.sum(axis=0), dgamma_parts.sum(axis=0)
        if not need_dx:
            return None, dgamma, dbeta
        a, b, scale_c = dbeta / count, dgamma / count, _vec(scale)
        dx = xp.empty(d2.shape, dtype=d2.dtype)
        mean_or_none = mean if cache.training else None

        def run_dx(start: int, stop: int) -> None:
            native.bn_backward_apply(
                d2[start:stop], x2[start:stop], relu, mean_or_none, rstd, scale_c, a, b, dx[start:stop]
            )

        _over_rows(run_dx, rows, c)
        return dx.reshape(dout.shape), dgamma, dbeta
    return _twin_backward_rows(d2, x2, cache, relu, mean, rstd, _vec(scale), count, need_dx)


def _twin_backward_rows(d2: Array, x2: Array, cache: BatchNormCache, relu, mean, rstd, scale, count, need_dx):
    """The NumPy twin of the native backward, span by span (`spans`): a sums pass, then a dx pass, each
    recomputing d (the ReLU-masked dout) and xhat = (x − mean)·rstd in cache."""
    xp = get_backend().xp
    rows, c = d2.shape
    block, lanes = block_rows(c)
    out2 = None if cache.out is None else cache.out.reshape(-1, c)

    def terms(r0: int, r1: int, with_xhat: bool = True) -> tuple[Array, Array | None]:
        d = d2[r0:r1]
        if relu is not None:
            d = _relu_grad(d, x2[r0:r1], None if out2 is None else out2[r0:r1], *relu)
        if not with_xhat:
            return d, None
        xhat = x2[r0:r1] - mean
        xhat *= rstd
        return d, xhat

    db_parts, dg_parts = [], []
    for r0, r1 in spans(rows, c, block):
        d, xhat = terms(r0, r1)
        db_parts.append(block_sums(d, block, lanes))
        xhat *= d  # d·xhat
        dg_parts.append(block_sums(xhat, block, lanes))
    dbeta, dgamma = xp.concatenate(db_parts).sum(axis=0), xp.concatenate(dg_parts).sum(axis=0)
    if not need_dx:
        return None, dgamma, dbeta
    a, b = dbeta / count, dgamma / count
    dx = xp.empty(d2.shape, dtype=d2.dtype)
    for r0, r1 in spans(rows, c, block):
        d, xhat = terms(r0, r1, cache.training)
        out = dx[r0:r1]
        if not cache.training:
            xp.multiply(d, scale, out=out)
            continue
        xhat *= b
        xp.subtract(d, a, out=out)
        out -= xhat
        out *= scale
    return dx.reshape(cache.x.shape), dgamma, dbeta


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

    def forward(self, x: Array, training: bool = False, relu: bool = False) -> tuple[Array, BatchNormCache]:
        """The normalised x (then ReLU'd with `relu`: the fused BatchNormalization → ReLU unit) and its cache."""
        if training:
            mean, var = moments(x, self._axes)  # biased variance, as tf.nn.moments
            m = self.momentum
            stats = self.non_trainable
            stats["moving_mean"] = stats["moving_mean"] * m + mean.reshape(-1) * (1.0 - m)
            stats["moving_variance"] = stats["moving_variance"] * m + var.reshape(-1) * (1.0 - m)
        else:
            mean, var = self._b("moving_mean"), self._b("moving_variance")
        gamma, beta = self._b("gamma"), self._b("beta")
        return batchnorm_forward(x, gamma, beta, mean, var, self.epsilon, self._axes, training, relu)

    def inference_affine(self) -> tuple[Array, Array]:
        """(inv, shift), each (features,): inference maps x to x·inv + shift, with the moving statistics (the
        bits of the inference forward's own inv and shift; a conv's epilogue applies them, xpnn.layers.fused_norm)."""
        mean, var = self._b("moving_mean"), self._b("moving_variance")
        _, inv, shift = affine(self._b("gamma"), self._b("beta"), mean, var, self.epsilon)
        return _vec(inv), _vec(shift)

    def backward(self, dout: Array, cache: BatchNormCache, need_dx: bool = True) -> tuple[Array | None, dict]:
        dx, dgamma, dbeta = batchnorm_backward(dout, cache, self._b("gamma"), need_dx)
        grads = {}
        if self.scale:
            grads["gamma"] = dgamma.reshape(-1)
        if self.center:
            grads["beta"] = dbeta.reshape(-1)
        return dx, grads

    def get_config(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
