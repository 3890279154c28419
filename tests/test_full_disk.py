"""A full disk while saving: one line naming the file, the old file whole, no temporary file left.

Two ways to fill the disk: `os.write` patched to raise ENOSPC once N bytes of the file are written (any
N), and, when this process may mount, a real 300 KiB tmpfs filled to several levels (each save in a
child process, so a crash inside HDF5 shows as a signal rather than killing the test run).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn.reference import reference_model

ROOT = Path(__file__).resolve().parents[1]


def no_space_after(limit: int, folder: Path):
    """An os.write that writes to files in `folder` until `limit` bytes, then raises ENOSPC."""
    real = os.write
    written = {"n": 0}

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.startswith(str(folder)):
            return real(fd, data)
        room = limit - written["n"]
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(memoryview(data)[:room]))
        written["n"] += n
        return n

    return write


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file a write goes to")
def test_enospc_at_any_byte_of_a_save(tmp_path, monkeypatch):
    path = tmp_path / "model.h5"
    reference_model(seed=1).save(path)
    before = path.read_bytes()
    new = reference_model(seed=2)
    size = len(before)
    for limit in (0, 1, 511, 4096, size // 2, size - 1):
        monkeypatch.setattr(os, "write", no_space_after(limit, tmp_path))
        with pytest.raises(OSError) as e:
            new.save(path)
        monkeypatch.undo()
        message = str(e.value)
        assert e.value.errno == errno.ENOSPC
        assert "\n" not in message and f"no space left on the device while saving {path}" in message
        assert f"the disk holding {tmp_path} has" in message
        assert path.read_bytes() == before, limit
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"], limit
    new.save(path)  # room again: the save goes through
    assert np.array_equal(xpnn.load_model(path).get_weights()[0], new.get_weights()[0])


SAVE = """
import sys, numpy as np
from xpnn.reference import reference_model
try:
    reference_model(seed=int(sys.argv[2])).save(sys.argv[1])
except OSError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def small_tmpfs(tmp_path):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_saving_on_a_nearly_full_tmpfs(small_tmpfs):
    path = small_tmpfs / "model.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", SAVE, str(path), "1"], env=env).returncode == 0
    before = path.read_bytes()
    filler = small_tmpfs / "filler"
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    codes = set()
    for left in (0, 4096, 8192, len(before) // 2, len(before) - 4096):
        filler.write_bytes(b"\0" * max(0, free - left))
        run = subprocess.run([sys.executable, "-c", SAVE, str(path), "2"], env=env, capture_output=True, text=True)
        assert run.returncode in (0, 1), (left, run.returncode, run.stderr)  # a signal would be negative
        codes.add(run.returncode)
        if run.returncode == 1:
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1 and f"no space left on the device while saving {path}" in lines[0], run.stderr
            assert path.read_bytes() == before
        assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "model.h5"], left
        filler.unlink()
    assert 1 in codes  # the disk really was full for some of them
