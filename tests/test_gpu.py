"""CuPy against NumPy: the same code on both backends, exact in float64 (`pytest -m gpu` on a GPU machine)."""

from __future__ import annotations

import importlib
import importlib.util

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


@pytest.fixture(autouse=True)
def _numpy_runs_the_twin(monkeypatch):
    """NumPy runs the fused unit's im2col + GEMM twin, the algorithm CuPy runs (native.c sums in another order)."""
    monkeypatch.setenv("XPNN_NATIVE", "0")


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
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-2)])
def test_cupy_training_equals_numpy(dtype, rtol):
    """Two epochs (6 Adam steps): float64 to 1e-10; float32 to 1e-2, since a GEMM summed in another order (one
    chunk on the GPU, cache-sized chunks on the CPU) flips a few float32 max-pool winners and training carries it."""
    x, y = _data(40)
    (cpu_loss, cpu_w), (gpu_loss, gpu_w) = _fit_on("numpy", dtype, x, y), _fit_on("cupy", dtype, x, y)
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=rtol)
    for a, b in zip(gpu_w, cpu_w):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernels_round_as_their_twins_bit_for_bit(dtype):
    """Adam, SGD and relu_grad on 200 seeds: with --fmad=false each kernel rounds exactly as its NumPy twin.

    (With FMA contraction about 1 seed in 20 differed in float64.) Values are drawn far from float32's
    denormals, which CuPy's -ftz=true flushes and NumPy keeps.
    """
    from xpnn.backends import numpy_backend

    backend = xpnn.set_backend("cupy")
    cupy_kernels, host, dev = backend.kernels, backend.to_host, backend.asarray
    for seed in range(200):
        rng = np.random.default_rng(seed)
        w, g, m = (rng.standard_normal(64).astype(dtype) for _ in range(3))
        v = rng.random(64).astype(dtype)
        alpha, b1, b2, eps = 10.0 ** rng.uniform(-4, -2), 0.1, 10.0 ** rng.uniform(-4, -2), 1e-7
        args = (alpha, b1, b2, eps)
        on_device = [dev(a) for a in (w, g, m, v)]
        cupy_kernels.adam_update(*on_device, *args)
        numpy_backend.adam_update(w, g, m, v, *args)
        for a, b in zip(on_device, (w, g, m, v)):
            np.testing.assert_array_equal(host(a), b, err_msg=f"adam_update, seed {seed}")
        w_dev = dev(w)
        cupy_kernels.sgd_update(w_dev, dev(g), alpha)
        numpy_backend.sgd_update(w, g, alpha)
        np.testing.assert_array_equal(host(w_dev), w, err_msg=f"sgd_update, seed {seed}")
        out = rng.standard_normal(64).astype(dtype)
        dx = host(cupy_kernels.relu_grad(dev(g), dev(out)))
        np.testing.assert_array_equal(dx, numpy_backend.relu_grad(g, out), err_msg=f"relu_grad, seed {seed}")
        np.testing.assert_array_equal(np.signbit(dx), np.signbit(numpy_backend.relu_grad(g, out)))


@pytest.mark.gpu
def test_headline_example_runs_on_cupy(capsys):
    """`XPNN_BACKEND=cupy python examples/train.py`, one epoch on the embedded set."""
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_example", Path(__file__).parents[1] / "examples" / "train.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--backend", "cupy", "--embedded", "--epochs", "1"])
    assert xpnn.get_backend().name == "cupy"
    assert "epoch 1/1" in capsys.readouterr().out
