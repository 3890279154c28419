"""xpnn.cpu_threads.matmul: GEMMs in fixed blocks on the CPU workers, against a plain a @ b."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import cpu_threads


@pytest.fixture(autouse=True)
def numpy_backend():
    return xpnn.set_backend("numpy")


@pytest.mark.parametrize("shape", [(300, 70, 50), (40, 90, 700), (2000, 3, 2), (17, 33, 1), (100, 60, 64)])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])  # float32 with 16k columns: native.c's AVX-512 GEMM
def test_blocks_give_the_plain_product(shape, transposed, dtype, monkeypatch):
    monkeypatch.setattr(cpu_threads, "GEMM_BLOCK_MACS", 1 << 10)  # many blocks, rows or columns
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m)).T if transposed else rng.standard_normal((m, k))  # Dense's xᵀ is a view
    a, b = a.astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    got = cpu_threads.matmul(a, b)
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert got.shape == (m, n) and got.dtype == np.dtype(dtype)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_blocks_do_not_depend_on_the_number_of_workers(monkeypatch):
    monkeypatch.setattr(cpu_threads, "GEMM_BLOCK_MACS", 1 << 10)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((200, 64)).astype(np.float32), rng.standard_normal((64, 96)).astype(np.float32)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("XPNN_CPU_THREADS", threads)
        results.append((cpu_threads.matmul(a, b), cpu_threads.matmul(b.T, a.T)))
    assert all(np.array_equal(x, y) for x, y in zip(*results))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (31, 33), (64, 512), (100, 7)])
def test_transposed_weight_operand_is_copied_bit_exactly(shape, dtype, monkeypatch):
    """b = Wᵀ (a Dense input gradient): the native blocked copy is numpy.ascontiguousarray's bits, and the
    product through it matches the plain one."""
    from xpnn.backends import native

    rng = np.random.default_rng(1)
    w = rng.standard_normal(shape).astype(dtype)
    copy = native.transposed_copy(w.T)
    if native.built():
        assert copy is not None and copy.flags.c_contiguous
        np.testing.assert_array_equal(copy, np.ascontiguousarray(w.T))
    if min(shape) > 1:
        assert native.transposed_copy(w) is None  # a C-contiguous W is not a transposed view
    monkeypatch.setenv("XPNN_NATIVE", "0")
    assert native.transposed_copy(w.T) is None
    monkeypatch.setenv("XPNN_NATIVE", "1")
    d = rng.standard_normal((80, shape[1])).astype(dtype)
    want = d.astype(np.float64) @ w.T.astype(np.float64)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(cpu_threads.matmul(d, w.T), want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("m", [64, 80, 512])
def test_product_with_a_transposed_weight_has_the_contiguous_products_bits(m):
    """Few rows take (bᵀ·aᵀ)ᵀ, many take a copy of b; either way each output is the same in-order sum."""
    rng = np.random.default_rng(2)
    d, w = rng.standard_normal((m, 512)).astype(np.float32), rng.standard_normal((512, 512)).astype(np.float32)
    got = cpu_threads.matmul(d, w.T)
    np.testing.assert_array_equal(got, cpu_threads.matmul(d, np.ascontiguousarray(w.T)))
    want = d.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(300, 70, 64), (33, 20, 48), (64, 400, 120), (5, 7, 16)])
@pytest.mark.parametrize("with_bias, relu", [(True, True), (True, False), (False, True)])
def test_bias_and_relu_epilogue_has_the_two_passes_bits(shape, dtype, with_bias, relu):
    """matmul(a, b, bias, relu) (the native GEMM's epilogue where it runs) = a @ b, then += bias, then maximum,
    bit for bit, NaN and zeros included."""
    m, k, n = shape
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    a[0, :] = 0.0  # a row of exact zeros: 0 + (-0.) bias gives the sign NumPy gives
    a[1, 0] = np.nan
    bias = rng.standard_normal(n).astype(dtype) if with_bias else None
    if bias is not None:
        bias[:3] = [-0.0, 0.0, -1.0]
    got = cpu_threads.matmul(a, b, bias=bias, relu=relu)
    want = cpu_threads.matmul(a, b)
    if bias is not None:
        want += bias
    if relu:
        np.maximum(want, 0.0, out=want)
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
