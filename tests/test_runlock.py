"""The run-folder lock: a second process is refused with the owner's pid; a killed run reads as interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xpnn.errors import RunInUseError
from xpnn.runlock import RunLock, describe_status, lock_state

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks are Unix")

HOLD = """
import sys, time
from xpnn.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def holder(folder: Path) -> subprocess.Popen:
    """Another process that takes the lock and keeps it until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_the_owners_pid(tmp_path):
    run = tmp_path / "20261130-000000-000000-ab12"
    run.mkdir()
    proc = holder(run)
    try:
        assert lock_state(run) == proc.pid
        with pytest.raises(RunInUseError, match=rf"run 20261130-000000-000000-ab12 is in use by process {proc.pid}"):
            RunLock(run).acquire()
        assert describe_status(run, {"status": "running"}) == "running"
    finally:
        proc.kill()
        proc.wait()
    # killed (SIGKILL): the kernel dropped the lock, so the run is interrupted, not running
    assert proc.returncode == -signal.SIGKILL
    assert lock_state(run) == "free"
    assert describe_status(run, {"status": "running", "epoch": 3}) == "interrupted"
    assert describe_status(run, {"status": "finished"}) == "finished"
    with RunLock(run) as lock:  # and the folder can be taken again
        assert lock.held and lock_state(run) == os.getpid()
    assert lock_state(run) == "free" and (run / ".lock").exists()


def test_one_process_cannot_hold_a_folder_twice_and_release_frees_it(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunInUseError, match=rf"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    first.release()  # twice is harmless
    RunLock(tmp_path).acquire().release()


def test_a_folder_never_locked_is_free_and_a_read_only_folder_can_be_inspected(tmp_path):
    assert lock_state(tmp_path) == "free"
    assert describe_status(tmp_path, {}) == "?"
    RunLock(tmp_path).acquire().release()
    tmp_path.chmod(0o500)
    try:
        assert lock_state(tmp_path) == "free"
    finally:
        tmp_path.chmod(0o700)
