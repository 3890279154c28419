"""The CuPy path's defects of issue 19, each proven on the CuPy stand-in (tests/cupy_standin.py) or the CPU."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from xpnn.backends import numpy_backend
from xpnn.layers import fused
from xpnn.reference import reference_optimizer


def _one_channel_model(dtype: str = "float64") -> Sequential:
    layers = [Conv2D(4, 3, padding="valid"), ReLU(), MaxPool2D(2, strides=2), Flatten(), Dense(3)]
    return Sequential(layers, dtype=dtype).build((10, 10, 1), seed=3)


# ---- defect 3: grouped_runs must not trust the strides of a size-1 axis ---------------------------------------
@pytest.mark.parametrize("where", ["standin", "numpy-twin"])
def test_one_channel_input_made_with_a_new_axis(where, request, monkeypatch):
    """x[..., None] has a channel stride of 0 yet counts as contiguous: the fused unit must read it right."""
    rng = np.random.default_rng(0)
    images, y = rng.random((6, 10, 10)), rng.integers(0, 3, 6)
    expected = _one_channel_model().predict(np.ascontiguousarray(images[..., None]))
    expected_cost = _one_channel_model().train_on_batch(images[..., None].copy(), y, reference_optimizer())
    if where == "standin":
        request.getfixturevalue("standin")
        backend = xpnn.set_backend("cupy")
    else:
        monkeypatch.setenv("XPNN_NATIVE", "0")
        backend = xpnn.get_backend()
    x = backend.asarray(images)[..., None]
    assert x.strides[3] == 0 and x.flags.c_contiguous
    assert fused.ConvReluPool in {type(u) for u in fused.plan(_one_channel_model().layers)}
    np.testing.assert_allclose(_one_channel_model().predict(x), expected, rtol=1e-12)
    cost = _one_channel_model().train_on_batch(x, backend.asarray(y), reference_optimizer())
    assert cost == pytest.approx(expected_cost, rel=1e-12)


# ---- defect 5: kernels compiled without fused multiply-adds, so they round as their twins ---------------------
def test_every_kernel_is_compiled_without_fused_multiply_adds(standin):
    start = len(standin.kernels_built)
    xpnn.set_backend("cupy")  # imports xpnn.backends.cupy_backend afresh: its kernels are built now
    from xpnn.backends import cupy_backend

    built = [k for k in standin.kernels_built[start:] if k.name.startswith("xpnn_")]
    assert {k.name for k in built} >= {"xpnn_relu_grad", "xpnn_adam_update", "xpnn_sgd_update"}
    for kernel in built:
        assert "--fmad=false" in kernel.options, f"{kernel.name} is compiled with FMA contraction"
    assert cupy_backend.OPTIONS == ("--fmad=false",)


# ---- defect 6: relu_grad is TensorFlow's product, on both twins -------------------------------------------------
SPECIAL = np.array([np.nan, np.inf, -np.inf, -5.0, 5.0, -0.0, 0.0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_grad_propagates_non_finite_gradients_and_signed_zeros(standin, dtype):
    """TF's ReluGrad is `gradients * (features > 0)`: NaN/Inf where the output is 0 give NaN, -5 gives -0."""
    backend = xpnn.set_backend("cupy")
    dout = np.repeat(SPECIAL, 4).astype(dtype)
    out = np.tile(np.array([-1.0, 0.0, 1.0, np.nan]), len(SPECIAL)).astype(dtype)
    with np.errstate(invalid="ignore"):
        twin = numpy_backend.relu_grad(dout, out)
    kernel = backend.to_host(backend.kernels.relu_grad(backend.asarray(dout), backend.asarray(out)))  # checked
    positive = out > 0
    np.testing.assert_array_equal(np.isnan(kernel), np.isnan(dout) | (~positive & np.isinf(dout)))
    np.testing.assert_array_equal(kernel[positive], dout[positive])
    finite_off = ~positive & np.isfinite(dout)
    assert (kernel[finite_off] == 0).all()
    np.testing.assert_array_equal(np.signbit(kernel[finite_off]), np.signbit(dout[finite_off]))
    np.testing.assert_array_equal(np.signbit(kernel) | np.isnan(kernel), np.signbit(twin) | np.isnan(twin))


# ---- defects 8 and 11: every GPU buffer within the chunk budget, and the multi-chunk CuPy path tested ----------
def _wide_one_by_one(dtype: str = "float64") -> Sequential:
    """A 1×1 conv with many filters: tiny im2col rows, a GEMM output 64 times wider (defect 8's case)."""
    layers = [Conv2D(64, 1), ReLU(), MaxPool2D(2), Flatten(), Dense(3)]
    return Sequential(layers, dtype=dtype).build((16, 16, 1), seed=1)


def _cached_bytes(layer) -> int:
    backend = xpnn.get_backend()
    return sum(v.nbytes for k, v in vars(layer).items() if k.startswith("_") and backend.is_array(v))


def _pass(model, x, y):
    p = model.run_pass(*model._prepare(x, y), xpnn.get_loss("softmax_cross_entropy"))
    host = xpnn.get_backend().to_host
    return host(p.logits), [host(g) for g in p.grads]


def test_gpu_buffers_fit_the_chunk_budget_and_chunks_agree(standin, monkeypatch):
    budget = 4 << 20
    monkeypatch.setattr(fused, "GPU_CHUNK_BYTES", budget)
    chunks = []
    real_map = fused.map_chunks
    monkeypatch.setattr(
        fused, "map_chunks", lambda fn, n, chunk, *a, **k: chunks.append((n, chunk)) or real_map(fn, n, chunk, *a, **k)
    )
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((32, 16, 16, 1)), rng.integers(0, 3, 32)
    monkeypatch.setenv("XPNN_NATIVE", "0")
    expected = _pass(_wide_one_by_one(), x, y)
    chunks.clear()
    xpnn.set_backend("cupy")
    model = _wide_one_by_one()
    logits, grads = _pass(model, x, y)
    assert chunks[0][1] < chunks[0][0], chunks  # the forward ran in pieces
    cached = _cached_bytes(model.layers[0])
    assert cached <= budget
    np.testing.assert_allclose(logits, expected[0], rtol=1e-12)
    for a, b in zip(grads, expected[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    model.predict(x[:2])
    assert _cached_bytes(model.layers[0]) <= cached / 4  # 2 images instead of 11 per chunk: the rest is freed


# ---- defect 1: a missing CUDA library fails at backend choice, saying what to install -------------------------
@pytest.mark.parametrize("library", ["NVRTC", "cuBLAS"])
def test_missing_cuda_library_is_named_at_backend_choice(standin, monkeypatch, library):
    def fail(*args):
        raise RuntimeError("CuPy failed to load the library: cannot open shared object file")

    namespace = standin.nvrtc if library == "NVRTC" else standin.device
    name = "getVersion" if library == "NVRTC" else "get_cublas_handle"
    monkeypatch.setattr(namespace, name, fail)
    with pytest.raises(ValueError, match=rf"{library}.*could not be loaded.*cupy-cuda12x\[ctk\].*\.\[cuda12\]"):
        xpnn.set_backend("cupy")


def test_a_kernel_that_does_not_compile_fails_at_backend_choice(standin, monkeypatch):
    def fail(self, *args, **kwargs):
        raise RuntimeError("Failed to find CUDA headers")

    monkeypatch.setattr(standin.ElementwiseKernel, "__call__", fail)
    with pytest.raises(ValueError, match=r"kernel could not be compiled.*CUDA headers.*cupy-cuda12x\[ctk\]"):
        xpnn.set_backend("cupy")


def test_cuda_extras_bring_the_cuda_libraries():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^cuda12 = \["cupy-cuda12x\[ctk\]>=14"', text, re.M)
    assert re.search(r'^cuda13 = \["cupy-cuda13x\[ctk\]>=14"', text, re.M)


# ---- defect 2: NCCL missing is said before any collective; the communicator set-up has a deadline ---------------
class FakeMPI:
    """What NCCLReducer uses of MPIComm; a collective fails the test when NCCL is missing."""

    def __init__(self, timeout: float, allow_collectives: bool = True) -> None:
        import types

        self.world = types.SimpleNamespace(is_root=True, rank=0, size=2)
        self.timeout, self.allow = timeout, allow_collectives

    def bcast_object(self, obj, what):
        assert self.allow, f"a collective ({what}) ran before the NCCL check"
        return obj

    def missing_error(self, what):
        from xpnn.distributed.world import DistributedError

        return DistributedError(f"waited {self.timeout:g} s at {what}: rank 1 did not arrive")


def test_missing_nccl_is_said_before_any_collective(standin):
    from xpnn.distributed.nccl import NCCLReducer

    assert standin.nccl.available is False  # CuPy without libnccl
    with pytest.raises(ValueError, match=r"needs NCCL.*available is False.*\.\[cuda12-dist\]"):
        NCCLReducer(FakeMPI(timeout=1.0, allow_collectives=False))


def test_nccl_communicator_setup_is_bounded_by_the_deadline(standin, monkeypatch):
    import threading

    from xpnn.distributed.nccl import NCCLReducer
    from xpnn.distributed.world import DistributedError

    release = threading.Event()

    class Blocking:  # ncclCommInitRank waiting for a rank that never comes
        def __init__(self, size, uid, rank):
            release.wait(30)

    monkeypatch.setattr(standin.nccl, "available", True, raising=False)
    monkeypatch.setattr(standin.nccl, "get_unique_id", lambda: b"id", raising=False)
    monkeypatch.setattr(standin.nccl, "NcclCommunicator", Blocking, raising=False)
    try:
        with pytest.raises(DistributedError, match="NCCL communicator set-up.*rank 1 did not arrive"):
            NCCLReducer(FakeMPI(timeout=0.2))
    finally:
        release.set()


# ---- defect 10: the GPU benchmark runs without PyTorch (the peer columns are skipped, with a note) -------------
def test_gpu_benchmark_runs_without_torch(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    code = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['bench_gpu.py', '--smoke']; "
        "runpy.run_path('benchmarks/bench_gpu.py', run_name='__main__')"
    )
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XPNN_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "PyTorch is not installed" in done.stdout and "(no peer)" in done.stdout


def test_defect_9_a_model_built_before_init_on_another_gpu_is_refused(standin, monkeypatch):
    """fit(distributed=True) joins the world first; a model whose weights sit on another GPU than the rank's
    (built before init() chose it) is refused with the fix, instead of failing inside a kernel."""
    from xpnn.distributed.parallel import DataParallel
    from xpnn.distributed.world import World
    from xpnn.reference import reference_model

    monkeypatch.setattr(standin, "device_count", 2)
    monkeypatch.setattr(standin, "_current_device", 0)
    xpnn.set_backend("cupy")
    cp = standin.modules()["cupy"]
    model = reference_model("float32", seed=1)  # on GPU 0
    parallel = DataParallel()
    monkeypatch.setattr(parallel, "connect", lambda: World(None, 1, 2, 1, 2))
    cp.cuda.Device(1).use()  # what init() does on rank 1
    with pytest.raises(ValueError, match=r"rank 1: the model's weights are on GPU \[0\] but this rank trains on GPU 1"):
        parallel.check_placement(model)
    cp.cuda.Device(0).use()
    parallel.check_placement(model)  # on its own GPU: fine
