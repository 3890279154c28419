"""native_igemm.h's implicit-GEMM conv (no im2col copy) against conv_chunks' im2col + GEMM path, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import Conv2D, Sequential
from xpnn.backends import native
from xpnn.layers import conv_chunks

pytestmark = pytest.mark.skipif(not native.built(), reason="native kernels not built")


@pytest.fixture(autouse=True)
def numpy_backend():
    return xpnn.set_backend("numpy")


def _avx512() -> bool:
    """Whether the AVX-512 GEMM runs here (else both paths copy columns and the comparison is trivial)."""
    a, b = np.ones((1, 1), np.float32), np.ones((1, 16), np.float32)
    return native.gemm(a, b, np.empty((1, 16), np.float32))


GEOMETRIES = [
    # input (h, w, cin), filters, kernel, strides, padding
    ((13, 11, 3), 16, 3, 1, "same"),
    ((12, 12, 1), 32, 5, 2, "same"),
    ((17, 15, 5), 48, 3, 3, "valid"),
    ((9, 9, 32), 64, 3, 1, "same"),
    ((10, 7, 32), 32, (3, 2), (2, 1), "same"),
    ((11, 11, 3), 10, 3, 1, "valid"),  # cout not a multiple of 16: the last vector masked
    ((7, 9, 16), 16, (2, 3), (1, 2), "valid"),
    ((15, 15, 32), 48, 5, 2, "same"),  # fw·cin a multiple of 16: the weight gradient runs in place too
    ((8, 8, 4), 64, 4, 1, "same"),  # fw·cin = 16
    ((5, 29, 3), 16, 1, 1, "valid"),  # a row of 29 pixels: blocks of 10 and 9 (16 channels)
    ((14, 13, 16), 32, 4, 3, "same"),  # stride 3 and an even kernel: the input gradient's three phases
    ((6, 5, 48), 16, 3, 2, "valid"),  # 48 channels: input-gradient panels of 32 and 16
    ((3, 3, 64), 16, 3, 1, "same"),  # rows shorter than the kernel
]
MORE_COUT = [((7, 8, 3), 7, 3, 1, "same"), ((9, 9, 16), 40, 3, 2, "valid"), ((6, 6, 5), 58, 2, 1, "same")]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


def _layer(shape, filters, kernel, strides, padding, use_bias=True, seed=0) -> Conv2D:
    conv = Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias)
    Sequential([conv], dtype="float32").build(shape, seed=seed)
    if use_bias:
        conv.params["b"][...] = np.random.default_rng(seed).standard_normal(filters)
    return conv


def _run(conv, x, relu, implicit, monkeypatch):
    monkeypatch.setattr(conv_chunks, "IMPLICIT_GEMM", implicit)
    w, b = conv.params["w"], conv.params.get("b")
    out, cache = conv_chunks.conv2d_forward_chunked(conv, x, w, b, conv.strides, conv.padding, relu=relu)
    dout = np.cos(np.arange(out.size, dtype=np.float32)).reshape(out.shape)
    dx, grads = conv_chunks.conv2d_backward_chunked(conv, dout, cache, relu_out=out if relu else None)
    return out, dx, grads


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES + MORE_COUT)
def test_implicit_conv_gives_the_im2col_bits(geometry, use_bias, relu, monkeypatch):
    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1 << 13)  # several chunks per batch
    shape, filters, kernel, strides, padding = geometry
    conv = _layer(shape, filters, kernel, strides, padding, use_bias)
    x = np.random.default_rng(1).standard_normal((5, *shape)).astype(np.float32)
    got = _run(conv, x, relu, True, monkeypatch)
    want = _run(conv, x, relu, False, monkeypatch)
    blas = _avx512() and filters % 16 != 0  # the im2col path's BLAS sums in its own order: see the tests below
    assert set(got[2]) == set(want[2])
    pairs = [("out", got[0], want[0]), ("dx", got[1], want[1])] + [(k, got[2][k], want[2][k]) for k in got[2]]
    for key, a, b in pairs:
        if blas or (key == "w" and _taps_path(conv)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
        else:
            np.testing.assert_array_equal(_bits(a), _bits(b))


def _taps_path(conv: Conv2D) -> bool:
    """Whether the weight gradient runs conv_weight_grad_taps: window rows not whole vectors."""
    fw, cin = conv.params["w"].shape[1:3]
    return _avx512() and (fw * cin) % 16 != 0


def _chunk(geometry, seed=4):
    """A padded chunk of 3 images for `geometry`, its layer, the output size and the im2col columns."""
    from xpnn.layers.padding import output_size, pads_2d

    shape, filters, kernel, strides, padding = geometry
    conv = _layer(shape, filters, kernel, strides, padding)
    (fh, fw), (sh, sw) = conv.kernel_size, conv.strides
    out_hw = (output_size(shape[0], fh, sh, padding), output_size(shape[1], fw, sw, padding))
    (top, bottom), (left, right) = pads_2d(shape[:2], (fh, fw), (sh, sw), padding)
    x_pad = np.zeros((3, shape[0] + top + bottom, shape[1] + left + right, shape[2]), np.float32)
    x_pad[:, top : top + shape[0], left : left + shape[1]] = np.random.default_rng(seed).standard_normal((3, *shape))
    cols = conv_chunks.window_view(x_pad, (fh, fw), (sh, sw), out_hw).reshape(3 * out_hw[0] * out_hw[1], -1)
    return conv, x_pad, out_hw, cols


def _whole_vectors(a: np.ndarray) -> np.ndarray:
    """a (rows, c) with zero columns up to a multiple of 16, which native_gemm.h takes (the same sums per column)."""
    out = np.zeros((a.shape[0], -(-a.shape[1] // 16) * 16), a.dtype)
    out[:, : a.shape[1]] = a
    return out


@pytest.mark.skipif(not _avx512(), reason="no AVX-512F: the implicit kernels do not run")
@pytest.mark.parametrize("geometry", GEOMETRIES + MORE_COUT)
def test_tap_major_weight_gradient_gives_the_gemm_bits(geometry):
    """conv_weight_grad_taps on a padded chunk against native_gemm.h on its copied columns' transpose."""
    conv, x_pad, out_hw, cols = _chunk(geometry)
    filters = geometry[1]
    g = np.random.default_rng(5).standard_normal((len(cols), filters)).astype(np.float32)
    want = np.empty((cols.shape[1], -(-filters // 16) * 16), np.float32)
    assert native.gemm(cols.T, _whole_vectors(g), want)
    got = np.full((cols.shape[1], filters), np.nan, np.float32)
    assert native.conv_weight_grad_taps(x_pad, conv.kernel_size, conv.strides, out_hw, g, got)
    np.testing.assert_array_equal(_bits(got), _bits(want[:, :filters]))


@pytest.mark.skipif(not _avx512(), reason="no AVX-512F: the implicit kernels do not run")
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES + MORE_COUT)
def test_implicit_forward_gives_the_gemm_bits_for_any_cout(geometry, relu):
    """conv_gemm (cout's last vector masked) against native_gemm.h on the columns with the kernel's cout padded
    by zeros to whole vectors, then + b and max(·, 0) as the NumPy path does."""
    conv, x_pad, out_hw, cols = _chunk(geometry)
    w, b = conv.params["w"], conv.params["b"]
    filters = w.shape[3]
    full = np.empty((len(cols), -(-filters // 16) * 16), np.float32)
    assert native.gemm(cols, _whole_vectors(w.reshape(-1, filters)), full)
    want = full[:, :filters] + b
    if relu:
        want = np.maximum(want, 0.0)
    got = np.full((3, *out_hw, filters), np.nan, np.float32)
    assert native.conv_gemm(x_pad, w, b, conv.strides, out_hw, relu, got)
    np.testing.assert_array_equal(_bits(got.reshape(want.shape)), _bits(want))


def test_the_kernels_run_where_they_should():
    """conv_gemm takes float32 on AVX-512, conv_weight_grad fw·cin 16k, conv_input_grad cin 16k; not the rest."""
    x = np.zeros((2, 6, 6, 3), np.float32)
    out = np.full((2, 4, 4, 16), np.nan, np.float32)
    ran = native.conv_gemm(x, np.ones((3, 3, 3, 16), np.float32), None, (1, 1), (4, 4), False, out)
    assert ran == _avx512() and (not ran or (out == 0).all())
    assert not native.conv_gemm(x.astype(np.float64), np.ones((3, 3, 3, 16)), None, (1, 1), (4, 4), False, out)
    assert not native.conv_gemm(x, np.ones((3, 3, 3, 16), np.float32), None, (1, 1), (5, 4), False, out)
    dwt = np.empty((16, 27), np.float32)
    assert not native.conv_weight_grad(x, (3, 3), (1, 1), (4, 4), np.ones((32, 16), np.float32), dwt)
    x16 = np.ones((2, 6, 6, 16), np.float32)
    dwt = np.full((16, 144), np.nan, np.float32)
    ran = native.conv_weight_grad(x16, (3, 3), (1, 1), (4, 4), np.ones((32, 16), np.float32), dwt)
    assert ran == _avx512() and (not ran or (dwt == 32).all())
    g = native.pool_geometry((2, 6, 6, 16), ((0, 0), (0, 0)), (3, 3), (1, 1), (4, 4))
    dx = np.full((2, 6, 6, 16), np.nan, np.float32)
    ran = native.conv_input_grad(np.ones((2, 4, 4, 16), np.float32), np.ones((16, 144), np.float32), g, dx)
    assert ran == _avx512() and (not ran or (dx[:, 0, 0] == 16).all() and (dx[:, 2, 2] == 16 * 9).all())
    g = native.pool_geometry((2, 6, 6, 3), ((0, 0), (0, 0)), (3, 3), (1, 1), (4, 4))
    assert not native.conv_input_grad(np.ones((2, 4, 4, 16), np.float32), np.ones((16, 27), np.float32), g, x)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_the_chunked_input_gradient_gives_the_im2col_bits(geometry, monkeypatch):
    """conv2d_input_grad_chunked (the fused pool unit's dx) in place against its columns + col2im."""
    from xpnn.layers.padding import pads_2d

    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1 << 13)
    shape, filters, kernel, strides, padding = geometry
    conv = _layer(shape, filters, kernel, strides, padding)
    out, _ = conv.forward(np.zeros((4, *shape), np.float32))
    dout = np.random.default_rng(6).standard_normal(out.shape).astype(np.float32)
    pads = pads_2d(shape[:2], conv.kernel_size, conv.strides, conv.padding)
    results = []
    for implicit in (True, False):
        monkeypatch.setattr(conv_chunks, "IMPLICIT_GEMM", implicit)
        w = conv.params["w"]
        results.append(conv_chunks.conv2d_input_grad_chunked(conv, dout, w, (4, *shape), pads, conv.strides))
    np.testing.assert_array_equal(_bits(results[0]), _bits(results[1]))


@pytest.mark.skipif(not _avx512(), reason="no AVX-512F: the implicit kernels do not run")
def test_a_nan_survives_the_relu_epilogue(monkeypatch):
    """max(0, y) keeps a NaN as numpy.maximum(y, 0.0) does."""
    conv = _layer((6, 6, 3), 16, 3, 1, "same")
    x = np.random.default_rng(2).standard_normal((2, 6, 6, 3)).astype(np.float32)
    x[1, 2, 3, 1] = np.nan
    got, want = (_run(conv, x, True, implicit, monkeypatch)[0] for implicit in (True, False))
    assert np.isnan(got).any()
    np.testing.assert_array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[4], GEOMETRIES[7], MORE_COUT[2]])
def test_threads_1_and_2_give_the_same_bits(geometry, monkeypatch):
    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1 << 13)
    shape, filters, kernel, strides, padding = geometry
    conv = _layer(shape, filters, kernel, strides, padding)
    x = np.random.default_rng(3).standard_normal((9, *shape)).astype(np.float32)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("XPNN_CPU_THREADS", threads)
        results.append(_run(conv, x, True, True, monkeypatch))
    (out1, dx1, g1), (out2, dx2, g2) = results
    assert np.array_equal(out1, out2) and np.array_equal(dx1, dx2)
    assert all(np.array_equal(_bits(g1[k]), _bits(g2[k])) for k in g1)


@pytest.mark.parametrize("cin", [16, 32, 64, 48, 96])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1), (3, 3)])
def test_the_input_gradient_writes_every_cell_with_the_col2im_bits(cin, strides):
    """conv_input_grad zeroes each dx row once for all its channel panels, then adds the taps: every cell written
    (dx starts as NaN, cells no window reaches included: stride 3 with a 3x3 kernel on 11 columns), the bits of
    the columns' GEMM then col2im."""
    if not _avx512():
        pytest.skip("the AVX-512 kernels do not run here")
    n, h, w, cout = 3, 9, 11, 32
    out_hw = (-(-h // strides[0]), -(-w // strides[1]))
    pads = conv_chunks.pads_2d((h, w), (3, 3), strides, "same")
    g = native.pool_geometry((n, h, w, cin), pads, (3, 3), strides, out_hw)
    rng = np.random.default_rng(5)
    grad = rng.standard_normal((n, *out_hw, cout)).astype(np.float32)
    wt = rng.standard_normal((cout, 9 * cin)).astype(np.float32)
    dx = np.full((n, h, w, cin), np.nan, np.float32)
    assert native.conv_input_grad(grad, wt, g, dx)
    dcols = np.empty((grad.size // cout, 9 * cin), np.float32)
    assert native.gemm(grad.reshape(-1, cout), wt, dcols)
    want = np.full_like(dx, np.nan)
    native.col2im(dcols, g, want)
    assert not np.isnan(dx).any()
    np.testing.assert_array_equal(_bits(dx), _bits(want))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(777, 48), (5, 6), (1, 16), (0, 16)])
def test_relu_grad_and_bias_sum_give_numpys_bits(shape, dtype):
    """native_conv.h's relu_grad and column_sum against multiply(dout, out > 0) and sum(axis=0), specials too."""
    rng = np.random.default_rng(7)
    dout, out = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    if dout.size > 8:
        dout.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
        out.flat[:8] = [-1.0, -1.0, 0.0, -2.0, np.nan, 0.0, -0.0, 1.0]
    d = np.empty_like(dout)
    native.relu_grad(dout, out, d)
    view = f"u{d.itemsize}"
    with np.errstate(invalid="ignore"):  # inf · 0
        want = np.multiply(dout, out > 0)
    np.testing.assert_array_equal(d.view(view), want.view(view))
    db = np.empty(shape[1], dtype)
    native.column_sum(d, db)
    np.testing.assert_array_equal(db.view(view), d.sum(axis=0).view(view))


def test_the_avx512_switch_keeps_every_call_on_the_columns(monkeypatch):
    """xpnn_avx512 = 0 (native.avx512_switch) turns the implicit kernels off: each says so and writes nothing."""
    switch = native.avx512_switch()
    monkeypatch.setattr(switch, "value", 0)
    x = np.ones((2, 6, 6, 16), np.float32)
    out = np.full((2, 4, 4, 16), np.nan, np.float32)
    assert not native.conv_runs(x, 16)
    assert not native.conv_gemm(x, np.ones((3, 3, 16, 16), np.float32), None, (1, 1), (4, 4), True, out)
    dw = np.full((144, 16), np.nan, np.float32)
    assert not native.conv_weight_grad(x, (3, 3), (1, 1), (4, 4), np.ones((32, 16), np.float32), dw.T.copy())
    assert not native.conv_weight_grad_taps(x, (3, 3), (1, 1), (4, 4), np.ones((32, 16), np.float32), dw)
    g = native.pool_geometry((2, 6, 6, 16), ((0, 0), (0, 0)), (3, 3), (1, 1), (4, 4))
    assert not native.conv_input_grad(np.ones((2, 4, 4, 16), np.float32), np.ones((16, 144), np.float32), g, x)
    assert np.isnan(out).all() and np.isnan(dw).all() and (x == 1).all()
