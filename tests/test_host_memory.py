"""xpnn.backends.host_memory: glibc keeps freed host memory for the next step (XPNN_KEEP_HOST_MEMORY)."""

from __future__ import annotations

import platform
import sys

import pytest

from xpnn.backends import host_memory


def _glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


FAULTS = """
import resource, numpy as np, xpnn
xpnn.set_backend("numpy")
def step():
    arrays = [np.ones(2 << 20, dtype=np.float32) for _ in range(6)]  # six 8 MB arrays alive at once, then freed
    del arrays
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

@pytest.mark.skipif(not _glibc(), reason="mallopt's settings are glibc's")
def test_a_steps_array_reuses_warm_pages(monkeypatch):
    """With the settings a step's six 8 MB arrays, freed and made again, touch no fresh page; with glibc's
    defaults the heap's free top is trimmed after each step and a third of their 12288 pages fault in again."""
    import os
    import subprocess

    faults = {}
    for flag in ("1", "0"):
        env = {**os.environ, "XPNN_KEEP_HOST_MEMORY": flag}
        out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
        faults[flag] = int(out.stdout.split()[-1])
    assert faults["1"] < 100 < 1000 < faults["0"], faults


def test_zero_leaves_malloc_alone_and_other_values_are_refused(monkeypatch):
    monkeypatch.setenv("XPNN_KEEP_HOST_MEMORY", "0")
    assert host_memory._apply() is False
    monkeypatch.setenv("XPNN_KEEP_HOST_MEMORY", "yes")
    with pytest.raises(ValueError, match="XPNN_KEEP_HOST_MEMORY must be 1"):
        host_memory._apply()


def test_the_numpy_backend_applies_them_once(monkeypatch):
    import xpnn

    xpnn.set_backend("numpy")
    assert host_memory._applied is not None  # decided when the backend was made
    calls = []
    monkeypatch.setattr(host_memory, "_apply", lambda: calls.append(1) or True)
    xpnn.set_backend("numpy")
    assert calls == []  # already decided for this process
