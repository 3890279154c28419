"""native.c against its NumPy twin (the fused unit's im2col + GEMM path), unit by unit."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest

import xpnn
from xpnn import Conv2D, MaxPool2D, ReLU, Sequential
from xpnn.backends import native
from xpnn.layers.fused import ConvReluPool, uses_native


def cpu_has_avx512() -> bool:
    """Whether this CPU reports AVX-512F (Linux /proc/cpuinfo; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


needs_native = pytest.mark.skipif(not native.built(), reason=f"native kernels {native.status()}")


@pytest.fixture(autouse=True)
def numpy_backend():
    return xpnn.set_backend("numpy")


def unit(input_shape, filters, kernel, strides, padding, pool, dtype, seed=0, use_bias=True):
    """A built ConvReluPool over random weights and (with use_bias) a non-zero bias."""
    conv = Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias)
    model = Sequential([conv, ReLU(), MaxPool2D(pool)], dtype=dtype).build(input_shape, seed=seed)
    if use_bias:
        conv.params["b"][...] = np.random.default_rng(seed).standard_normal(filters) * 0.1
    assert ConvReluPool.applies(*model.layers)
    return ConvReluPool(*model.layers)


def run(u, x, dout, flag, monkeypatch, need_dx=True):
    monkeypatch.setenv("XPNN_NATIVE", flag)
    assert uses_native(x) == (flag == "1")
    out, cache = u.forward(x)
    dx, grads = u.backward(dout, cache, need_dx=need_dx)
    return out, cache.argmax, dx, grads[0]


GEOMETRIES = [
    # input (h, w, cin), filters, kernel, strides, padding, pool
    ((64, 64, 3), 8, 4, 1, "same", 8),  # the reference network's first unit
    ((8, 8, 8), 16, 2, 1, "same", 4),  # and its second
    ((12, 18, 2), 5, (3, 4), 2, "same", (2, 3)),  # cout not a whole vector, pool width not a multiple of 4
    ((17, 17, 4), 12, 3, 3, "same", (3, 2)),  # stride 3, 12 channels = 3 float64 vectors
    ((13, 14, 3), 9, (2, 3), 1, "valid", (4, 6)),  # VALID, a window row of 4 + 2 cells
    ((10, 10, 1), 1, 1, 1, "same", 5),  # one channel, 1x1 kernel
    ((10, 12, 3), 6, 3, 1, "same", 2),  # 2x2 pools: the twin's backward runs dense (fused.DENSE_BACKWARD_CELLS)
    ((12, 9, 2), 5, 2, 2, "valid", (2, 1)),
]


@needs_native
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_native_equals_the_numpy_twin(geometry, dtype, monkeypatch):
    shape, filters, kernel, strides, padding, pool = geometry
    u = unit(shape, filters, kernel, strides, padding, pool, dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, *shape)).astype(dtype)
    out_shape = u.forward(x)[0].shape
    dout = rng.standard_normal(out_shape).astype(dtype)
    twin = run(u, x, dout, "0", monkeypatch)
    fast = run(u, x, dout, "1", monkeypatch)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_array_equal(fast[1], twin[1])  # the same winners (no near-ties in random data)
    for a, b in [(fast[0], twin[0]), (fast[2], twin[2]), (fast[3]["w"], twin[3]["w"]), (fast[3]["b"], twin[3]["b"])]:
        assert a.dtype == b.dtype == np.dtype(dtype) and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@needs_native
def test_ties_pick_the_same_cell_as_the_numpy_twin(monkeypatch):
    """Flat regions give equal conv outputs in a window: the first cell wins on both paths."""
    u = unit((16, 16, 2), 6, 3, 1, "same", 4, "float64", seed=3)
    x = np.zeros((3, 16, 16, 2))
    x[0, 4:12, 2:9] = 0.5
    x[2, ::3] = 1.0
    dout = np.ones(u.forward(x)[0].shape)
    twin, fast = run(u, x, dout, "0", monkeypatch), run(u, x, dout, "1", monkeypatch)
    np.testing.assert_array_equal(fast[1], twin[1])
    np.testing.assert_array_equal(fast[3]["w"], twin[3]["w"])


@needs_native
def test_a_nan_wins_its_window_as_in_numpy_argmax(monkeypatch):
    """The first NaN conv output of a window wins, as argmax over the unfused conv output picks it.

    (The twin's 1x4 block GEMM multiplies a NaN by the shifted kernel's zeros, so it also marks the
    block's neighbours NaN; xpnn's inputs are checked for NaN, so only a diverged run could see this.)
    """
    from xpnn.layers.conv import conv2d_forward

    u = unit((16, 16, 2), 6, 3, 1, "same", 4, "float64", seed=3)
    x = np.zeros((2, 16, 16, 2))
    x[1, 5, 6, 1] = np.nan
    monkeypatch.setenv("XPNN_NATIVE", "1")
    _, cache = u.forward(x)
    conv = u.layers[0]
    z, _ = conv2d_forward(x, conv.params["w"], conv.params["b"], conv.strides, conv.padding)
    cells = z.reshape(2, 4, 4, 4, 4, 6).transpose(0, 1, 3, 5, 2, 4).reshape(2, 4, 4, 6, 16)
    np.testing.assert_array_equal(cache.argmax, cells.argmax(axis=-1))
    np.testing.assert_array_equal(np.isnan(cache.pooled), np.isnan(cells).any(axis=-1))
    assert np.isnan(cache.pooled).any()


@needs_native
def test_a_conv_without_bias_gets_only_a_kernel_gradient(monkeypatch):
    u = unit((12, 12, 2), 3, 3, 1, "same", 4, "float64", use_bias=False)
    x = np.random.default_rng(5).standard_normal((2, 12, 12, 2))
    dout = np.ones((2, 3, 3, 3))
    twin, fast = run(u, x, dout, "0", monkeypatch), run(u, x, dout, "1", monkeypatch)
    assert set(fast[3]) == set(twin[3]) == {"w"}
    np.testing.assert_allclose(fast[3]["w"], twin[3]["w"], rtol=1e-12)
    np.testing.assert_allclose(fast[0], twin[0], rtol=1e-12)


@needs_native
def test_no_input_gradient_when_none_is_needed(monkeypatch):
    u = unit((64, 64, 3), 8, 4, 1, "same", 8, "float32")
    x = np.random.default_rng(2).random((3, 64, 64, 3), dtype=np.float32)
    dout = np.ones((3, 8, 8, 8), dtype=np.float32)
    _, _, dx, grads = run(u, x, dout, "1", monkeypatch, need_dx=False)
    assert dx is None and set(grads) == {"w", "b"}


def test_native_is_built_where_a_c_compiler_is():
    """`pip install` builds the extension whenever it can; a silent build failure must not go unnoticed."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the NumPy twin runs")
    assert native.built(), f"native kernels {native.status()}; reinstall with `pip install -v -e .` to see why"


def test_native_setting_is_checked(monkeypatch):
    monkeypatch.setenv("XPNN_NATIVE", "yes")
    with pytest.raises(ValueError, match="XPNN_NATIVE must be 0 .* received 'yes'"):
        native.enabled()
    monkeypatch.setenv("XPNN_NATIVE", "0")
    assert not native.enabled() and native.status().startswith(("off", "missing"))


@needs_native
def test_strided_input_gives_the_contiguous_result(monkeypatch):
    """A view (here every image mirrored) is read as its values, not its memory order."""
    monkeypatch.setenv("XPNN_NATIVE", "1")
    u = unit((64, 64, 3), 8, 4, 1, "same", 8, "float64")
    x = np.random.default_rng(4).random((2, 64, 64, 3))
    view = x[:, :, ::-1]
    out, cache = u.forward(view)
    dx, _ = u.backward(np.ones(out.shape), cache)
    out_c, cache_c = u.forward(np.ascontiguousarray(view))
    dx_c, _ = u.backward(np.ones(out.shape), cache_c)
    np.testing.assert_array_equal(out, out_c)
    np.testing.assert_array_equal(dx, dx_c)


@needs_native
def test_a_mismatched_array_is_refused_before_native_code_reads_it():
    x = np.zeros((2, 8, 8, 3), dtype=np.float32)
    w = np.zeros((2, 2, 3, 4), dtype=np.float32)
    g = native.geometry(x.shape, w.shape, ((0, 1), (0, 1)), (1, 1), (4, 4), (2, 2))
    pooled, argmax = np.empty((2, 2, 2, 4), np.float32), np.empty((2, 2, 2, 4), np.int64)
    native.conv_relu_pool_forward(x, native.kernel_lanes(w), g, pooled, argmax)  # the right arrays pass
    expected = r"argument pooled: expected a C-contiguous float32 array of shape \(2, 2, 2, 4\)"
    with pytest.raises(ValueError, match=expected):
        native.conv_relu_pool_forward(x, native.kernel_lanes(w), g, pooled[:1], argmax)
    with pytest.raises(ValueError, match=r"argument x: .*\(contiguous: False\)"):
        native.conv_relu_pool_forward(x[:, :, ::-1], native.kernel_lanes(w), g, pooled, argmax)


AVX512_GEOMETRIES = [g for g in GEOMETRIES if g[3] == 1 and 16 % np.broadcast_to(g[5], 2)[1] == 0] + [
    ((9, 48, 5), 11, (2, 3), 1, "same", (3, 16)),  # 16-lane windows, 2 channel passes, 3 channels in the last
    ((6, 20, 2), 8, 3, 1, "valid", 2),  # a partial last block of lanes
]


@needs_native
@pytest.mark.skipif(not cpu_has_avx512(), reason="this CPU has no AVX-512F: only the generic kernel runs")
@pytest.mark.parametrize("geometry", AVX512_GEOMETRIES)
def test_avx512_forward_gives_the_generic_kernels_bits(geometry, monkeypatch):
    """Same sums in the same order, one fused multiply-add each: the two float32 kernels agree bit for bit."""
    monkeypatch.setenv("XPNN_NATIVE", "1")
    shape, filters, kernel, strides, padding, pool = geometry
    u = unit(shape, filters, kernel, strides, padding, pool, "float32")
    x = np.random.default_rng(6).standard_normal((3, *shape)).astype(np.float32)
    x[0, : shape[0] // 2] = 0.25  # flat rows: ties
    x[1, 1, 2, 0] = np.nan
    switch = native.avx512_switch()
    results = []
    for on in (0, 1):
        switch.value = on
        try:
            out, cache = u.forward(x)
        finally:
            switch.value = 1
        results.append((cache.pooled, cache.argmax))
    (generic_pooled, generic_arg), (fast_pooled, fast_arg) = results
    np.testing.assert_array_equal(fast_arg, generic_arg)
    np.testing.assert_array_equal(fast_pooled, generic_pooled)  # NaN where NaN
    assert np.isnan(fast_pooled).any() and (fast_arg[0] == 0).any()


@needs_native
def test_a_forward_on_one_path_and_its_backward_on_the_other_agree(monkeypatch):
    """XPNN_NATIVE is read per call: either backward takes either forward's cache (same winners, same layout)."""
    u = unit((64, 64, 3), 8, 4, 1, "same", 8, "float64")
    x = np.random.default_rng(8).random((2, 64, 64, 3))[:, :, ::-1]  # strided: the twin keeps it so in its cache
    dout = np.random.default_rng(9).standard_normal((2, 8, 8, 8))
    results = []
    for forward_flag, backward_flag in (("0", "1"), ("1", "0"), ("0", "0")):
        monkeypatch.setenv("XPNN_NATIVE", forward_flag)
        _, cache = u.forward(x)
        monkeypatch.setenv("XPNN_NATIVE", backward_flag)
        results.append(u.backward(dout, cache))
    for dx, grads in results[:2]:
        np.testing.assert_allclose(dx, results[2][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads[0]["w"], results[2][1][0]["w"], rtol=1e-12)


needs_avx512 = pytest.mark.skipif(not (native.built() and cpu_has_avx512()), reason="needs native.c and AVX-512F")


@needs_avx512
@pytest.mark.parametrize("shape", [(37, 29, 64), (100, 288, 32), (13, 7, 16), (50, 800, 80), (6, 5, 48), (64, 30, 64)])
def test_native_gemm_computes_the_product(shape):
    """gemm_f32 (native_gemm.h) against NumPy's matmul, a read plain and transposed; edge rows and 16/32/64
    column panels."""
    m, k, n = shape
    rng = np.random.default_rng(m)
    b = rng.standard_normal((k, n)).astype(np.float32)
    for a in (rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, m)).astype(np.float32).T):
        out = np.full((m, n), np.nan, dtype=np.float32)
        assert native.gemm(a, b, out)
        want = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@needs_avx512
def test_native_gemm_rows_do_not_depend_on_how_they_are_split():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 70)).astype(np.float32), rng.standard_normal((70, 32)).astype(np.float32)
    whole, parts = np.empty((40, 32), np.float32), np.empty((40, 32), np.float32)
    assert native.gemm(a, b, whole)
    for start, stop in ((0, 7), (7, 31), (31, 40)):
        assert native.gemm(a[start:stop], b, parts[start:stop])
    assert np.array_equal(whole, parts)


@needs_native
def test_native_gemm_declines_what_it_does_not_take():
    a, b, out = np.ones((4, 3), np.float32), np.ones((3, 32), np.float32), np.empty((4, 32), np.float32)
    assert not native.gemm(a, np.ones((3, 24), np.float32), np.empty((4, 24), np.float32))  # 24 columns
    assert not native.gemm(a.astype(np.float64), b.astype(np.float64), out.astype(np.float64))
    assert not native.gemm(a, np.asfortranarray(b), out)  # b's rows not contiguous
    assert not native.gemm(a, b, np.empty((4, 33), np.float32)[:, :32])
    switch = native.avx512_switch()
    switch.value = 0
    try:
        assert not native.gemm(a, b, out)
    finally:
        switch.value = 1
