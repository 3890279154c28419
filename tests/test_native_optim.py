"""native_optim.h (Adam's update in one pass) against its NumPy twin, numpy_backend.adam_update: the same bits.

The C loop must do TF's ApplyAdam operations in NumPy's order with one rounding each (no fused
multiply-add), so every comparison here is exact, over several steps and for float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.backends import native, numpy_backend

needs_native = pytest.mark.skipif(not native.built(), reason=f"native kernels {native.status()}")


def _state(size: int, dtype, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w, g, m = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(size)).astype(dtype) * dtype(1e-3)
    v[: size // 7] = 0  # fresh second moments, as on the first step
    return [w, g, m, v]


def _steps(state: list[np.ndarray], native_pass: bool) -> list[np.ndarray]:
    state = [a.copy() for a in state]
    for t in range(1, 4):
        alpha = 0.009 * float(np.sqrt(1 - 0.999**t)) / (1 - 0.9**t)  # a Python float, as Adam's
        if native_pass:
            assert native.adam_update(*state, alpha, 0.1, 0.001, 1e-8)
        else:
            numpy_backend.adam_update(*state, alpha, 0.1, 0.001, 1e-8)
        state[1] = state[1][::-1].copy()  # a new gradient each step
    return state


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 15, 16, 17, 1000, 100_003])
def test_native_adam_matches_its_twin_bit_for_bit(dtype, size, monkeypatch):
    monkeypatch.setenv("XPNN_NATIVE", "1")
    start = _state(size, dtype)
    twin, fast = _steps(start, False), _steps(start, True)
    for name, a, b in zip("wgmv", twin, fast):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(b, a, err_msg=f"{name} differs from the NumPy twin")
    assert not np.array_equal(fast[0], start[0])  # it did update


@needs_native
def test_native_adam_declines_what_it_cannot_take(monkeypatch):
    monkeypatch.setenv("XPNN_NATIVE", "1")
    w, g, m, v = _state(64, np.float32)
    assert not native.adam_update(w[::2], g[::2], m[::2], v[::2], 0.1, 0.1, 0.001, 1e-8)  # strided views
    assert not native.adam_update(w, g.astype(np.float64), m, v, 0.1, 0.1, 0.001, 1e-8)  # mixed dtypes
    assert not native.adam_update(w.astype(np.float16), g, m, v, 0.1, 0.1, 0.001, 1e-8)
    assert not native.adam_update(w, g, m, v, np.float64(0.1), 0.1, 0.001, 1e-8)  # NumPy would go float64
    monkeypatch.setenv("XPNN_NATIVE", "0")
    assert not native.adam_update(w, g, m, v, 0.1, 0.1, 0.001, 1e-8)


@needs_native
def test_adam_optimizer_takes_the_native_path_with_twin_bits(monkeypatch):
    """A model's Adam steps give the same weights with the kernels on and off."""
    xpnn.set_backend("numpy")
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("XPNN_NATIVE", flag)
        model = xpnn.Sequential([xpnn.Dense(33), xpnn.ReLU(), xpnn.Dense(5)], dtype="float32").build((20,), seed=3)
        rng = np.random.default_rng(1)
        x, y = rng.random((40, 20), dtype=np.float32), rng.integers(0, 5, 40)
        model.fit(x, y, epochs=2, batch_size=8, optimizer=xpnn.Adam(0.01), verbose=0, shuffle=False)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
