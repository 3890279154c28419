"""Every CuPy kernel compiles with NVRTC as CuPy builds it (CUDA 12 and 13, float32/64, sm_80/sm_90), without FMAs.

Needs the NVRTC and CUDA-runtime wheels and CuPy's headers (see scripts/check_cuda_kernels.py); skips otherwise.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "check_cuda_kernels.py"


def _script():
    spec = importlib.util.spec_from_file_location("check_cuda_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_kernel_compiles_with_nvrtc_as_cupy_builds_it(standin):
    check = _script()
    chains, include = check.toolchains(), check.cupy_include(None)
    if not chains:
        pytest.skip("no NVRTC: pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 (and/or the CUDA 13 ones)")
    if include is None:
        pytest.skip("no CuPy headers: set XPNN_CUPY_WHEEL to a CuPy wheel (pip download --no-deps cupy-cuda12x)")
    calls = check.xpnn_kernel_calls(standin)
    assert {k.name for k, _ in calls} == {"xpnn_relu_grad", "xpnn_adam_update", "xpnn_sgd_update"}
    assert {call[0][2] for _, call in calls} == {"float32", "float64"}
    out = io.StringIO()
    problems = check.check(calls, include, chains, out=out)
    assert not problems, "\n".join(problems)
    assert out.getvalue().count("ok  ") == len(chains) * len(calls) * len(check.ARCHS)
