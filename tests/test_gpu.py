"""CuPy against NumPy: the same code on both backends, exact in float64 (`pytest -m gpu` on a GPU machine)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import xpnn
from xpnn.reference import reference_model, reference_optimizer


def test_cupy_backend_module_imports_where_cupy_is_installed():
    """The kernels module must import (its kernels compile lazily), even on a machine without a GPU."""
    pytest.importorskip("cupy")
    module = importlib.import_module("xpnn.backends.cupy_backend")
    numpy_twins = importlib.import_module("xpnn.backends.numpy_backend")
    twins = {name for name in dir(numpy_twins) if not name.startswith("_") and callable(getattr(numpy_twins, name))}
    missing = sorted(name for name in twins - {"annotations", "np"} if not hasattr(module, name))
    assert not missing, f"CuPy kernels without a twin: {missing}"


def _pass_on(backend_name: str, dtype: str, x: np.ndarray, y: np.ndarray):
    xpnn.set_backend(backend_name)
    model = reference_model(dtype, seed=5)
    result = model.run_pass(*model._prepare(x, y), xpnn.get_loss("softmax_cross_entropy"), record=True)
    host = xpnn.get_backend().to_host
    return float(result.cost), [host(g) for g in result.grads], [host(o) for o in result.outputs]


def _fit_on(backend_name: str, dtype: str, x: np.ndarray, y: np.ndarray):
    xpnn.set_backend(backend_name)
    model = reference_model(dtype, seed=5)
    history = model.fit(x, y, epochs=2, batch_size=16, optimizer=reference_optimizer(), seed=2, verbose=0)
    return history.history["loss"], model.get_weights()


def _data(n: int):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 64, 64, 3)).astype(np.uint8), rng.integers(0, 6, n)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_cupy_pass_equals_numpy(dtype, rtol):
    x, y = _data(8)
    cpu, gpu = _pass_on("numpy", dtype, x, y), _pass_on("cupy", dtype, x, y)
    assert gpu[0] == pytest.approx(cpu[0], rel=rtol)
    for a, b in zip(gpu[1] + gpu[2], cpu[1] + cpu[2]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-3)])
def test_cupy_training_equals_numpy(dtype, rtol):
    x, y = _data(40)
    (cpu_loss, cpu_w), (gpu_loss, gpu_w) = _fit_on("numpy", dtype, x, y), _fit_on("cupy", dtype, x, y)
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=rtol)
    for a, b in zip(gpu_w, cpu_w):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))
