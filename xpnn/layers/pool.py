"""Max and average pooling on NHWC input, as tf.nn.max_pool2d / tf.nn.avg_pool2d.

SAME padding never lets a padded cell win a max (it holds -inf) and never counts it
in an average (each window is divided by its number of real cells).

On the NumPy backend the four functions run native loops where `xpnn.backends.native` was built
(native_pool.h: one pass over the input, no window copies); the NumPy code below is their twin, the
path CuPy and machines without a compiler run, and the tests' oracle (same bits).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from xpnn.backends import get_backend, native
from xpnn.cpu_threads import cpu_workers, map_chunks
from xpnn.layers.base import Layer, expect_nhwc, positive_pair
from xpnn.layers.padding import normalize_padding, output_size, pads_2d
from xpnn.layers.windows import crop_hw, pad_hw, window_view, windows_add
from xpnn.types import Array, IntPair, Padding


@dataclass(frozen=True)
class PoolCache:
    padded_shape: tuple[int, ...]
    pads: tuple[tuple[int, int], tuple[int, int]]
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    argmax: Array | None = None  # (n, out_h, out_w, c): winner's cell in the window, row-major; native.winner_dtype
    counts: Array | None = None  # (1, out_h, out_w, 1): real cells per window


def _geometry(x: Array, pool_size: tuple[int, int], strides: tuple[int, int], padding: Padding):
    _, h, w, _ = x.shape
    pads = pads_2d((h, w), pool_size, strides, padding)
    out_hw = (output_size(h, pool_size[0], strides[0], padding), output_size(w, pool_size[1], strides[1], padding))
    return pads, out_hw


# Native pools split a batch over the workers only above this many window cells (~1 ms of loads on one core);
# waking a worker costs ~0.15 ms (docs/benchmarks.md).
PARALLEL_CELLS = 1 << 21


def _native_chunks(run_chunk, n: int, cells: int) -> None:
    """run_chunk(start, stop, worker) over the batch: on the workers when there is enough work for them.

    Images are independent, so the chunking never changes a result.
    """
    workers = max(1, min(cpu_workers(), cells // PARALLEL_CELLS))
    map_chunks(run_chunk, n, -(-n // workers), workers, blas=False)


def _native_takes(x: Array, pool_size: tuple[int, int]) -> bool:
    """Whether the native kernels run this pool (their winners count cells in a float: exact below 2^24)."""
    return native.takes(x) and pool_size[0] * pool_size[1] <= 1 << 24


# The max pool's twin passes over the batch once per window cell (~20 strided passes for 3×3 and its winners):
# a few images at a time keep those passes in the CPU's caches (128 images 32×32×32, 3/2 SAME: forward 10.4 →
# 5.5 ms, backward 13.1 → 6.7). One chunk on CuPy, where each pass is one kernel. (The average pool's fewer
# passes gained nothing from it.)
TWIN_CHUNK_BYTES = 1 << 21


def _twin_chunks(x_shape: tuple[int, ...], itemsize: int) -> list[slice]:
    """The batch of NHWC `x_shape` in slices of about TWIN_CHUNK_BYTES of input (the whole batch on CuPy)."""
    n = x_shape[0]
    if get_backend().name != "numpy":
        return [slice(0, n)]
    step = max(1, TWIN_CHUNK_BYTES // max(1, x_shape[1] * x_shape[2] * x_shape[3] * itemsize))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def maxpool_forward(
    x: Array, pool_size: tuple[int, int], strides: tuple[int, int], padding: Padding
) -> tuple[Array, PoolCache]:
    """Max over each window, as tf.nn.max_pool2d; the winner (argmax) is the first cell in row-major order holding
    the max, a NaN beating any number. A zero max is +0 (the sign of a zero is no part of a max's contract)."""
    xp = get_backend().xp
    pads, out_hw = _geometry(x, pool_size, strides, padding)
    padded_shape = (x.shape[0], x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]), x.shape[3])
    winners = native.winner_dtype(pool_size[0] * pool_size[1])
    if _native_takes(x, pool_size):
        x = xp.ascontiguousarray(x)
        out = xp.empty((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)
        argmax = xp.empty(out.shape, dtype=winners)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            g = native.pool_geometry((stop - start, *x.shape[1:]), pads, pool_size, strides, out_hw)
            native.max_pool_forward(x[start:stop], g, out[start:stop], argmax[start:stop])

        _native_chunks(run_chunk, x.shape[0], out.size * pool_size[0] * pool_size[1])
        return out, PoolCache(padded_shape, pads, pool_size, strides, argmax=argmax)
    out, argmax = _twin_max(x, pool_size, strides, pads, out_hw, winners)
    return out, PoolCache(padded_shape, pads, pool_size, strides, argmax=argmax)


def _twin_max(x: Array, pool_size, strides, pads, out_hw, winners) -> tuple[Array, Array | None]:
    """The NumPy twin's window maxima, and their first winners unless `winners` is None (inference)."""
    xp = get_backend().xp
    out = xp.empty((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)
    argmax = None if winners is None else xp.empty(out.shape, dtype=winners)
    for part in _twin_chunks(x.shape, x.dtype.itemsize):
        windows = window_view(pad_hw(x[part], pads, -xp.inf), pool_size, strides, out_hw)
        cells = [windows[:, :, :, r, s, :] for r in range(pool_size[0]) for s in range(pool_size[1])]
        o = out[part]
        xp.copyto(o, cells[0])
        for v in cells[1:]:
            xp.maximum(o, v, out=o)  # a NaN propagates; which zero of a +0/-0 tie it keeps is NumPy's choice,
        o += 0.0  # so every zero max becomes +0 (-0 + 0 = +0), as in native_pool.h
        if argmax is not None:
            argmax[part] = _first_winners(o, cells, winners)
    return out, argmax


def pool_values(layer: Layer, x: Array) -> Array:
    """Inference: `layer`'s pool (a MaxPool2D or AvgPool2D) of x, its forward's values; a max pool's winners,
    which only a backward needs, are not looked for on the NumPy twin (half its passes)."""
    if type(layer) is MaxPool2D and not _native_takes(x, layer.pool_size):
        pads, out_hw = _geometry(x, layer.pool_size, layer.strides, layer.padding)
        return _twin_max(x, layer.pool_size, layer.strides, pads, out_hw, None)[0]
    return layer.forward(x)[0]


def _first_winners(out: Array, cells: list[Array], winners) -> Array:
    """Each window's first cell equal to its max `out` (or the first NaN where the max is NaN), numpy.argmax's
    winner: cell by cell backwards, a cell that equals the max overwrites the later ones' index.

    Arithmetic, not a masked copy (np.copyto(..., where=) or np.where took ~6 ms per cell on 128 images
    32×32×32: the random masks defeat the branch predictor).
    """
    xp = get_backend().xp
    nan = bool(xp.isnan(out).any())  # a window's NaN reaches its max
    argmax = xp.full(out.shape, len(cells) - 1, dtype=winners)  # the last cell wins where no earlier one does
    hit = xp.empty(out.shape, dtype=bool)
    for cell in range(len(cells) - 2, -1, -1):
        xp.equal(cells[cell], out, out=hit)
        if nan:
            hit |= xp.isnan(cells[cell])
        argmax += hit * (cell - argmax)  # cell where hit, else unchanged (modular in an unsigned type: exact)
    return argmax


def maxpool_backward(dout: Array, cache: PoolCache) -> Array:
    """Route each output gradient to the input cell that won its window (only there: a NaN gradient stays put)."""
    xp = get_backend().xp
    n, out_h, out_w, c = dout.shape
    kh, kw = cache.pool_size
    winners = native.winner_dtype(kh * kw)
    if _native_takes(dout, cache.pool_size):
        dout, argmax = xp.ascontiguousarray(dout), xp.ascontiguousarray(cache.argmax, dtype=winners)
        (top, bottom), (left, right) = cache.pads
        _, hp, wp, _ = cache.padded_shape
        dx = xp.empty((n, hp - top - bottom, wp - left - right, c), dtype=dout.dtype)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            g = native.pool_geometry(
                (stop - start, *dx.shape[1:]), cache.pads, cache.pool_size, cache.strides, (out_h, out_w)
            )
            native.max_pool_backward(dout[start:stop], argmax[start:stop], g, dx[start:stop])

        _native_chunks(run_chunk, n, dout.size * kh * kw)
        return dx
    sh, sw = cache.strides
    dx = xp.empty((n, *_input_hw(cache), c), dtype=dout.dtype)
    # only the winner gets the gradient: where dout has a NaN or inf, a 0·g product would spread it over the
    # window, so those take xp.where; finite gradients take the product (a -0 it adds to a sum from +0 changes
    # no bit), 7x faster
    finite = bool(xp.isfinite(dout).all())
    for part in _twin_chunks(dx.shape, dx.dtype.itemsize):
        d_pad, g, argmax = (
            xp.zeros((len(dx[part]), *cache.padded_shape[1:]), dtype=dout.dtype),
            dout[part],
            cache.argmax[part],
        )
        won = xp.empty_like(g)
        for r in range(kh):  # windows_add's order
            for s in range(kw):
                hit = argmax == r * kw + s
                if finite:
                    xp.multiply(g, hit, out=won)
                else:
                    won = xp.where(hit, g, 0.0)
                d_pad[:, r : r + sh * (out_h - 1) + 1 : sh, s : s + sw * (out_w - 1) + 1 : sw] += won
        dx[part] = crop_hw(d_pad, cache.pads)
    return dx


def _input_hw(cache: PoolCache) -> tuple[int, int]:
    """The (h, w) of the input that made `cache`: its padded size less the pads."""
    (top, bottom), (left, right) = cache.pads
    return cache.padded_shape[1] - top - bottom, cache.padded_shape[2] - left - right


def pool_into(layer: Layer, x: Array, out: Array) -> bool:
    """Inference: `layer`'s pool (a MaxPool2D or AvgPool2D) of the C-contiguous NHWC chunk x written into out, on
    the calling thread, by the native kernels (the forwards' bits; a max pool's winners are not kept). False,
    nothing written, where those do not run it. For a conv unit that pools each chunk while it is in cache."""
    if type(layer) not in (MaxPool2D, AvgPool2D) or not _native_takes(x, layer.pool_size) or not x.flags.c_contiguous:
        return False
    pool_size, strides = layer.pool_size, layer.strides
    pads, out_hw = _geometry(x, pool_size, strides, layer.padding)
    if out.shape != (x.shape[0], *out_hw, x.shape[3]) or out.dtype != x.dtype or not out.flags.c_contiguous:
        return False
    g = native.pool_geometry(x.shape, pads, pool_size, strides, out_hw)
    if type(layer) is MaxPool2D:
        argmax = get_backend().xp.empty(out.shape, dtype=native.winner_dtype(pool_size[0] * pool_size[1]))
        native.max_pool_forward(x, g, out, argmax)
    else:
        counts = _counts(x.shape, pool_size, strides, pads, out_hw).reshape(out_hw).astype(x.dtype)  # a C-order copy
        native.avg_pool_forward(x, counts, g, out)
    return True


def _counts(x_shape, pool_size, strides, pads, out_hw) -> Array:
    """(1, out_h, out_w, 1): each window's real (unpadded) cells, float64; computed once per geometry and backend
    (an inference pool runs once per chunk of a conv's output), so never to be written to."""
    (top, bottom), (left, right) = pads
    key = (tuple(pool_size), tuple(strides), (top, bottom, left, right), tuple(out_hw))
    return _counts_of(get_backend().name, int(x_shape[1]), int(x_shape[2]), *key)


@functools.lru_cache(maxsize=64)
def _counts_of(backend: str, h: int, w: int, pool_size, strides, pads, out_hw) -> Array:
    xp = get_backend().xp
    ones = pad_hw(xp.ones((1, h, w, 1), dtype=xp.float64), ((pads[0], pads[1]), (pads[2], pads[3])))
    return window_view(ones, pool_size, strides, out_hw).sum(axis=(3, 4))


def avgpool_forward(
    x: Array, pool_size: tuple[int, int], strides: tuple[int, int], padding: Padding
) -> tuple[Array, PoolCache]:
    """Mean over the real (unpadded) cells of each window."""
    xp = get_backend().xp
    pads, out_hw = _geometry(x, pool_size, strides, padding)
    counts = _counts(x.shape, pool_size, strides, pads, out_hw).astype(x.dtype)
    padded_shape = (x.shape[0], x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]), x.shape[3])
    cache = PoolCache(padded_shape, pads, pool_size, strides, counts=counts)
    if _native_takes(x, pool_size):
        x, counts_hw = xp.ascontiguousarray(x), xp.ascontiguousarray(counts.reshape(out_hw))
        out = xp.empty((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            g = native.pool_geometry((stop - start, *x.shape[1:]), pads, pool_size, strides, out_hw)
            native.avg_pool_forward(x[start:stop], counts_hw, g, out[start:stop])

        _native_chunks(run_chunk, x.shape[0], out.size * pool_size[0] * pool_size[1])
        return out, cache
    windows = window_view(pad_hw(x, pads), pool_size, strides, out_hw)
    sums = xp.zeros((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)
    for r in range(pool_size[0]):  # cell by cell in row-major order, as native_pool.h adds them (a .sum over the
        for s in range(pool_size[1]):  # window axes adds in an order NumPy picks per shape)
            sums += windows[:, :, :, r, s, :]
    return sums / counts, cache


def avgpool_backward(dout: Array, cache: PoolCache) -> Array:
    """Spread each output gradient evenly over the real cells of its window."""
    xp = get_backend().xp
    n, out_h, out_w, c = dout.shape
    kh, kw = cache.pool_size
    if _native_takes(dout, cache.pool_size):
        dout, counts_hw = xp.ascontiguousarray(dout), xp.ascontiguousarray(cache.counts.reshape(out_h, out_w))
        (top, bottom), (left, right) = cache.pads
        _, hp, wp, _ = cache.padded_shape
        dx = xp.empty((n, hp - top - bottom, wp - left - right, c), dtype=dout.dtype)

        def run_chunk(start: int, stop: int, worker: int) -> None:
            g = native.pool_geometry(
                (stop - start, *dx.shape[1:]), cache.pads, cache.pool_size, cache.strides, (out_h, out_w)
            )
            native.avg_pool_backward(dout[start:stop], counts_hw, g, dx[start:stop])

        _native_chunks(run_chunk, n, dout.size * kh * kw)
        return dx
    share = (dout / cache.counts)[:, :, :, None, None, :]
    patches = xp.broadcast_to(share, (n, out_h, out_w, kh, kw, c))
    return crop_hw(windows_add(patches, cache.padded_shape, cache.strides), cache.pads)


class _Pool2D(Layer):
    kind = ""

    def __init__(self, pool_size: IntPair = 2, strides: IntPair | None = None, padding: Padding | str = "valid"):
        super().__init__()
        self.pool_size = positive_pair(pool_size, "pool_size", self.name)
        self.strides = self.pool_size if strides is None else positive_pair(strides, "strides", self.name)
        self.padding = normalize_padding(padding)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, c = expect_nhwc(input_shape, self.name)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        if self.padding == "valid" and (kh > h or kw > w):
            raise ValueError(
                f"{self.name} pool_size {self.pool_size} is bigger than its VALID input {h}x{w}; "
                "use padding='same' or a smaller pool_size."
            )
        return output_size(h, kh, sh, self.padding), output_size(w, kw, sw, self.padding), c

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "padding": self.padding}


class MaxPool2D(_Pool2D):
    """MaxPool2D(pool_size=2, strides=pool_size, padding="valid"), like keras.layers.MaxPool2D."""

    def forward(self, x: Array) -> tuple[Array, PoolCache]:
        return maxpool_forward(x, self.pool_size, self.strides, self.padding)

    def backward(self, dout: Array, cache: PoolCache, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        return (maxpool_backward(dout, cache) if need_dx else None), {}


class AvgPool2D(_Pool2D):
    """AvgPool2D(pool_size=2, strides=pool_size, padding="valid"), like keras.layers.AveragePooling2D."""

    def forward(self, x: Array) -> tuple[Array, PoolCache]:
        return avgpool_forward(x, self.pool_size, self.strides, self.padding)

    def backward(self, dout: Array, cache: PoolCache, need_dx: bool = True) -> tuple[Array | None, dict[str, Array]]:
        return (avgpool_backward(dout, cache) if need_dx else None), {}
