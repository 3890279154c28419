"""Conv2D on the CPU in cache-sized chunks of images, each chunk an im2col copy and a GEMM on its own worker.

The one-GEMM path in conv.py (`conv2d_forward`) builds the columns of the whole batch (64 VGG-style
32x32x32 images: 75 MB), keeps them for the backward, and hands BLAS a weight-gradient product whose
inner dimension is every output pixel of the batch, a shape on which OpenBLAS at 2 threads took 0.52 s
where one thread took 14 ms (27 × 65536 · 65536 × 32, this 2-core VM). Here each chunk of images is
padded into a reused buffer, copied into columns that stay in cache, and multiplied with BLAS at one
thread on its worker (`xpnn.cpu_threads`): forward out = cols · W (+ b), backward dW = Σ colsᵀ · dout
over the chunks in a fixed order (so the bits never depend on the number of threads), and dx = the
columns' gradient dout · Wᵀ added back over the windows. The cache keeps the input, not the columns.

In float32 on a CPU with AVX-512 (native_igemm.h) no columns are copied at all: the forward (with the bias
and the ReLU applied in registers), dW and dx read the padded chunk and the output gradient in place, each sum
in the columns' GEMM order, so the bits of the copying path (tests/test_conv_implicit.py); chunks then go by
the padded input, several per call, and dW is still summed per chunk. `IMPLICIT_GEMM = False` copies columns.

The same math as `conv2d_forward` / `conv2d_backward`, the twin it is tested against (float64 1e-12);
the sums of dW and db are grouped by chunk, so last bits differ from the one-GEMM path.
TensorFlow counterpart: tf.nn.conv2d, its Conv2DBackpropFilter and Conv2DBackpropInput.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xpnn.backends import get_backend, native
from xpnn.cpu_threads import cpu_workers, map_chunks
from xpnn.layers.padding import output_size, pads_2d
from xpnn.layers.windows import window_view
from xpnn.types import Array

CHUNK_BYTES = 1 << 21  # columns per chunk: 2 MiB, inside one core's L2 on the machines of docs/benchmarks.md
CHUNK_IMAGES = 16  # at most this many images per chunk, so small layers still feed every worker
IMPLICIT_GEMM = True  # float32 on AVX-512: native_igemm.h reads the padded chunk in place (False: copy columns)


@dataclass(frozen=True)
class ChunkedConvCache:
    x: Array  # (n, h, w, cin): the input; the backward copies its columns again, chunk by chunk
    w: Array
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_hw: tuple[int, int]
    chunk: int  # images per chunk, fixed by size: the backward sums dW over the same chunks


def takes(layer, x: Array) -> bool:
    """Whether `layer`'s conv on `x` runs here: the NumPy backend (CuPy runs the one-GEMM path, few large
    kernels), and no dilation or groups (this path has neither)."""
    plain = tuple(getattr(layer, "dilation_rate", (1, 1))) == (1, 1) and getattr(layer, "groups", 1) == 1
    return plain and get_backend().name == "numpy" and x.ndim == 4


class _Buffers:
    """Scratch arrays kept on the layer between calls, one set per worker (fresh pages cost more than a copy)."""

    def __init__(self, owner) -> None:
        self.owner = owner

    def get(self, name: str, shape: tuple[int, ...], dtype, zero: bool = False) -> Array:
        """A buffer of at least `shape` (its leading part is returned). New ones start as zeros, so a padding
        buffer whose interior alone is ever written keeps zero borders."""
        store = self.owner.__dict__.setdefault("_chunk_buffers", {})
        buf = store.get(name)
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0] or buf.dtype != dtype:
            buf = get_backend().xp.zeros(shape, dtype=dtype)
            store[name] = buf
        elif zero:
            buf[: shape[0]] = 0
        return buf[: shape[0]]


def _padded(bufs: _Buffers, x: Array, start: int, stop: int, pads, name: str) -> Array:
    """x[start:stop] with zero padding, in a reused buffer (no padded copy of the whole batch)."""
    (top, bottom), (left, right) = pads
    _, h, w, c = x.shape
    if top == bottom == left == right == 0:
        return get_backend().xp.ascontiguousarray(x[start:stop])  # copy_runs needs whole contiguous rows
    buf = bufs.get(name, (stop - start, top + h + bottom, left + w + right, c), x.dtype)
    buf[:, top : top + h, left : left + w] = x[start:stop]
    return buf


def _columns(bufs: _Buffers, x_pad: Array, k_hw, strides, out_hw, name: str) -> Array:
    """The (m·out_h·out_w, fh·fw·cin) im2col rows of a padded chunk, each window row copied as one run."""
    kernels = get_backend().kernels
    m, cin = x_pad.shape[0], x_pad.shape[3]
    windows = window_view(x_pad, k_hw, strides, out_hw)
    runs = windows.reshape(*windows.shape[:4], k_hw[1] * cin)  # a view: one window row is contiguous
    cols = bufs.get(name, (m * out_hw[0] * out_hw[1], k_hw[0] * k_hw[1] * cin), x_pad.dtype)
    kernels.copy_runs(cols.reshape(runs.shape), runs)
    return cols


def _matmul(a: Array, b: Array, out: Array) -> None:
    """out = a @ b: native.c's AVX-512 float32 GEMM where it runs (twice OpenBLAS's Haswell kernels here, see
    native_gemm.h), else NumPy's matmul (BLAS at one thread inside a chunk)."""
    if not (native.takes(a) and native.gemm(a, b, out)):
        get_backend().xp.matmul(a, b, out=out)


def chunk_images(n: int, out_hw, k: int, itemsize: int) -> int:
    """Images per chunk for a batch of n whose conv outputs out_hw each read k values: ~CHUNK_BYTES of columns."""
    return max(1, min(n, CHUNK_IMAGES, CHUNK_BYTES // (out_hw[0] * out_hw[1] * k * itemsize)))


def _conv_geometry(x: Array, w: Array, strides: tuple[int, int], padding: str):
    """(pads, out_hw) of a conv of NHWC x with kernel w (fh, fw, cin, cout): TF's SAME/VALID pads and output size."""
    (_, h, wd, _), (fh, fw) = x.shape, w.shape[:2]
    pads = pads_2d((h, wd), (fh, fw), strides, padding)
    return pads, (output_size(h, fh, strides[0], padding), output_size(wd, fw, strides[1], padding))


def conv2d_forward_chunked(
    owner,
    x: Array,
    w: Array,
    b: Array | None,
    strides: tuple[int, int],
    padding: str,
    relu: bool = False,
    affine: tuple[Array, Array] | None = None,
) -> tuple[Array, ChunkedConvCache]:
    """(n, h, w, cin) * (fh, fw, cin, cout) (+ b) -> (n, out_h, out_w, cout), as conv2d_forward, chunk by chunk.

    With `affine` = (scale, shift), each (cout,), the output is then · scale + shift (an inference
    BatchNormalization's x·inv + shift, its bits); with `relu`, max(·, 0) runs last (as relu_forward: the same
    bits). Both on each chunk's output while it is in cache. `owner` (the layer) keeps the scratch buffers.
    """
    xp = get_backend().xp
    (n, _, _, cin), (fh, fw, _, cout) = x.shape, w.shape
    pads, out_hw = _conv_geometry(x, w, strides, padding)
    w2 = w.reshape(fh * fw * cin, cout)
    chunk, bufs = chunk_images(n, out_hw, fh * fw * cin, x.dtype.itemsize), _Buffers(owner)
    out = xp.empty((n, *out_hw, cout), dtype=x.dtype)
    rows = out.reshape(n, -1, cout)
    implicit, run = IMPLICIT_GEMM and native.conv_runs(x, cout), chunk
    if implicit:  # no columns: chunks by the padded input (the backward keeps `chunk`, which fixes its sums)
        w, b = xp.ascontiguousarray(w), None if b is None else xp.ascontiguousarray(b)
        run = _implicit_images(x.shape, pads, chunk)

    def run_chunk(start: int, stop: int, worker: int) -> None:
        x_pad = _padded(bufs, x, start, stop, pads, f"pad{worker}")
        if implicit and native.conv_gemm(x_pad, w, b, strides, out_hw, relu, out[start:stop], affine):
            return  # the GEMM, + b, the affine step and the ReLU below, on the padded chunk in place: the same bits
        cols = _columns(bufs, x_pad, (fh, fw), strides, out_hw, f"cols{worker}")
        dst = rows[start:stop].reshape(-1, cout)
        _matmul(cols, w2, dst)
        if b is not None:
            dst += b
        if affine is not None:
            dst *= affine[0]
            dst += affine[1]
        if relu:
            xp.maximum(dst, 0.0, out=dst)

    map_chunks(run_chunk, n, run, cpu_workers())
    return out, ChunkedConvCache(x, w, strides, pads, out_hw, chunk)


def conv2d_forward_pooled(
    owner,
    x: Array,
    w: Array,
    b: Array | None,
    strides: tuple[int, int],
    padding: str,
    pool_into: Callable[[Array, Array], bool],
    pooled_hw: tuple[int, int],
    relu: bool = True,
    affine: tuple[Array, Array] | None = None,
) -> Array | None:
    """Inference: conv2d_forward_chunked's output (+ b, affine, ReLU), pooled chunk by chunk while it is in cache:
    pool_into(chunk, out) writes the pool of each chunk's conv output into its rows of the (n, *pooled_hw, cout)
    result. The conv output is never a whole array, so it never goes to memory and back. None where the implicit
    conv does not run (the caller then runs its layers); every value is the layers' bits."""
    xp = get_backend().xp
    (n, _, _, cin), (fh, fw, _, cout) = x.shape, w.shape
    if not (IMPLICIT_GEMM and native.conv_runs(x, cout)):
        return None
    pads, out_hw = _conv_geometry(x, w, strides, padding)
    chunk, bufs = chunk_images(n, out_hw, fh * fw * cin, x.dtype.itemsize), _Buffers(owner)
    conv_bytes = out_hw[0] * out_hw[1] * cout * x.dtype.itemsize  # one image's conv output: a chunk's stays in cache
    run = max(1, min(_implicit_images(x.shape, pads, chunk), CHUNK_BYTES // 2 // conv_bytes))
    w, b = xp.ascontiguousarray(w), None if b is None else xp.ascontiguousarray(b)
    pooled = xp.empty((n, *pooled_hw, cout), dtype=x.dtype)

    def run_chunk(start: int, stop: int, worker: int) -> None:
        x_pad = _padded(bufs, x, start, stop, pads, f"pad{worker}")
        out = bufs.get(f"conv{worker}", (stop - start, *out_hw, cout), x.dtype)
        if not (
            native.conv_gemm(x_pad, w, b, strides, out_hw, relu, out, affine) and pool_into(out, pooled[start:stop])
        ):
            raise RuntimeError("the native conv or pool declined a chunk it was sized for")  # never: checked above

    map_chunks(run_chunk, n, run, cpu_workers())
    return pooled


def _implicit_images(x_shape, pads, chunk: int) -> int:
    """Images per call of the implicit kernels: as many whole chunks as fit ~CHUNK_BYTES / 2 of padded input and
    CHUNK_IMAGES (there are no columns to keep in cache), at least one chunk; fewer calls from Python."""
    n, h, wd, cin = x_shape
    padded_bytes = (h + sum(pads[0])) * (wd + sum(pads[1])) * cin * 4
    return chunk * max(1, min(n, CHUNK_IMAGES, CHUNK_BYTES // 2 // padded_bytes) // chunk)


def conv2d_backward_chunked(
    owner, dout: Array, cache: ChunkedConvCache, need_dx: bool = True, relu_out: Array | None = None
) -> tuple[Array | None, dict[str, Array]]:
    """dx (or None), dW = Σ over chunks of colsᵀ·dout, db = Σ dout, for `conv2d_forward_chunked`.

    With `relu_out` (the forward's output after its ReLU), dout first goes through the ReLU's gradient, chunk
    by chunk (as relu_grad: the same bits).
    """
    xp = get_backend().xp
    x, w, strides, (oh, ow) = cache.x, cache.w, cache.strides, cache.out_hw
    n, h, wd, cin = x.shape
    fh, fw, _, cout = w.shape
    k = fh * fw * cin
    w2 = w.reshape(k, cout)
    w2t = xp.ascontiguousarray(w2.T)
    chunk, bufs = cache.chunk, _Buffers(owner)
    d_rows = xp.ascontiguousarray(dout).reshape(n, oh * ow, cout)
    if relu_out is not None:
        out_rows, d_rows = xp.ascontiguousarray(relu_out).reshape(n, oh * ow, cout), xp.empty_like(d_rows)
        dout_rows = xp.ascontiguousarray(dout).reshape(n, oh * ow, cout)
    # dWᵀ = gᵀ · cols per chunk, channel-major: the AVX-512 GEMM then reads each 64-column panel of the columns
    # once from cache for all channels, where colsᵀ · g streamed all the columns again for every 6 taps (the
    # AlexNet-style 5x5 conv's backward: 20.4 ms against 5.3 for its forward)
    partial_dw = xp.empty((-(-n // chunk), cout, k), dtype=dout.dtype)
    dx = xp.empty(x.shape, dtype=dout.dtype) if need_dx else None
    implicit, group = IMPLICIT_GEMM and native.conv_runs(x, cout), chunk
    if implicit and (dx is None or cin % 16 == 0):  # no columns at all: several chunks per call (dW still per chunk)
        group = _implicit_images(x.shape, cache.pads, chunk)

    def run_chunk(start: int, stop: int, worker: int) -> None:
        x_pad = _padded(bufs, x, start, stop, cache.pads, f"pad{worker}")
        if relu_out is not None and native.takes(d_rows) and out_rows.dtype == d_rows.dtype:  # one pass, same bits
            native.relu_grad(dout_rows[start:stop], out_rows[start:stop], d_rows[start:stop])
        elif relu_out is not None:  # the ReLU's gradient, kernels.relu_grad's formula
            xp.multiply(dout_rows[start:stop], out_rows[start:stop] > 0, out=d_rows[start:stop])
        for first in range(start, stop, chunk):  # each chunk's dW on its own, as the sums over chunks need
            last = min(stop, first + chunk)
            g, part, xs = (
                d_rows[first:last].reshape(-1, cout),
                partial_dw[first // chunk],
                x_pad[first - start : last - start],
            )
            if not (implicit and _weight_grad(bufs, xs, (fh, fw), strides, (oh, ow), g, part, worker)):
                cols = _columns(bufs, xs, (fh, fw), strides, (oh, ow), f"cols{worker}")
                _matmul(g.T, cols, part)
        if dx is not None:  # reuses the columns' buffer where it needs one
            _input_grad(bufs, d_rows, w2t, dx, start, stop, w.shape, cache.pads, strides, (oh, ow), worker)

    map_chunks(run_chunk, n, group, cpu_workers())
    dw = partial_dw[0].copy()
    for part in partial_dw[1:]:  # in chunk order: the sum does not depend on the number of workers
        dw += part
    dw = xp.ascontiguousarray(dw.T).reshape(w.shape)
    return dx, {"w": dw, "b": _bias_grad(d_rows.reshape(-1, cout))}


def _bias_grad(d: Array) -> Array:
    """db = d (rows, cout) summed over its rows: native_conv.h's in-order sum where it runs (the same bits as
    NumPy's, at memory speed), else NumPy's."""
    if not native.takes(d) or not d.flags.c_contiguous:
        return d.sum(axis=0)
    db = get_backend().xp.empty(d.shape[1], dtype=d.dtype)
    native.column_sum(d, db)
    return db


def _weight_grad(bufs: _Buffers, x_pad: Array, k_hw, strides, out_hw, g: Array, dwt: Array, worker: int) -> bool:
    """dwt (cout, fh·fw·cin) = gᵀ · the chunk's columns, read from x_pad in place (native_igemm.h), the columns
    in vectors where each window row is whole vectors, else the output channels (written transposed); False
    where neither runs."""
    if native.conv_weight_grad(x_pad, k_hw, strides, out_hw, g, dwt):
        return True
    dw = bufs.get(f"dw{worker}", dwt.shape[::-1], dwt.dtype)
    if not native.conv_weight_grad_taps(x_pad, k_hw, strides, out_hw, g, dw):
        return False
    dwt[...] = dw.T
    return True


def _input_grad(
    bufs: _Buffers, d_rows: Array, w2t: Array, dx: Array, start: int, stop: int, w_shape, pads, strides, out_hw, worker
) -> None:
    """dx[start:stop] = the chunk's output gradient d_rows[start:stop] (m, out_h·out_w, cout) · Wᵀ added back over
    its windows: in place where native_igemm.h runs it (float32, cin a multiple of 16: the same bits), else the
    columns' gradient in a reused buffer, then `_add_windows`."""
    m, cout = stop - start, w2t.shape[0]
    if IMPLICIT_GEMM and native.takes(dx):
        g = native.pool_geometry((m, *dx.shape[1:]), pads, w_shape[:2], strides, out_hw)
        if native.conv_input_grad(d_rows[start:stop].reshape(m, *out_hw, cout), w2t, g, dx[start:stop]):
            return
    dcols = bufs.get(f"cols{worker}", (m * out_hw[0] * out_hw[1], w2t.shape[1]), dx.dtype)
    _matmul(d_rows[start:stop].reshape(-1, cout), w2t, dcols)
    _add_windows(bufs, dcols, dx, start, stop, w_shape, pads, strides, out_hw, worker)


def _add_windows(
    bufs: _Buffers, dcols: Array, dx: Array, start: int, stop: int, w_shape, pads, strides, out_hw, worker: int
) -> None:
    """dx[start:stop] = the columns' gradient (m·out_h·out_w, fh·fw·cin) added back over its windows (as
    windows_add, in a reused padded buffer), then cropped."""
    (fh, fw, cin, _), (oh, ow), (sh, sw) = w_shape, out_hw, strides
    (top, bottom), (left, right) = pads
    m, h, wd = stop - start, dx.shape[1], dx.shape[2]
    if native.takes(dcols):  # one pass, each dx cell written once, the same sums in the same order
        native.col2im(dcols, native.pool_geometry((m, h, wd, cin), pads, (fh, fw), strides, out_hw), dx[start:stop])
        return
    dcols = dcols.reshape(m, oh, ow, fh, fw, cin)
    d_pad = bufs.get(f"dpad{worker}", (m, top + h + bottom, left + wd + right, cin), dx.dtype, zero=True)
    for i in range(fh):
        for j in range(fw):
            d_pad[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += dcols[:, :, :, i, j]
    dx[start:stop] = d_pad[:, top : top + h, left : left + wd]


def conv2d_input_grad_chunked(owner, dout: Array, w: Array, x_shape, pads, strides: tuple[int, int]) -> Array:
    """dx (x_shape) for a conv's output gradient dout, as conv.py's conv2d_input_grad, chunk by chunk on every
    worker: each chunk's dout · Wᵀ, then added back over the windows. No sums across images: the same bits
    for any chunking."""
    xp = get_backend().xp
    n, oh, ow, cout = dout.shape
    fh, fw, cin, _ = w.shape
    w2t = xp.ascontiguousarray(w.reshape(fh * fw * cin, cout).T)
    d_rows = xp.ascontiguousarray(dout).reshape(n, oh * ow, cout)
    dx = xp.empty(x_shape, dtype=dout.dtype)
    chunk, bufs = chunk_images(n, (oh, ow), fh * fw * cin, dout.dtype.itemsize), _Buffers(owner)

    def run_chunk(start: int, stop: int, worker: int) -> None:
        _input_grad(bufs, d_rows, w2t, dx, start, stop, w.shape, pads, strides, (oh, ow), worker)

    map_chunks(run_chunk, n, chunk, cpu_workers())
    return dx
