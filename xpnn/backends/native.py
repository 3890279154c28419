"""The native CPU kernels of the fused conv unit and the pooling layers (native.c), loaded with ctypes when built.

`pip install` compiles `xpnn.backends._native` where a C compiler is present; the build is optional, and
without it (or with XPNN_NATIVE=0) the fused unit runs its NumPy twin, the im2col + GEMM path in
`xpnn/layers/fused.py`, and the pools theirs in `xpnn/layers/pool.py`. Both compute the same bits
(tests/test_native.py).
ctypes releases the GIL during each call, so chunks of a batch run on xpnn's worker threads side by side.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np

_FIELDS = ("n", "h", "w", "cin", "top", "left", "hp", "wp", "fh", "fw", "cout")
_FIELDS += ("sh", "sw", "ph", "pw", "out_h", "out_w")
LANES = {np.dtype(np.float32): 8, np.dtype(np.float64): 4}  # values per 32-byte vector in native.c
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


class Geometry(ctypes.Structure):
    """native.c's Geometry: input, padding, kernel, strides, pool window and pooled size, as int64."""

    _fields_ = [(name, ctypes.c_int64) for name in _FIELDS]


class ConvGeometry(ctypes.Structure):
    """native_igemm.h's ConvGeometry: the padded chunk (m, hp, wp, cin), kernel, strides, output size, cout."""

    _fields_ = [(name, ctypes.c_int64) for name in ("m", "hp", "wp", "cin", "fh", "fw", "sh", "sw")]
    _fields_ += [(name, ctypes.c_int64) for name in ("out_h", "out_w", "cout")]


class PoolGeometry(ctypes.Structure):
    """native.c's PoolGeometry: NHWC input, TF padding (top, left), window, strides and output size, as int64."""

    _fields_ = [(name, ctypes.c_int64) for name in ("n", "h", "w", "c", "top", "left", "kh", "kw", "sh", "sw")]
    _fields_ += [("out_h", ctypes.c_int64), ("out_w", ctypes.c_int64)]


_library: ctypes.CDLL | None = None
_load_error: str | None = None


def _load() -> ctypes.CDLL | None:
    global _library, _load_error
    if _library is None and _load_error is None:
        spec = importlib.util.find_spec("xpnn.backends._native")
        if spec is None or not spec.origin:
            _load_error = "xpnn.backends._native was not built (no C compiler at install time?)"
            return None
        try:
            lib = ctypes.CDLL(spec.origin)
        except OSError as exc:
            _load_error = f"could not load {spec.origin}: {exc}"
            return None
        pointer, geometry = ctypes.c_void_p, ctypes.POINTER(Geometry)
        for suffix in _SUFFIX.values():
            forward = getattr(lib, f"conv_relu_pool_forward_{suffix}")
            forward.argtypes = [pointer, pointer, geometry, pointer, pointer]
            forward.restype = ctypes.c_int
            backward = getattr(lib, f"conv_relu_pool_backward_{suffix}")
            backward.argtypes = [pointer, pointer, geometry, pointer, pointer, pointer, pointer]
            backward.restype = ctypes.c_int
            scalar = ctypes.c_float if suffix == "f32" else ctypes.c_double
            adam = getattr(lib, f"adam_update_{suffix}")
            adam.argtypes, adam.restype = [*[pointer] * 4, ctypes.c_int64, *[scalar] * 4], None
            transpose = getattr(lib, f"transpose_{suffix}")
            transpose.argtypes, transpose.restype = [pointer, ctypes.c_int64, ctypes.c_int64, pointer], None
            lib.gemm_f32.argtypes = [pointer, *[ctypes.c_int64] * 2, pointer, pointer, *[ctypes.c_int64] * 3]
            lib.gemm_f32.restype = ctypes.c_int
            lib.gemm_bias_relu_f32.argtypes = [*lib.gemm_f32.argtypes, pointer, ctypes.c_int]
            lib.gemm_bias_relu_f32.restype = ctypes.c_int
            conv = ctypes.POINTER(ConvGeometry)
            lib.conv_gemm_f32.argtypes = [pointer, conv, pointer, ctypes.c_int64, *[pointer] * 3, ctypes.c_int, pointer]
            lib.conv_gemm_f32.restype = ctypes.c_int
            lib.conv_weight_grad_f32.argtypes = [pointer, conv, pointer, pointer]
            lib.conv_weight_grad_f32.restype = ctypes.c_int
            lib.conv_avx512_runs.argtypes, lib.conv_avx512_runs.restype = [], ctypes.c_int
            lib.conv_weight_grad_taps_f32.argtypes = [pointer, conv, pointer, pointer]
            lib.conv_weight_grad_taps_f32.restype = ctypes.c_int
            lib.conv_input_grad_f32.argtypes = [pointer, pointer, ctypes.POINTER(PoolGeometry), ctypes.c_int64, pointer]
            lib.conv_input_grad_f32.restype = ctypes.c_int
            pool = ctypes.POINTER(PoolGeometry)
            for name, args in (
                ("max_pool_forward", [pointer, pool, pointer, pointer, ctypes.c_int64]),
                ("max_pool_backward", [pointer, pointer, ctypes.c_int64, pool, pointer]),
                ("avg_pool_forward", [pointer, pointer, pool, pointer]),
                ("avg_pool_backward", [pointer, pointer, pool, pointer]),
                ("col2im", [pointer, pool, pointer]),
                ("relu_grad", [pointer, pointer, ctypes.c_int64, pointer]),
                ("column_sum", [pointer, ctypes.c_int64, ctypes.c_int64, pointer]),
            ):
                fn = getattr(lib, f"{name}_{suffix}")
                fn.argtypes, fn.restype = args, ctypes.c_int
        _library = lib
    return _library


def built() -> bool:
    """Whether the native library was built and loads (whatever XPNN_NATIVE says)."""
    return _load() is not None


def status() -> str:
    """One line for reports: on, off (XPNN_NATIVE=0) or why it is missing."""
    if not built():
        return f"missing: {_load_error}"
    return "on" if enabled() else "off (XPNN_NATIVE=0)"


def enabled() -> bool:
    """Whether the fused unit should call the native kernels: built, and not switched off by XPNN_NATIVE=0."""
    flag = os.environ.get("XPNN_NATIVE", "1").strip()
    if flag not in ("0", "1"):
        raise ValueError(f"XPNN_NATIVE must be 0 (NumPy twin) or 1 (native kernels when built); received {flag!r}.")
    return flag == "1" and built()


def takes(x) -> bool:
    """Whether layer math on array `x` runs these kernels: the NumPy backend, float32/64, built and enabled."""
    from xpnn.backends import get_backend

    return get_backend().name == "numpy" and supports(x.dtype) and enabled()


def avx512_switch() -> ctypes.c_int:
    """native.c's `xpnn_avx512`: 1 lets float32 conv forwards and max pool forwards (native_pool.h, float32 and
    float64) take their AVX-512 kernels where the CPU and geometry allow, 0 keeps them on the generic ones
    (tests compare the two)."""
    lib = _load()
    if lib is None:
        raise RuntimeError(f"native kernels {status()}")
    return ctypes.c_int.in_dll(lib, "xpnn_avx512")


def supports(dtype: np.dtype) -> bool:
    """Whether the native kernels take arrays of this dtype (float32 and float64)."""
    return np.dtype(dtype) in _SUFFIX


def geometry(x_shape, w_shape, pads, strides, pool, pooled_hw) -> Geometry:
    """The Geometry of one call on images of `x_shape`, kernel `w_shape`, TF pads, conv strides and pool window."""
    n, h, w, cin = x_shape
    fh, fw, _, cout = w_shape
    (top, bottom), (left, right) = pads
    return Geometry(
        n, h, w, cin, top, left, h + top + bottom, w + left + right, fh, fw, cout, *strides, *pool, *pooled_hw
    )


def _address(a: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, name: str) -> int:
    """The data pointer of `a`, after checking what native.c will assume of it (a mismatch would corrupt memory)."""
    if a.shape != tuple(shape) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(
            f"native kernel argument {name}: expected a C-contiguous {np.dtype(dtype)} array of shape "
            f"{tuple(shape)}; got {a.dtype} {a.shape} (contiguous: {a.flags.c_contiguous})"
        )
    return a.ctypes.data


def _check(code: int, what: str) -> None:
    if code != 0:
        raise MemoryError(f"native {what}: out of memory for one padded image")


def kernel_lanes(w: np.ndarray) -> np.ndarray:
    """The (fh, fw, cin, cout) kernel with cout padded by zeros to whole vectors, as the forward reads it."""
    lanes = LANES[w.dtype]
    cout = w.shape[3]
    padded = np.zeros((*w.shape[:3], -(-cout // lanes) * lanes), dtype=w.dtype)
    padded[..., :cout] = w
    return padded


def kernel_rows(w: np.ndarray) -> np.ndarray:
    """The kernel as (cout, fh·fw·cin), each output channel's weights contiguous, as the backward reads it."""
    return np.ascontiguousarray(w.reshape(-1, w.shape[3]).T)


def conv_relu_pool_forward(
    x: np.ndarray, w_lanes: np.ndarray, g: Geometry, pooled: np.ndarray, argmax: np.ndarray
) -> None:
    """Fill pooled (n, out_h, out_w, cout) with each window's conv max (no bias) and argmax with its first cell."""
    fn = getattr(_load(), f"conv_relu_pool_forward_{_SUFFIX[x.dtype]}")
    lanes = LANES[x.dtype]
    out = (g.n, g.out_h, g.out_w, g.cout)
    code = fn(
        _address(x, (g.n, g.h, g.w, g.cin), x.dtype, "x"),
        _address(w_lanes, (g.fh, g.fw, g.cin, -(-g.cout // lanes) * lanes), x.dtype, "w_lanes"),
        ctypes.byref(g),
        _address(pooled, out, x.dtype, "pooled"),
        _address(argmax, out, np.dtype(np.int64), "argmax"),
    )
    _check(code, "forward")


def conv_relu_pool_backward(
    x: np.ndarray,
    w_rows: np.ndarray,
    g: Geometry,
    argmax: np.ndarray,
    grad: np.ndarray,
    dw_rows: np.ndarray,
    dx: np.ndarray | None,
) -> None:
    """Add each winner's patch · gradient into dw_rows (cout, fh·fw·cin); with dx, write the input gradient."""
    fn = getattr(_load(), f"conv_relu_pool_backward_{_SUFFIX[x.dtype]}")
    x_shape, out = (g.n, g.h, g.w, g.cin), (g.n, g.out_h, g.out_w, g.cout)
    rows = (g.cout, g.fh * g.fw * g.cin)
    code = fn(
        _address(x, x_shape, x.dtype, "x"),
        _address(w_rows, rows, x.dtype, "w_rows"),
        ctypes.byref(g),
        _address(argmax, out, np.dtype(np.int64), "argmax"),
        _address(grad, out, x.dtype, "grad"),
        _address(dw_rows, rows, x.dtype, "dw_rows"),
        None if dx is None else _address(dx, x_shape, x.dtype, "dx"),
    )
    _check(code, "backward")


# ---- pooling (native_pool.h) ------------------------------------------------------------------------------
def pool_geometry(x_shape, pads, pool_size, strides, out_hw) -> PoolGeometry:
    """The PoolGeometry of one pooling call on NHWC `x_shape` with TF pads, window, strides and output size."""
    (top, _), (left, _) = pads
    return PoolGeometry(*x_shape, top, left, *pool_size, *strides, *out_hw)


def _pool_shapes(g: PoolGeometry) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (g.n, g.h, g.w, g.c), (g.n, g.out_h, g.out_w, g.c)


def winner_dtype(cells: int) -> np.dtype:
    """The dtype of a max pool's winners (each window's winning cell, 0 ≤ cell < `cells`): the narrowest that
    native_pool.h writes, uint8 for windows of up to 256 cells, else int32."""
    return np.dtype(np.uint8) if cells <= 256 else np.dtype(np.int32)


def max_pool_forward(x: np.ndarray, g: PoolGeometry, out: np.ndarray, argmax: np.ndarray) -> None:
    """out = each window's max, argmax (winner_dtype) = its first winning cell, as maxpool_forward."""
    x_shape, out_shape = _pool_shapes(g)
    fn = getattr(_load(), f"max_pool_forward_{_SUFFIX[x.dtype]}")
    winners = winner_dtype(g.kh * g.kw)
    code = fn(
        _address(x, x_shape, x.dtype, "x"),
        ctypes.byref(g),
        _address(out, out_shape, x.dtype, "out"),
        _address(argmax, out_shape, winners, "argmax"),
        winners.itemsize,
    )
    _check(code, "max pool forward")


def max_pool_backward(dout: np.ndarray, argmax: np.ndarray, g: PoolGeometry, dx: np.ndarray) -> None:
    """dx = each input cell's sum of the gradients of the windows it won, as maxpool_backward."""
    x_shape, out_shape = _pool_shapes(g)
    fn = getattr(_load(), f"max_pool_backward_{_SUFFIX[dout.dtype]}")
    winners = winner_dtype(g.kh * g.kw)
    code = fn(
        _address(dout, out_shape, dout.dtype, "dout"),
        _address(argmax, out_shape, winners, "argmax"),
        winners.itemsize,
        ctypes.byref(g),
        _address(dx, x_shape, dout.dtype, "dx"),
    )
    _check(code, "max pool backward")


def avg_pool_forward(x: np.ndarray, counts: np.ndarray, g: PoolGeometry, out: np.ndarray) -> None:
    """out = each window's sum of real cells / counts (out_h, out_w), as avgpool_forward."""
    x_shape, out_shape = _pool_shapes(g)
    fn = getattr(_load(), f"avg_pool_forward_{_SUFFIX[x.dtype]}")
    code = fn(
        _address(x, x_shape, x.dtype, "x"),
        _address(counts, (g.out_h, g.out_w), x.dtype, "counts"),
        ctypes.byref(g),
        _address(out, out_shape, x.dtype, "out"),
    )
    _check(code, "average pool forward")


def avg_pool_backward(dout: np.ndarray, counts: np.ndarray, g: PoolGeometry, dx: np.ndarray) -> None:
    """dx = each input cell's sum of dout / counts over the windows that hold it, as avgpool_backward."""
    x_shape, out_shape = _pool_shapes(g)
    fn = getattr(_load(), f"avg_pool_backward_{_SUFFIX[dout.dtype]}")
    code = fn(
        _address(dout, out_shape, dout.dtype, "dout"),
        _address(counts, (g.out_h, g.out_w), dout.dtype, "counts"),
        ctypes.byref(g),
        _address(dx, x_shape, dout.dtype, "dx"),
    )
    _check(code, "average pool backward")


def col2im(dcols: np.ndarray, g: PoolGeometry, dx: np.ndarray) -> None:
    """dx (n, h, w, c) = dcols (n·out_h·out_w, kh·kw·c) added back over its windows, cropped (native_conv.h),
    as conv_chunks' NumPy `_add_windows`; g describes the conv's windows (kh, kw = its kernel)."""
    x_shape = (g.n, g.h, g.w, g.c)
    fn = getattr(_load(), f"col2im_{_SUFFIX[dx.dtype]}")
    code = fn(
        _address(dcols, (g.n * g.out_h * g.out_w, g.kh * g.kw * g.c), dx.dtype, "dcols"),
        ctypes.byref(g),
        _address(dx, x_shape, dx.dtype, "dx"),
    )
    _check(code, "col2im")


def relu_grad(dout: np.ndarray, out: np.ndarray, d: np.ndarray) -> None:
    """d = dout · (out > 0), the ReLU's gradient from its output, in one pass (native_conv.h): the bits of
    numpy.multiply(dout, out > 0). All three C-contiguous of one shape and dtype."""
    fn = getattr(_load(), f"relu_grad_{_SUFFIX[d.dtype]}")
    code = fn(
        _address(dout, d.shape, d.dtype, "dout"),
        _address(out, d.shape, d.dtype, "out"),
        d.size,
        _address(d, d.shape, d.dtype, "d"),
    )
    _check(code, "relu_grad")


def column_sum(d: np.ndarray, db: np.ndarray) -> None:
    """db (c,) = d (n, c) summed over its rows in order, the bits of d.sum(axis=0) (native_conv.h), where NumPy
    ran at ~9 GB/s on this reduction."""
    n, c = d.shape
    fn = getattr(_load(), f"column_sum_{_SUFFIX[d.dtype]}")
    _check(fn(_address(d, (n, c), d.dtype, "d"), n, c, _address(db, (c,), d.dtype, "db")), "column_sum")


# ---- float32 GEMM (native_gemm.h) ------------------------------------------------------------------------------
def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, bias: np.ndarray | None = None, relu: bool = False) -> bool:
    """out = a @ b with native.c's AVX-512 float32 GEMM, where it runs; False (out untouched) where it does not.

    It runs for float32, b and out C-contiguous, b's columns a multiple of 16, a with any whole-element
    strides (a transposed view included), on a CPU with AVX-512F and the switch on (`avx512_switch`). Each
    output is one in-order sum over the inner dimension: the same bits however the caller splits the rows.
    With `bias` (a C-contiguous float32 (n,)) the sums get `+ bias`, then with `relu` max(·, 0), in registers
    before the store: the bits of `out += bias` and `numpy.maximum(out, 0.0, out=out)`.
    """
    f32 = np.dtype(np.float32)
    if a.dtype != f32 or b.dtype != f32 or out.dtype != f32 or a.ndim != 2 or b.ndim != 2:
        return False
    (m, k), n = a.shape, b.shape[1]
    if b.shape[0] != k or out.shape != (m, n) or n % 16 or not (b.flags.c_contiguous and out.flags.c_contiguous):
        return False
    if a.strides[0] % 4 or a.strides[1] % 4:
        return False
    if bias is not None and (bias.dtype != f32 or bias.shape != (n,) or not bias.flags.c_contiguous):
        return False
    lib = _load()
    if lib is None:
        return False
    args = (a.ctypes.data, a.strides[0] // 4, a.strides[1] // 4, b.ctypes.data, out.ctypes.data, m, k, n)
    if bias is None and not relu:
        return lib.gemm_f32(*args) == 0
    return lib.gemm_bias_relu_f32(*args, None if bias is None else bias.ctypes.data, int(relu)) == 0


# ---- float32 convolution without the im2col copy (native_igemm.h) ------------------------------------------------
def _conv_geometry(x_pad: np.ndarray, k_hw, strides, out_hw, cout: int) -> ConvGeometry | None:
    """The ConvGeometry of a conv on the padded chunk x_pad, or None where the kernels do not take it (not a
    C-contiguous float32 NHWC array, or windows that would reach past it)."""
    f32 = np.dtype(np.float32)
    if x_pad.dtype != f32 or x_pad.ndim != 4 or not x_pad.flags.c_contiguous:
        return None
    (m, hp, wp, cin), (fh, fw), (sh, sw), (oh, ow) = x_pad.shape, k_hw, strides, out_hw
    if min(fh, fw, sh, sw, oh, ow, m, cin) < 1 or (oh - 1) * sh + fh > hp or (ow - 1) * sw + fw > wp:
        return None
    return ConvGeometry(m, hp, wp, cin, fh, fw, sh, sw, oh, ow, cout)


def conv_runs(x: np.ndarray, cout: int) -> bool:
    """Whether `conv_gemm` runs a float32 conv with cout outputs on `x` here (AVX-512F and the switch on), so
    that the caller can size its chunks for no columns (any cout > 0)."""
    lib = _load() if takes(x) else None
    return lib is not None and x.dtype == np.float32 and cout > 0 and lib.conv_avx512_runs() == 1


def _whole_vectors(a: np.ndarray) -> np.ndarray:
    """a (rows, c) or (c,) itself when c is a multiple of 16, else a copy with zero channels up to one: the
    AVX-512 kernels read whole 16-lane vectors, and a zero channel adds nothing to the others' sums."""
    c = a.shape[-1]
    if c % 16 == 0:
        return a
    out = np.zeros((*a.shape[:-1], c + 16 - c % 16), dtype=a.dtype)
    out[..., :c] = a
    return out


def conv_gemm(
    x_pad: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    strides,
    out_hw,
    relu: bool,
    out: np.ndarray,
    affine: tuple[np.ndarray, np.ndarray] | None = None,
) -> bool:
    """out (m, out_h, out_w, cout) = the im2col columns of x_pad (m, hp, wp, cin) · w (fh, fw, cin, cout), + b,
    then · scale + shift with `affine` (an inference BatchNormalization's (inv, shift), each (cout,)), then
    max(·, 0) with `relu`, read from x_pad in place; True where it ran, False (out untouched) where not.

    It runs for float32 on a CPU with AVX-512F and the switch on, and gives the bits of `gemm` on the copied
    columns (cout padded to whole vectors), then `out += b`, `out *= scale; out += shift` and
    `maximum(out, 0.0)` (native_igemm.h).
    """
    lib, cout, f32 = _load(), w.shape[-1], np.dtype(np.float32)
    if lib is None or w.ndim != 4 or cout < 1 or w.shape[2] != x_pad.shape[-1]:
        return False
    vectors = [v for v in (b, *(affine or ())) if v is not None]
    if w.dtype != f32 or out.dtype != f32 or any(v.dtype != f32 or v.shape != (cout,) for v in vectors):
        return False
    g = _conv_geometry(x_pad, w.shape[:2], strides, out_hw, cout)
    if g is None:
        return False
    k = g.fh * g.fw * g.cin
    w_rows = _whole_vectors(np.ascontiguousarray(w).reshape(k, cout))
    ldw = w_rows.shape[1]

    scale, shift = affine if affine is not None else (None, None)
    b_rows, scale_rows, shift_rows = (
        v if v is None else _whole_vectors(np.ascontiguousarray(v)) for v in (b, scale, shift)
    )
    code = lib.conv_gemm_f32(
        x_pad.ctypes.data,
        ctypes.byref(g),
        _address(w_rows, (k, ldw), f32, "w"),
        ldw,
        *(
            None if v is None else _address(v, (ldw,), f32, name)
            for v, name in ((b_rows, "b"), (scale_rows, "scale"), (shift_rows, "shift"))
        ),
        int(relu),
        _address(out, (g.m, g.out_h, g.out_w, cout), f32, "out"),
    )
    return code == 0


def conv_weight_grad(x_pad: np.ndarray, k_hw, strides, out_hw, grad: np.ndarray, dwt: np.ndarray) -> bool:
    """dwt (cout, fh·fw·cin) = gradᵀ · the im2col columns of x_pad, grad (m·out_h·out_w, cout), each value one
    in-order sum over the pixels (the bits of `gemm(grad.T, cols, dwt)`); True where it ran, False (dwt
    untouched) where not: float32, fw·cin a multiple of 16, AVX-512F and the switch on."""
    lib, f32 = _load(), np.dtype(np.float32)
    if lib is None or grad.ndim != 2 or (k_hw[1] * x_pad.shape[-1]) % 16 or grad.dtype != f32 or dwt.dtype != f32:
        return False
    cout = grad.shape[1]
    g = _conv_geometry(x_pad, k_hw, strides, out_hw, cout)
    if g is None:
        return False
    code = lib.conv_weight_grad_f32(
        x_pad.ctypes.data,
        ctypes.byref(g),
        _address(grad, (g.m * g.out_h * g.out_w, cout), f32, "grad"),
        _address(dwt, (cout, g.fh * g.fw * g.cin), f32, "dwt"),
    )
    return code == 0


def conv_weight_grad_taps(x_pad: np.ndarray, k_hw, strides, out_hw, grad: np.ndarray, dw: np.ndarray) -> bool:
    """dw (fh·fw·cin, cout) = the im2col columns of x_padᵀ · grad (m·out_h·out_w, cout), each value one in-order
    sum over the pixels (the bits of `gemm(cols.T, grad, dw)`), for window rows fw·cin of any length; True where
    it ran, False (dw untouched) where not: float32, AVX-512F and the switch on."""
    lib, f32 = _load(), np.dtype(np.float32)
    if lib is None or grad.ndim != 2 or grad.shape[1] < 1 or grad.dtype != f32 or dw.dtype != f32:
        return False
    cout = grad.shape[1]
    g = _conv_geometry(x_pad, k_hw, strides, out_hw, cout)
    if g is None or dw.shape != (g.fh * g.fw * g.cin, cout):
        return False
    grad_rows = _whole_vectors(grad)  # zero channels: their dw columns are dropped below
    g.cout = grad_rows.shape[1]
    dw_rows = dw if g.cout == cout else np.empty((dw.shape[0], g.cout), f32)
    code = lib.conv_weight_grad_taps_f32(
        x_pad.ctypes.data,
        ctypes.byref(g),
        _address(grad_rows, (g.m * g.out_h * g.out_w, g.cout), f32, "grad"),
        _address(dw_rows, (g.fh * g.fw * g.cin, g.cout), f32, "dw"),
    )
    if code == 0 and dw_rows is not dw:
        dw[...] = dw_rows[:, :cout]
    return code == 0


def conv_input_grad(grad: np.ndarray, wt: np.ndarray, g: PoolGeometry, dx: np.ndarray) -> bool:
    """dx (n, h, w, c) = grad (n, out_h, out_w, cout) · wt (cout, kh·kw·c) added back over the windows of g,
    without the columns: the bits of `gemm(grad rows, wt, dcols)` then `col2im(dcols, g, dx)`. True where it ran,
    False (dx untouched) where not: float32, c a multiple of 16, AVX-512F and the switch on."""
    lib, f32 = _load(), np.dtype(np.float32)
    if lib is None or grad.ndim != 4 or g.c % 16 or grad.dtype != f32 or wt.dtype != f32 or dx.dtype != f32:
        return False
    cout = grad.shape[3]
    code = lib.conv_input_grad_f32(
        _address(grad, (g.n, g.out_h, g.out_w, cout), f32, "grad"),
        _address(wt, (cout, g.kh * g.kw * g.c), f32, "wt"),
        ctypes.byref(g),
        cout,
        _address(dx, (g.n, g.h, g.w, g.c), f32, "dx"),
    )
    return code == 0


# ---- optimizer updates (native_optim.h) --------------------------------------------------------------------------
def adam_update(w, g, m, v, alpha: float, one_minus_beta_1: float, one_minus_beta_2: float, epsilon: float) -> bool:
    """TensorFlow's ApplyAdam in place in one pass (native_optim.h), the same bits as numpy_backend.adam_update.

    False (nothing touched) where it does not run: another backend or dtype, XPNN_NATIVE=0, the library
    missing, arrays that are not four C-contiguous arrays of one shape and dtype, or a NumPy scalar among the
    hyperparameters (NumPy would then compute float32 arrays' update in float64; Python floats keep it in float32).
    """
    if not (isinstance(w, np.ndarray) and supports(w.dtype) and enabled()):
        return False
    if any(type(s) not in (float, int) for s in (alpha, one_minus_beta_1, one_minus_beta_2, epsilon)):
        return False
    for a in (w, g, m, v):
        if not isinstance(a, np.ndarray) or a.shape != w.shape or a.dtype != w.dtype or not a.flags.c_contiguous:
            return False
    fn = getattr(_load(), f"adam_update_{_SUFFIX[w.dtype]}")
    fn(
        w.ctypes.data,
        g.ctypes.data,
        m.ctypes.data,
        v.ctypes.data,
        w.size,
        alpha,
        one_minus_beta_1,
        one_minus_beta_2,
        epsilon,
    )
    return True


# ---- layout (native_transpose.h) ---------------------------------------------------------------------------------
def transposed_copy(a: np.ndarray) -> np.ndarray | None:
    """A C-contiguous copy of the 2-D view `a` whose transpose `a.T` is C-contiguous (e.g. Wᵀ of a weight W), in
    cache-blocked tiles: numpy.ascontiguousarray(a)'s bits, several times faster. None where it does not run
    (another backend or dtype, a view of another layout, the kernels off or missing)."""
    if not (isinstance(a, np.ndarray) and a.ndim == 2 and supports(a.dtype) and a.T.flags.c_contiguous):
        return None
    if not enabled():
        return None
    out = np.empty(a.shape, dtype=a.dtype)
    src = a.T  # C-contiguous (cols, rows) of the caller's view
    getattr(_load(), f"transpose_{_SUFFIX[a.dtype]}")(src.ctypes.data, src.shape[0], src.shape[1], out.ctypes.data)
    return out


# ---- BatchNormalization (native_norm.h) ---------------------------------------------------------------------
_NORM_ARGS = {  # pointers (p) and int64 (i), in the C signature's order
    "bn_block_sums": "ppiiiip",
    "bn_backward_sums": "ppppppiiiipp",
    "bn_apply": "pppiiip",
    "bn_backward_apply": "pppppppppiip",
}


def _norm_fn(name: str, dtype: np.dtype):
    """native_norm.h's `name` for this dtype, its ctypes signature declared on first use."""
    fn = getattr(_load(), f"{name}_{_SUFFIX[dtype]}")
    if fn.argtypes is None:
        fn.argtypes = [ctypes.c_void_p if k == "p" else ctypes.c_int64 for k in _NORM_ARGS[name]]
        fn.restype = ctypes.c_int
    return fn


def _optional(a: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype, name: str) -> int | None:
    return None if a is None else _address(a, shape, dtype, name)


def _blocks(rows: int, block: int, lanes: int) -> int:
    """The number of reduction blocks, after checking that whole blocks split into whole lanes."""
    if block < 1 or lanes < 1 or block % lanes:
        raise ValueError(f"native batch norm: block ({block}) must be a positive multiple of lanes ({lanes})")
    return -(-rows // block)


def bn_block_sums(x: np.ndarray, mean: np.ndarray | None, block: int, lanes: int, partial: np.ndarray) -> None:
    """partial (blocks, c) = each block of `block` rows of x (rows, c) summed: of x, or with mean of (x − mean)²;
    a whole block as `lanes` interleaved lanes then the lanes in order, the short last block in row order
    (native_norm.h). mean holds lanes·c values (the c means repeated)."""
    rows, c = x.shape
    code = _norm_fn("bn_block_sums", x.dtype)(
        _address(x, (rows, c), x.dtype, "x"),
        _optional(mean, (lanes * c,), x.dtype, "mean"),
        rows,
        c,
        block,
        lanes,
        _address(partial, (_blocks(rows, block, lanes), c), x.dtype, "partial"),
    )
    _check(code, "batch norm sums")


def bn_backward_sums(
    dout: np.ndarray,
    x: np.ndarray,
    relu: tuple[np.ndarray, np.ndarray] | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    block: int,
    lanes: int,
    dbeta: np.ndarray,
    dgamma: np.ndarray,
) -> None:
    """dbeta, dgamma (blocks, c) = each block's Σd and Σd·(x − mean)·rstd, blocked as bn_block_sums; d = dout,
    or with the fused ReLU's relu = (inv, shift) dout·(x·inv + shift > 0); dout and x are (rows, c), every
    vector lanes·c values (each c repeated)."""
    rows, c = x.shape
    dtype, vec, parts = x.dtype, (lanes * c,), (_blocks(rows, block, lanes), c)
    inv, shift = (None, None) if relu is None else relu
    code = _norm_fn("bn_backward_sums", dtype)(
        _address(dout, (rows, c), dtype, "dout"),
        _address(x, (rows, c), dtype, "x"),
        _optional(inv, vec, dtype, "inv"),
        _optional(shift, vec, dtype, "shift"),
        _address(mean, vec, dtype, "mean"),
        _address(rstd, vec, dtype, "rstd"),
        rows,
        c,
        block,
        lanes,
        _address(dbeta, parts, dtype, "dbeta"),
        _address(dgamma, parts, dtype, "dgamma"),
    )
    _check(code, "batch norm backward sums")


def bn_apply(x: np.ndarray, inv: np.ndarray, shift: np.ndarray, relu: bool, out: np.ndarray) -> None:
    """out (rows, c) = x·inv + shift (inv, shift (c)), then max(·, 0) with relu: BatchNormalization's output."""
    rows, c = x.shape
    code = _norm_fn("bn_apply", x.dtype)(
        _address(x, (rows, c), x.dtype, "x"),
        _address(inv, (c,), x.dtype, "inv"),
        _address(shift, (c,), x.dtype, "shift"),
        rows,
        c,
        int(bool(relu)),
        _address(out, (rows, c), x.dtype, "out"),
    )
    _check(code, "batch norm apply")


def bn_backward_apply(
    dout: np.ndarray,
    x: np.ndarray,
    relu: tuple[np.ndarray, np.ndarray] | None,
    mean: np.ndarray | None,
    rstd: np.ndarray,
    scale: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    dx: np.ndarray,
) -> None:
    """dx (rows, c) = ((d − a) − (x − mean)·rstd·b)·scale in training, d·scale in inference (mean None);
    d as in bn_backward_sums, every vector (c)."""
    rows, c = dout.shape
    dtype, vec = dout.dtype, (c,)
    inv, shift = (None, None) if relu is None else relu
    code = _norm_fn("bn_backward_apply", dtype)(
        _address(dout, (rows, c), dtype, "dout"),
        _address(x, (rows, c), dtype, "x"),
        _optional(inv, vec, dtype, "inv"),
        _optional(shift, vec, dtype, "shift"),
        _optional(mean, vec, dtype, "mean"),
        _address(rstd, vec, dtype, "rstd"),
        _address(scale, vec, dtype, "scale"),
        _address(a, vec, dtype, "a"),
        _address(b, vec, dtype, "b"),
        rows,
        c,
        _address(dx, (rows, c), dtype, "dx"),
    )
    _check(code, "batch norm backward apply")
