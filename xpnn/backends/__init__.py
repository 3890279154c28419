"""The array module behind every layer: NumPy (CPU) or CuPy (CUDA), chosen once at run time.

`XPNN_BACKEND=numpy|cupy` picks it, or `xpnn.set_backend(...)`. Layer math asks
`get_backend()` for `xp` and never imports numpy or cupy itself. Each backend module
holds the same named functions (its kernels); a CuPy kernel has a NumPy twin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

BACKENDS = ("numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    """An array module (`xp`) and its kernels, plus host/device transfers.

    The role of a Keras 3 backend (`keras.src.backend.numpy` etc.), kept to arrays: no autodiff, no graph."""

    name: str
    xp: ModuleType
    kernels: ModuleType

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Put `x` on this backend (no copy when it is already there with that dtype)."""
        return self.xp.asarray(x, dtype=dtype)

    def to_host(self, x: Any) -> numpy.ndarray:
        """A NumPy copy-or-view of `x`, wherever it lives."""
        if isinstance(x, numpy.ndarray):
            return x
        if hasattr(x, "get"):
            return x.get()
        return numpy.asarray(x)

    def is_array(self, x: Any) -> bool:
        """Whether `x` is an array of this backend."""
        return isinstance(x, self.xp.ndarray)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); call before reading a clock."""
        self.kernels.synchronize()

    def rng(self, seed: int | None) -> Any:
        """A seeded generator that draws on this backend (`xp.random.default_rng`)."""
        return self.xp.random.default_rng(seed)


_active: Backend | None = None


def _numpy_backend() -> Backend:
    from xpnn.backends import numpy_backend
    from xpnn.backends.host_memory import keep_freed_memory

    keep_freed_memory()  # the CPU backend's arrays reuse warm pages step after step (host_memory.py)

    return Backend("numpy", numpy, numpy_backend)


def _cupy_backend() -> Backend:
    try:
        import cupy
    except ImportError as exc:
        raise ValueError(
            "the cupy backend was asked for but CuPy is not installed "
            f'({exc.__class__.__name__}: {exc}). Install it with `pip install -e ".[cuda12]"` '
            "(or `.[cuda13]` for CUDA 13), or use XPNN_BACKEND=numpy."
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver, among others
        raise ValueError(
            f"the cupy backend was asked for but no CUDA device is visible ({exc}). "
            "Run on a machine with an NVIDIA GPU and driver, check CUDA_VISIBLE_DEVICES, "
            "or use XPNN_BACKEND=numpy."
        ) from exc
    if count < 1:
        raise ValueError(
            "the cupy backend was asked for but no CUDA device is visible (0 devices). "
            "Check CUDA_VISIBLE_DEVICES, or use XPNN_BACKEND=numpy."
        )
    from xpnn.backends import cupy_backend

    _probe_cuda_libraries(cupy, cupy_backend)
    return Backend("cupy", cupy, cupy_backend)


def _probe_cuda_libraries(cupy: Any, kernels: ModuleType) -> None:
    """Load NVRTC and cuBLAS and build one kernel now, so that a missing CUDA library fails at backend choice.

    CuPy imports without them and fails only at the first kernel (NVRTC, or the CUDA headers it compiles
    against) or the first matmul (cuBLAS). `cupy-cuda12x[ctk]` (the `cuda12` extra) brings them as wheels.
    """
    try:
        major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # noqa: BLE001 - only the advice depends on it
        major = 12
    steps = (
        ("NVRTC (libnvrtc, CuPy's kernel compiler) could not be loaded", lambda: cupy.cuda.nvrtc.getVersion()),
        ("cuBLAS (libcublas) could not be loaded", lambda: cupy.cuda.device.get_cublas_handle()),
        (
            "a CuPy kernel could not be compiled (NVRTC with the CUDA headers)",
            lambda: kernels.relu_grad(cupy.ones(1, dtype=cupy.float32), cupy.ones(1, dtype=cupy.float32)),
        ),
        ("the device did not finish the probe kernel", lambda: cupy.cuda.get_current_stream().synchronize()),
    )
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - CuPy raises RuntimeError, OSError, CompileException, ...
            raise ValueError(
                f"the cupy backend cannot run: {what} ({type(exc).__name__}: {exc}). The CUDA libraries come as "
                f'wheels: `pip install "cupy-cuda{major}x[ctk]"` (xpnn\'s extra: `pip install -e ".[cuda{major}]"`), '
                "or use XPNN_BACKEND=numpy."
            ) from exc


def make_backend(name: str) -> Backend:
    """Build the backend called `name` ("numpy" or "cupy"), with a clear error if it cannot run."""
    key = str(name).strip().lower()
    if key == "numpy":
        return _numpy_backend()
    if key == "cupy":
        return _cupy_backend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (XPNN_BACKEND or set_backend).")


def set_backend(name: str) -> Backend:
    """Make `name` the active backend for all later work and return it.

    Keras fixes its backend at import (`KERAS_BACKEND`); xpnn may switch before a model is built."""
    global _active
    _active = make_backend(name)
    return _active


def get_backend() -> Backend:
    """The active backend; on first use it comes from XPNN_BACKEND (default "numpy").

    Like `keras.config.backend()` with `KERAS_BACKEND`, but xpnn's backends are array libraries (NumPy, CuPy)."""
    global _active
    if _active is None:
        _active = make_backend(os.environ.get("XPNN_BACKEND", "numpy") or "numpy")
    return _active
