"""native_pool.h (max and average pooling, any window, stride and padding) against the NumPy twins in pool.py.

The native loops promise the twins' bits, not just their values: the same winners (ties and NaN as
numpy.argmax), the same sums in the same order, so every comparison here is exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.backends import native
from xpnn.layers import pool

needs_native = pytest.mark.skipif(not native.built(), reason=f"native kernels {native.status()}")


@pytest.fixture(autouse=True)
def numpy_backend():
    return xpnn.set_backend("numpy")


GEOMETRIES = [
    # input (h, w, c), pool_size, strides, padding
    ((32, 32, 32), (3, 3), (2, 2), "same"),  # AlexNet-style overlapping 3/2, uneven SAME pads
    ((15, 15, 64), (3, 3), (2, 2), "valid"),
    ((13, 11, 3), (2, 3), (1, 2), "same"),  # stride 1 rows: windows overlap by 1 row, by 1 column
    ((17, 16, 5), (4, 2), (3, 1), "same"),
    ((9, 10, 1), (3, 3), (3, 3), "valid"),  # one channel, windows that tile
    ((7, 7, 300), (5, 5), (1, 1), "same"),  # more channels than one native pass (256), pads of 2 on each side
    ((8, 8, 10), (8, 8), (8, 8), "valid"),  # a global pool
    ((6, 9, 4), (2, 2), (3, 3), "valid"),  # stride larger than the window: cells no window holds
    ((11, 13, 48), (3, 3), (2, 2), "same"),  # whole vector blocks and a tail of 16 channels (float32)
    ((12, 10, 16), (2, 2), (2, 2), "valid"),  # one vector of float32 channels: the scalar tail only
    ((21, 19, 64), (3, 2), (2, 1), "same"),  # several blocks, groups of windows side by side, odd sizes
    ((18, 18, 8), (17, 17), (1, 1), "same"),  # 289 cells: int32 winners
]


def both(fn, *args, monkeypatch):
    """fn(*args) on the NumPy twin, then on the native kernels (args[1] is the input)."""
    out = []
    for flag in ("0", "1"):
        monkeypatch.setenv("XPNN_NATIVE", flag)
        assert native.takes(args[1]) == (flag == "1")
        out.append(fn(*args))
    return out


def pool_pass(kind, x, size, strides, padding, dout_seed=2):
    forward, backward = (
        (pool.maxpool_forward, pool.maxpool_backward)
        if kind == "max"
        else (pool.avgpool_forward, pool.avgpool_backward)
    )
    out, cache = forward(x, size, strides, padding)
    dout = np.random.default_rng(dout_seed).standard_normal(out.shape).astype(x.dtype)
    return out, cache, backward(dout, cache)


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@needs_native
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_native_pools_give_the_twins_bits(kind, geometry, dtype, monkeypatch):
    shape, size, strides, padding = geometry
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(dtype)
    twin, fast = both(pool_pass, kind, x, size, strides, padding, monkeypatch=monkeypatch)
    assert_same_bits(fast[0], twin[0])
    assert_same_bits(fast[2], twin[2])
    if kind == "max":
        np.testing.assert_array_equal(fast[1].argmax, twin[1].argmax)


@needs_native
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_ties_nan_and_infinities_as_the_twin(kind, monkeypatch):
    """Rounded values tie often; NaN wins its window (first NaN), -inf everywhere lets cell 0 win, even padding."""
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal((4, 11, 12, 6)))
    x[0, 3, 4, 1] = np.nan
    x[1, 5, 5:7, 2] = np.nan
    x[2, :, :, 3] = -np.inf  # SAME windows with a padded cell 0 and only -inf cells
    x[3, 2, 2, 0] = np.inf
    for size, strides in (((3, 3), (2, 2)), ((2, 4), (1, 3))):
        twin, fast = both(pool_pass, kind, x, size, strides, "same", monkeypatch=monkeypatch)
        np.testing.assert_array_equal(fast[0], twin[0])  # NaN == NaN here
        np.testing.assert_array_equal(fast[2], twin[2])
        if kind == "max":
            np.testing.assert_array_equal(fast[1].argmax, twin[1].argmax)


@needs_native
def test_each_input_gradient_goes_to_its_window_winner_only(monkeypatch):
    """A NaN gradient reaches the winner's cell alone, on both paths (not 0 · NaN over the whole window)."""
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    for flag in ("0", "1"):
        monkeypatch.setenv("XPNN_NATIVE", flag)
        out, cache = pool.maxpool_forward(x, (2, 2), (2, 2), "valid")
        dout = np.ones_like(out)
        dout[0, 0, 0, 0] = np.nan
        dx = pool.maxpool_backward(dout, cache)
        assert np.isnan(dx).sum() == 1 and np.isnan(dx[0, 1, 1, 0])


@needs_native
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_layers_take_strided_input(kind, monkeypatch):
    """A non-contiguous input (a channel slice) gives the contiguous input's result on the native path."""
    x = np.random.default_rng(4).standard_normal((2, 9, 9, 8))[..., ::2]
    monkeypatch.setenv("XPNN_NATIVE", "1")
    a = pool_pass(kind, x, (3, 3), (2, 2), "same")
    b = pool_pass(kind, np.ascontiguousarray(x), (3, 3), (2, 2), "same")
    assert_same_bits(a[0], b[0])
    assert_same_bits(a[2], b[2])


@needs_native
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_a_cache_from_one_path_serves_the_other(kind, monkeypatch):
    x = np.random.default_rng(5).standard_normal((2, 10, 10, 3))
    forward, backward = (
        (pool.maxpool_forward, pool.maxpool_backward)
        if kind == "max"
        else (pool.avgpool_forward, pool.avgpool_backward)
    )
    grads = []
    for first, second in (("1", "0"), ("0", "1")):
        monkeypatch.setenv("XPNN_NATIVE", first)
        out, cache = forward(x, (3, 3), (2, 2), "same")
        monkeypatch.setenv("XPNN_NATIVE", second)
        grads.append(backward(np.ones_like(out), cache))
    assert_same_bits(grads[0], grads[1])


@needs_native
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_results_do_not_depend_on_the_number_of_workers(dtype, monkeypatch):
    monkeypatch.setattr(pool, "PARALLEL_CELLS", 1)  # split every batch over the workers
    x = np.random.default_rng(6).standard_normal((7, 12, 13, 36)).astype(dtype)
    monkeypatch.setenv("XPNN_NATIVE", "1")
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("XPNN_CPU_THREADS", threads)
        results.append([pool_pass(kind, x, (3, 3), (2, 2), "same") for kind in ("max", "avg")])
    for a, b in zip(*results):
        assert_same_bits(a[0], b[0])
        assert_same_bits(a[2], b[2])


@needs_native
def test_a_mismatched_array_is_refused_before_native_code_reads_it():
    g = native.pool_geometry((1, 4, 4, 2), ((0, 0), (0, 0)), (2, 2), (2, 2), (2, 2))
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="native kernel argument argmax"):
        native.max_pool_forward(x, g, np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="native kernel argument x"):
        native.avg_pool_forward(x[:, :3], np.ones((2, 2)), g, np.zeros((1, 2, 2, 2)))


@needs_native
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_avx512_and_generic_max_kernels_agree(geometry, dtype, monkeypatch):
    """native_pool.h's AVX-512 max forward (where the CPU has it) and its generic loops: the same bits."""
    shape, size, strides, padding = geometry
    x = np.round(np.random.default_rng(7).standard_normal((3, *shape)), 1).astype(dtype)  # ties
    monkeypatch.setenv("XPNN_NATIVE", "1")
    switch = native.avx512_switch()
    results = []
    try:
        for on in (1, 0):
            switch.value = on
            results.append(pool_pass("max", x, size, strides, padding))
    finally:
        switch.value = 1
    assert_same_bits(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1].argmax, results[1][1].argmax)
    assert_same_bits(results[0][2], results[1][2])


@needs_native
@pytest.mark.parametrize("size, dtype", [((3, 3), np.uint8), ((16, 16), np.uint8), ((16, 17), np.int32)])
def test_winners_take_the_narrowest_dtype_on_both_paths(size, dtype, monkeypatch):
    x = np.random.default_rng(8).standard_normal((2, 17, 18, 3))
    for flag in ("0", "1"):
        monkeypatch.setenv("XPNN_NATIVE", flag)
        _, cache = pool.maxpool_forward(x, size, (1, 1), "same")
        assert cache.argmax.dtype == dtype


@needs_native
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_zero_max_is_positive_zero_and_its_first_zero_wins(dtype, monkeypatch):
    """-0 and +0 tie: the first of them wins the window, and the max is +0 on both paths (NumPy's maximum
    keeps either zero, so the twin adds +0; the native loops do the same)."""
    rng = np.random.default_rng(9)
    x = -np.abs(rng.standard_normal((2, 7, 8, 33))).astype(dtype)
    x[:, ::2, :, :] = np.where(rng.random((2, 4, 8, 33)) < 0.5, -0.0, 0.0).astype(dtype)
    twin, fast = both(pool_pass, "max", x, (3, 3), (2, 2), "same", monkeypatch=monkeypatch)
    assert_same_bits(fast[0], twin[0])
    zeros = twin[0] == 0
    assert zeros.any() and not np.signbit(twin[0][zeros]).any()
    np.testing.assert_array_equal(fast[1].argmax, twin[1].argmax)
    assert_same_bits(fast[2], twin[2])


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_the_twin_gives_the_same_bits_in_chunks_of_images(kind, monkeypatch):
    """The twin walks a few images at a time (TWIN_CHUNK_BYTES); images are independent, so any chunking
    gives the whole batch's bits."""
    monkeypatch.setenv("XPNN_NATIVE", "0")
    x = np.random.default_rng(10).standard_normal((7, 9, 11, 5)).astype(np.float32)
    results = []
    for chunk_bytes in (1, 3 * 9 * 11 * 5 * 4, 1 << 40):  # one image, three images, the whole batch
        monkeypatch.setattr(pool, "TWIN_CHUNK_BYTES", chunk_bytes)
        results.append(pool_pass(kind, x, (3, 2), (2, 1), "same"))
    for other in results[1:]:
        assert_same_bits(other[0], results[0][0])
        assert_same_bits(other[2], results[0][2])
        if kind == "max":
            np.testing.assert_array_equal(other[1].argmax, results[0][1].argmax)
