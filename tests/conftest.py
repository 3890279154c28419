"""Shared fixtures: the backend parameterization, float64 gradient checks, and SIGNS discovery."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.data.signs import find_signs

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


def pytest_addoption(parser):
    parser.addoption(
        "--cupy-standin",
        action="store_true",
        help="run the cupy backend on tests/cupy_standin.py (NumPy under CuPy's rules) instead of CuPy and a GPU; "
        "use with -m gpu",
    )


def pytest_configure(config):
    if config.getoption("--cupy-standin"):
        import cupy_standin

        cupy_standin.install()


@pytest.fixture(autouse=True)
def _clear_standin_log(request):
    """Each test starts with an empty record of host synchronisations (when the stand-in is installed)."""
    if request.config.getoption("--cupy-standin"):
        import cupy_standin

        cupy_standin.log.clear()


@pytest.fixture
def standin(monkeypatch):
    """The CuPy stand-in installed as `cupy` for one test (undone after), its log cleared; returns its module."""
    import cupy_standin

    cupy_standin.install(monkeypatch)
    cupy_standin.log.clear()
    yield cupy_standin
    xpnn.set_backend("numpy")


@pytest.fixture(autouse=True)
def _numpy_backend_by_default():
    """Every test starts on NumPy, whatever XPNN_BACKEND says, and leaves it so."""
    xpnn.set_backend("numpy")
    yield
    xpnn.set_backend("numpy")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend that can run here; CuPy cases carry the gpu mark (`pytest -m gpu`)."""
    return xpnn.set_backend(request.param)


@pytest.fixture(scope="session")
def signs_folder():
    folder = find_signs()
    if folder is None:
        pytest.skip("SIGNS not found: set XPNN_DATA to a folder holding signs/ (or place ../shared/datasets/signs)")
    return folder


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of scalar f at float64 x (every element)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def assert_close(actual, expected, rtol=1e-7, atol=1e-9, what=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=what)
