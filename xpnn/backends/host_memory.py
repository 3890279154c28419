"""Keep freed host memory in the process, so that each training step's arrays reuse warm pages.

glibc's malloc hands a freed block of more than its mmap threshold (128 kB, rising with use to at most 32 MB)
back to the OS, and trims the heap's free top above 128 kB too; the next step's array of the same size then
takes fresh pages, one page fault per 4 kB touched. A CNN step allocates and frees the same few dozen arrays
of up to tens of MB every step, so on the CPU backend that is much of the step: on the 2-core Zen 5 VM of
docs/benchmarks.md the AlexNet-style train step (batch 64) took 22.8-25.0 ms with glibc's defaults and
17.1-17.2 ms with the settings below; VGG-style inference (batch 128) 29.7-40.3 and 23.9-24.1 ms; the BatchNorm
CNN's inference (batch 512) 60.4-61.8 and 38.9-39.1 ms (`benchmarks/profile_units.py`).

The settings: blocks up to 32 MB (glibc's largest threshold) come from the heap, and the heap keeps up to
1 GB of free memory (plus a 256 MB pad per growth) instead of returning it. The process's peak resident memory
is what the largest step needs, as before; memory freed after it stays with the process. PyTorch and
TensorFlow keep theirs the same way (their own CPU allocators). Set XPNN_KEEP_HOST_MEMORY=0 to leave malloc
as it is; other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process (glibc on Linux, unless XPNN_KEEP_HOST_MEMORY=0); whether they hold."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    flag = os.environ.get("XPNN_KEEP_HOST_MEMORY", "1").strip()
    if flag not in ("0", "1"):
        raise ValueError(
            f"XPNN_KEEP_HOST_MEMORY must be 1 (keep freed host memory for the next step) or 0 (glibc's defaults); "
            f"received {flag!r}."
        )
    if flag == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: mallopt's parameters are glibc's
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
