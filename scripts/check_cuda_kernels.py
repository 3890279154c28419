"""Compile every CuPy kernel of xpnn with NVRTC, as CuPy 14 builds it, for float32 and float64 on sm_80 and sm_90.

No GPU is needed: NVRTC is a library. For each kernel this writes the CUDA source CuPy's ElementwiseKernel
generates (CuPy's headers prepended, one CArray per array argument, the CUPY_FOR loop), compiles it with
CuPy's options plus the kernel's own (cubin for `-arch=sm_XX`, as CuPy does), and compiles it once more for
`compute_XX` to read the PTX: a `fma` there, or a float `mul`/`add`/`sub` without `.rn` (ptxas may contract
those into an FMA), means the kernel need not round like its NumPy twin (issue 19, defect 5).

Needs, all from PyPI (no CUDA toolkit):
  - NVRTC: `pip install nvidia-cuda-nvrtc-cu12` (CUDA 12) and/or `pip install "nvidia-cuda-nvrtc>=13"` (CUDA 13);
  - the CUDA headers: `nvidia-cuda-runtime-cu12` / `"nvidia-cuda-runtime>=13"`;
  - CuPy's headers (cupy/_core/include): an installed CuPy, or a CuPy wheel given by --cupy-wheel / XPNN_CUPY_WHEEL
    (`pip download --no-deps "cupy-cuda12x>=14" -d wheels`), or a folder by XPNN_CUPY_INCLUDE.

    python scripts/check_cuda_kernels.py --cupy-wheel wheels/cupy_cuda12x-*.whl

Exit status 0 when every build succeeds without FMAs, 1 otherwise, 2 when a requirement is missing.
The kernels and the arguments xpnn passes them are recorded by a short fit on the CuPy stand-in
(tests/cupy_standin.py); CuPy's `--pch` (a compile-speed option) is left out.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("80", "90")
DTYPES = {"float32": "float", "float64": "double"}
CUPY_HEADERS = ("cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h")


@dataclass(frozen=True)
class Toolchain:
    """One CUDA major version: its NVRTC library and CUDA headers."""

    cuda: int
    nvrtc: Path
    cuda_include: Path


def toolchains() -> list[Toolchain]:
    """The NVRTC wheels installed in this environment (nvidia-cuda-nvrtc-cu12, nvidia-cuda-nvrtc 13)."""
    spec = importlib.util.find_spec("nvidia")
    found = []
    for base in spec.submodule_search_locations if spec else []:
        base = Path(base)
        for cuda, lib, include in (
            (12, base / "cuda_nvrtc/lib/libnvrtc.so.12", base / "cuda_runtime/include"),
            (13, base / "cu13/lib/libnvrtc.so.13", base / "cu13/include"),
        ):
            if lib.exists() and (include / "cuda_fp16.h").exists():
                found.append(Toolchain(cuda, lib, include))
    return found


def cupy_include(wheel: str | None) -> Path | None:
    """CuPy's header folder: XPNN_CUPY_INCLUDE, the headers in a CuPy wheel, or an installed CuPy's."""
    if os.environ.get("XPNN_CUPY_INCLUDE"):
        return Path(os.environ["XPNN_CUPY_INCLUDE"])
    wheel = wheel or os.environ.get("XPNN_CUPY_WHEEL")
    if wheel:
        out = Path(tempfile.mkdtemp(prefix="cupy-include-"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(out, [m for m in z.namelist() if m.startswith("cupy/_core/include/")])
        return out / "cupy/_core/include"
    try:
        spec = importlib.util.find_spec("cupy")  # located, not imported (no GPU needed)
    except ValueError:  # sys.modules holds a `cupy` without a spec: the stand-in
        spec = None
    if spec and spec.origin:
        path = Path(spec.origin).parent / "_core/include"
        if path.exists():
            return path
    return None


def xpnn_kernel_calls(standin=None) -> list[tuple[object, tuple]]:
    """(kernel, argument kinds) for each way xpnn calls its kernels: a short fit per dtype and optimizer on the
    CuPy stand-in (tests/cupy_standin.py, installed here unless given), which records each call's arguments."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import numpy as np

    import xpnn
    from xpnn.reference import reference_model

    if standin is None:
        import cupy_standin as standin

        standin.install()
    xpnn.set_backend("cupy")
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 64, 64, 3)), rng.integers(0, 6, 4)
    for dtype in DTYPES:
        for optimizer in (xpnn.Adam(), xpnn.SGD(0.01)):
            model = reference_model(dtype, seed=0)
            model.fit(x, y, epochs=1, batch_size=4, optimizer=optimizer, verbose=0)
    return sorted(
        ((k, call) for k in standin.kernels_built if k.name.startswith("xpnn_") for call in k.calls),
        key=lambda kc: (kc[0].name, kc[1]),
    )


def kernel_source(kernel, call: tuple) -> str:
    """The CUDA source CuPy 14 generates for `kernel` called with `call`'s arrays and scalars, contiguous arrays
    reduced to 1-d as CuPy does (cupy/_core/_kernel.pyx: _get_elementwise_kernel_code and
    _get_simple_elementwise_kernel_code; _core/core.pyx prepends the headers)."""
    kinds = {name: (kind, DTYPES[dtype]) for name, kind, dtype in call}
    t = DTYPES[call[0][2]]  # every parameter is T in xpnn's kernels
    params, body = [], []
    for (ctype_name, name, raw), const in [(p, True) for p in kernel.in_params] + [
        (p, False) for p in kernel.out_params
    ]:
        kind, c_type = kinds[name]
        prefix = "const " if const else ""
        if kind == "array":
            params.append(f"{prefix}CArray<{c_type}, 1, 1, 1> _raw_{name}")
            if not raw:
                body.append(f"{prefix}{ctype_name} &{name} = _raw_{name}[_ind.get()];")
        else:
            params.append(f"{prefix}{c_type} {name}")
    params.append("CIndexer<1, 1> _ind")
    body.append(kernel.operation)
    operation = "\n".join(body)
    headers = "".join(f"#include <{h}>\n" for h in CUPY_HEADERS)
    return (
        headers
        + f"""
    typedef {t} T;
    {kernel.preamble}
    extern "C" __global__ void {kernel.name}({", ".join(params)}) {{
      ;
      #pragma unroll 1
      CUPY_FOR(i, _ind.size()) {{
        _ind.set(i);
        {operation};
      }}
      ;
    }}
    """
    )


def cupy_options(kernel, include: Path, cuda_include: Path, arch: str) -> list[str]:
    """CuPy 14's NVRTC options (_core/core.pyx assemble_cupy_compiler_options, cuda/compiler.py), in its order."""
    cccl = [f"-I{include}/cupy/_cccl/{part}" for part in ("cub", "thrust", "libcudacxx")]
    return [*cccl, *kernel.options, "--std=c++17", f"-I{include}", f"-I{cuda_include}", "-ftz=true", arch,
            "--device-as-default-execution-space"]  # fmt: skip


class NVRTC:
    """The few NVRTC calls a compile needs, through ctypes."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        self.version = (major.value, minor.value)

    def _check(self, status: int) -> None:
        if status != 0:
            raise RuntimeError(self.lib.nvrtcGetErrorString(status).decode())

    def compile(self, source: str, name: str, options: list[str]) -> tuple[bool, str, bytes]:
        """(ok, log, cubin or PTX)."""
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None)
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            status = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(prog, log))
            if status != 0:
                return False, log.value.decode(errors="replace"), b""
            ptx = any(o.startswith("-arch=compute_") for o in options)
            get_size, get = (
                (self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX)
                if ptx
                else (self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN)
            )
            self._check(get_size(prog, ctypes.byref(size)))
            out = ctypes.create_string_buffer(size.value)
            self._check(get(prog, out))
            return True, log.value.decode(errors="replace"), out.raw
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


# a fused multiply-add, or a float mul/add/sub without a rounding modifier, which ptxas may contract into one
# (`w -= g * lr` is `mul.f64` + `sub.f64` in the PTX and one DFMA in the SASS); --fmad=false writes `.rn` forms
FMA = re.compile(
    rb"\b(?:fma\.r[nzmp]|mad)(?:\.ftz)?(?:\.sat)?\.f(?:32|64)\b|\b(?:mul|add|sub)(?:\.ftz)?(?:\.sat)?\.f(?:32|64)\b"
)


def check(calls: list, include: Path, chains: list[Toolchain], out=sys.stdout) -> list[str]:
    """Compile every kernel call on every toolchain and arch; the problems found (empty when all is well)."""
    problems = []
    for chain in chains:
        nvrtc = NVRTC(chain.nvrtc)
        for kernel, call in calls:
            source = kernel_source(kernel, call)
            dtypes = "/".join(sorted({dtype for _, _, dtype in call}))
            for arch in ARCHS:
                what = (
                    f"CUDA {chain.cuda} (NVRTC {nvrtc.version[0]}.{nvrtc.version[1]}) {kernel.name} {dtypes} sm_{arch}"
                )
                options = cupy_options(kernel, include, chain.cuda_include, f"-arch=sm_{arch}")
                ok, log, cubin = nvrtc.compile(source, kernel.name, options)
                if not ok:
                    problems.append(f"{what}: does not compile:\n{log}")
                    continue
                options = cupy_options(kernel, include, chain.cuda_include, f"-arch=compute_{arch}")
                ok, log, ptx = nvrtc.compile(source, kernel.name, options)
                fmas = FMA.findall(ptx)
                if not ok or fmas:
                    problems.append(
                        f"{what}: {len(fmas)} fused or contractible float op(s) in its PTX: compile with --fmad=false"
                    )
                    continue
                print(f"ok  {what}: {len(cubin)} bytes of cubin, no FMA", file=out)
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cupy-wheel", help="a CuPy wheel to read cupy/_core/include from")
    args = parser.parse_args()
    chains, include = toolchains(), cupy_include(args.cupy_wheel)
    if not chains or include is None:
        need = "NVRTC and the CUDA headers (pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12)"
        print(
            f"check_cuda_kernels: needs {need} and CuPy's headers (--cupy-wheel; see its docstring).", file=sys.stderr
        )
        return 2
    calls = xpnn_kernel_calls()
    problems = check(calls, include, chains)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    builds = len(chains) * len(calls) * len(ARCHS)
    print(f"{builds - len(problems)} of {builds} kernel builds compiled without FMAs.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
